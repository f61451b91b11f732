"""What callers hand the templating and get back: the spec, the values, the result, the error."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class TemplateError(Exception):
    """A template that cannot be used; ``message`` names where and what, never a value."""

    def __init__(self, where: str, what: str, line: int | None = None) -> None:
        self.where = where
        self.what = what
        self.line = line
        self.message = f"{where}: line {line}: {what}" if line else f"{where}: {what}"
        super().__init__(self.message)


@dataclass(frozen=True)
class TemplateSpec:
    data: Mapping[str, str]
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    credential_keys: tuple[str, ...]

    @classmethod
    def parse(cls, template: Mapping[str, Any] | None) -> TemplateSpec | None:
        """From spec.target.template; None when it is absent or names nothing to render."""
        if template is None:
            return None
        if not isinstance(template, Mapping):
            raise TemplateError("spec.target.template", "must be an object")
        sections = {
            section: _string_map(section, template.get(section))
            for section in ("data", "labels", "annotations")
        }
        if not any(sections.values()):
            return None
        keys = template.get("credentialKeys") or []
        if not isinstance(keys, list | tuple) or not all(isinstance(k, str) for k in keys):
            raise TemplateError("spec.target.template.credentialKeys", "must be a list of strings")
        return cls(
            data=sections["data"],
            labels=sections["labels"],
            annotations=sections["annotations"],
            credential_keys=tuple(dict.fromkeys(keys)),
        )


def _string_map(section: str, value: object) -> dict[str, str]:
    if value is None:
        return {}
    where = f"spec.target.template.{section}"
    if not isinstance(value, Mapping):
        raise TemplateError(where, "must be a map of strings")
    for key, source in value.items():
        if not isinstance(key, str) or not isinstance(source, str):
            raise TemplateError(where, "must be a map of strings")
    return dict(value)


# Every field holds a secret or says something about one: none shows in a repr.
@dataclass(frozen=True)
class RenderInput:
    token: str = field(repr=False)
    expires_at: datetime | None = field(repr=False)
    minted_at: datetime = field(repr=False)
    token_type: str | None = field(repr=False)
    scope: str | None = field(repr=False)
    others: Mapping[str, str] = field(repr=False)
    credentials: Mapping[str, str] = field(repr=False)


@dataclass(frozen=True)
class Rendered:
    # Labels and annotations cannot hold a secret (no template for them can name one).
    data: dict[str, str] = field(repr=False)
    labels: dict[str, str]
    annotations: dict[str, str]
