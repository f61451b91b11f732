"""A provider's spec block, declared once: fields, defaults, rules and credentials keys.

Each provider class declares its ``spec.provider.<name>`` block as ``spec:
ClassVar[SpecBlock]``. From that one declaration come the block's schema in the CRD
(``python -m tokensync_dev.crdgen``), every default the provider's code applies
(``SpecBlock.value``) and the credentials keys a spec needs (``required_credentials``).
Pure data: nothing here talks to Kubernetes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["string", "integer", "boolean", "string-map", "object"]
Schema = dict[str, Any]


@dataclass(frozen=True)
class Rule:
    """A CEL rule the API server checks, and the message it refuses an object with."""

    rule: str
    message: str

    def schema(self) -> Schema:
        return {"rule": self.rule, "message": self.message}


@dataclass(frozen=True)
class Field:
    """One field of a block.

    ``default`` is what the code assumes when the field is absent, and what the API server
    fills in. With ``default_in_crd=False`` only the code assumes it (the description says
    so): for a default the API server must not write into every stored object.
    ``max_length`` bounds each value of a string-map.
    """

    name: str
    kind: Kind = "string"
    description: str | None = None
    enum: tuple[str, ...] = ()
    default: str | int | None = None
    default_in_crd: bool = True
    min_length: int | None = None
    max_length: int | None = None
    max_properties: int | None = None
    pattern: str | None = None
    rules: tuple[Rule, ...] = ()
    # An object's own fields, and which of them it must have.
    properties: tuple[Field, ...] = ()
    required: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.enum and self.kind != "string":
            raise ValueError(f"{self.name}: only a string field takes an enum")
        if self.enum and self.default is not None and self.default not in self.enum:
            raise ValueError(f"{self.name}: default {self.default!r} is not in its enum")
        if self.max_properties is not None and self.kind != "string-map":
            raise ValueError(f"{self.name}: only a string-map takes max_properties")
        if (self.properties or self.required) and self.kind != "object":
            raise ValueError(f"{self.name}: only an object takes properties")
        unknown = set(self.required) - {field.name for field in self.properties}
        if unknown:
            raise ValueError(f"{self.name}: required {sorted(unknown)} are not its properties")

    def schema(self) -> Schema:
        description = self.description
        if self.default is not None and not self.default_in_crd:
            description = "; ".join(filter(None, (description, f"default {self.default}")))
        kind = "object" if self.kind in ("string-map", "object") else self.kind
        schema: Schema = {"type": kind}
        if description:
            schema["description"] = description
        if self.enum:
            schema["enum"] = list(self.enum)
        if self.default is not None and self.default_in_crd:
            schema["default"] = self.default
        if self.min_length is not None:
            schema["minLength"] = self.min_length
        if self.kind == "string-map":
            if self.max_properties is not None:
                schema["maxProperties"] = self.max_properties
            values: Schema = {"type": "string"}
            if self.max_length is not None:
                values["maxLength"] = self.max_length
            schema["additionalProperties"] = values
        elif self.kind == "object":
            if self.required:
                schema["required"] = list(self.required)
            schema["properties"] = {field.name: field.schema() for field in self.properties}
        elif self.max_length is not None:
            schema["maxLength"] = self.max_length
        if self.pattern is not None:
            schema["pattern"] = self.pattern
        if self.rules:
            schema["x-kubernetes-validations"] = [rule.schema() for rule in self.rules]
        return schema


URL_RULE = Rule(
    r"self.matches('^https?://[^/?#\\s]+(/[^?#\\s]*)?$')",
    "must be an absolute http(s) URL without query or fragment",
)


def endpoint_url(name: str, what: str, hosts: str = "its host") -> Field:
    """A field naming an endpoint: every one is bounded, checked and allowlisted alike."""
    description = f"{what} Followed only when the operator's --allowed-hosts permits {hosts}."
    return Field(name, description=description, max_length=2048, rules=(URL_RULE,))


# What every provider with an official endpoint accepts (docs/providers.md).
TOKEN_URL = endpoint_url("tokenUrl", "Override of the official endpoint.")


@dataclass(frozen=True)
class Credential:
    """A key of the credentials Secret; with ``when=(field, values)``, needed only then."""

    key: str
    note: str | None = None
    when: tuple[str, tuple[str, ...]] | None = None
    # Not needed when this field has one of these values (checked after ``when``).
    unless: tuple[str, tuple[str, ...]] | None = None

    def label(self, quote: str = "") -> str:
        return f"{quote}{self.key}{quote}" + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class SpecBlock:
    """A provider's block: what the CRD says about it and what its code reads from it."""

    description: str
    fields: tuple[Field, ...]
    credentials: tuple[Credential, ...]
    rules: tuple[Rule, ...] = ()

    def __post_init__(self) -> None:
        names = [field.name for field in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"a field is declared twice: {names}")
        for credential in self.credentials:
            for condition in (credential.when, credential.unless):
                if condition is not None:
                    field, values = condition
                    unknown = set(values) - set(self.field(field).enum)
                    if unknown:
                        raise ValueError(
                            f"{credential.key}: {field} has no value {sorted(unknown)}"
                        )

    def field(self, name: str) -> Field:
        for field in self.fields:
            if field.name == name:
                return field
        raise KeyError(f"no field {name!r} is declared")

    def value(self, spec: Mapping[str, Any], name: str) -> Any:
        """The spec's value of a declared field, or its default where the spec has none
        (absent, null or empty: the API server refuses an empty value where a default
        exists, and ``tokensync mint`` reads manifests the API server never saw)."""
        value, default = spec.get(name), self.field(name).default
        return default if value is None or (value == "" and default is not None) else value

    def _holds(self, spec: Mapping[str, Any], condition: tuple[str, tuple[str, ...]]) -> bool:
        return self.value(spec, condition[0]) in condition[1]

    def required_credentials(self, spec: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(
            credential.key
            for credential in self.credentials
            if (credential.when is None or self._holds(spec, credential.when))
            and (credential.unless is None or not self._holds(spec, credential.unless))
        )

    def credential_keys(self) -> tuple[str, ...]:
        """Every key some spec of this block needs."""
        return tuple(dict.fromkeys(credential.key for credential in self.credentials))

    def describe_credentials(self, quote: str = "") -> str:
        """``username, password``; conditional keys with their condition, ``;``-separated."""
        groups: list[tuple[tuple[str, tuple[str, ...]] | None, list[str]]] = []
        for credential in self.credentials:
            if not groups or groups[-1][0] != credential.when:
                groups.append((credential.when, []))
            groups[-1][1].append(credential.label(quote))
        parts = []
        for when, labels in groups:
            condition = ""
            if when is not None:
                values = " or ".join(f"{quote}{value}{quote}" for value in when[1])
                condition = f" ({quote}{when[0]}{quote} {values})"
            parts.append(", ".join(labels) + condition)
        return "; ".join(parts)

    def schema(self) -> Schema:
        count = len(self.credential_keys())
        schema: Schema = {
            "type": "object",
            "description": f"{self.description} Credentials {'key' if count == 1 else 'keys'} "
            f"{self.describe_credentials()}.",
        }
        if self.rules:
            schema["x-kubernetes-validations"] = [rule.schema() for rule in self.rules]
        schema["properties"] = {field.name: field.schema() for field in self.fields}
        return schema
