"""Spec blocks with object and boolean fields, conditional credentials (``Credential.unless``),
and what the oauth2 block asks for in each of its modes (issue 18)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tokensync.providers.base import Proofs, ServiceAccountRef
from tokensync.providers.oauth2 import SPEC
from tokensync.providers.oauth2.spec import proofs
from tokensync.providers.spec import Credential, Field, SpecBlock

# --- Field: the object and boolean kinds ------------------------------------------------


def test_an_object_field_lists_its_properties_and_the_required_ones() -> None:
    field = Field(
        "ref",
        kind="object",
        description="a reference",
        properties=(
            Field("name", min_length=1, max_length=253),
            Field("mode", enum=("a", "b"), default="a"),
            Field("flag", kind="boolean"),
        ),
        required=("name",),
    )
    assert field.schema() == {
        "type": "object",
        "description": "a reference",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 253},
            "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
            "flag": {"type": "boolean"},
        },
    }


def test_an_object_without_required_fields_has_no_required_list() -> None:
    schema = Field("ref", kind="object", properties=(Field("name"),)).schema()
    assert "required" not in schema
    assert schema["properties"] == {"name": {"type": "string"}}


def test_an_object_is_not_a_string_map() -> None:
    # A string-map takes any key (additionalProperties); an object only its properties.
    obj = Field("ref", kind="object", properties=(Field("name"),)).schema()
    string_map = Field("params", kind="string-map", max_properties=4).schema()
    assert "additionalProperties" not in obj
    assert "properties" not in string_map
    assert string_map["additionalProperties"] == {"type": "string"}


def test_a_boolean_field_is_typed_boolean() -> None:
    assert Field("revoke", kind="boolean", description="d").schema() == {
        "type": "boolean",
        "description": "d",
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "boolean", "enum": ("true",)}, "only a string field takes an enum"),
        ({"kind": "object", "enum": ("a",)}, "only a string field takes an enum"),
        ({"enum": ("a", "b"), "default": "c"}, "default 'c' is not in its enum"),
        ({"kind": "object", "max_properties": 3}, "only a string-map takes max_properties"),
        ({"properties": (Field("name"),)}, "only an object takes properties"),
        ({"kind": "string-map", "properties": (Field("name"),)}, "only an object takes"),
        ({"kind": "boolean", "required": ("name",)}, "only an object takes properties"),
        (
            {"kind": "object", "properties": (Field("name"),), "required": ("name", "other")},
            "required ['other'] are not its properties",
        ),
        ({"kind": "object", "required": ("name",)}, "required ['name'] are not its properties"),
    ],
)
def test_a_field_declared_wrong_is_refused_at_once(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Field("f", **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "object", "properties": (Field("name"),), "required": ("name",)},
        {"kind": "object"},
        {"kind": "boolean"},
        {"enum": ("a", "b"), "default": "b"},
        {"kind": "string-map", "max_properties": 3},
    ],
)
def test_a_field_declared_right_is_accepted(kwargs: dict[str, Any]) -> None:
    Field("f", **kwargs)


# --- Credential.unless --------------------------------------------------------------------

BLOCK = SpecBlock(
    "test block",
    fields=(
        Field("grant", enum=("plain", "exchange"), default="plain"),
        Field("source", enum=("secret", "account"), default="secret"),
    ),
    credentials=(
        Credential("id"),
        Credential(
            "subject",
            note="unless source account",
            when=("grant", ("exchange",)),
            unless=("source", ("account",)),
        ),
        Credential("fallback", unless=("source", ("account",))),
    ),
)


@pytest.mark.parametrize(
    ("spec", "keys"),
    [
        ({}, ("id", "fallback")),
        ({"grant": "plain"}, ("id", "fallback")),
        ({"grant": "exchange"}, ("id", "subject", "fallback")),
        ({"grant": "exchange", "source": "secret"}, ("id", "subject", "fallback")),
        # unless wins over when
        ({"grant": "exchange", "source": "account"}, ("id",)),
        ({"grant": "plain", "source": "account"}, ("id",)),
        # absent, null and empty read as the default (secret): the key is needed
        ({"grant": "exchange", "source": None}, ("id", "subject", "fallback")),
        ({"grant": "exchange", "source": ""}, ("id", "subject", "fallback")),
    ],
)
def test_unless_drops_a_key_only_for_its_values(
    spec: dict[str, Any], keys: tuple[str, ...]
) -> None:
    assert BLOCK.required_credentials(spec) == keys


def test_every_key_some_spec_needs_includes_the_conditional_ones() -> None:
    assert BLOCK.credential_keys() == ("id", "subject", "fallback")


def test_the_description_of_a_conditional_key_carries_its_note_and_its_condition() -> None:
    assert BLOCK.describe_credentials() == (
        "id; subject (unless source account) (grant exchange); fallback"
    )


@pytest.mark.parametrize(
    ("condition", "error"),
    [
        (("source", ("nobody",)), ValueError),  # not a value of the field's enum
        (("nothing", ("account",)), KeyError),  # not a field of the block
    ],
)
def test_an_unless_naming_what_the_block_lacks_is_refused(
    condition: tuple[str, tuple[str, ...]], error: type[Exception]
) -> None:
    with pytest.raises(error):
        SpecBlock(
            "bad",
            fields=(Field("source", enum=("secret", "account")),),
            credentials=(Credential("subject", unless=condition),),
        )


def test_the_oauth2_description_says_when_subject_token_is_not_needed() -> None:
    described = SPEC.describe_credentials()
    subject = next(part for part in described.split(";") if "subjectToken" in part)
    assert "subjectTokenSource serviceAccount" in subject
    assert "token_exchange" in subject
    assert "subjectToken" in SPEC.schema()["description"]


# --- oauth2: the keys each mode reads from the credentials Secret ---------------------------

# What each client authentication reads from the credentials Secret...
CLIENT_KEYS = {
    "client_secret_basic": ("clientId", "clientSecret"),
    "client_secret_post": ("clientId", "clientSecret"),
    "private_key_jwt": ("clientId", "privateKey"),
    "none": ("clientId",),
    "service_account": (),
    "tls_client_auth": (),
}
# ... and each grant, by where its subject token comes from.
GRANT_KEYS = {
    ("client_credentials", "credentials"): (),
    ("client_credentials", "serviceAccount"): (),
    ("password", "credentials"): ("username", "password"),
    ("password", "serviceAccount"): ("username", "password"),
    ("token_exchange", "credentials"): ("subjectToken",),
    ("token_exchange", "serviceAccount"): (),
}
MODES = list(itertools.product(CLIENT_KEYS, ("client_credentials", "password", "token_exchange")))


@pytest.mark.parametrize(("client_auth", "grant"), MODES)
@pytest.mark.parametrize("source", ["credentials", "serviceAccount", None])
def test_oauth2_reads_exactly_the_keys_its_mode_needs(
    client_auth: str, grant: str, source: str | None
) -> None:
    spec: dict[str, Any] = {"tokenUrl": "https://idp.example/token", "clientAuth": client_auth}
    spec["grantType"] = grant
    if source is not None:
        spec["subjectTokenSource"] = source
    expected = CLIENT_KEYS[client_auth] + GRANT_KEYS[(grant, source or "credentials")]
    assert SPEC.required_credentials(spec) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, ("clientId", "clientSecret")),  # the defaults: client_secret_basic, client_credentials
        ({"clientAuth": "", "grantType": ""}, ("clientId", "clientSecret")),
        ({"clientAuth": None}, ("clientId", "clientSecret")),
    ],
)
def test_oauth2_defaults_read_a_client_secret(
    spec: dict[str, Any], expected: tuple[str, ...]
) -> None:
    assert SPEC.required_credentials(spec) == expected


def test_no_mode_needs_a_credentials_secret_only_where_the_design_says_so() -> None:
    keyless = {
        (client_auth, grant, source)
        for client_auth, grant in MODES
        for source in ("credentials", "serviceAccount")
        if not SPEC.required_credentials(
            {"clientAuth": client_auth, "grantType": grant, "subjectTokenSource": source}
        )
    }
    # The modes valid under the CRD's rules that need no credentials Secret at all.
    valid = {
        (auth, grant, source)
        for auth, grant, source in keyless
        if source == "credentials" or grant == "token_exchange"
    }
    assert valid == {
        ("service_account", "client_credentials", "credentials"),
        ("tls_client_auth", "client_credentials", "credentials"),
        ("service_account", "token_exchange", "serviceAccount"),
        ("tls_client_auth", "token_exchange", "serviceAccount"),
    }


# --- oauth2: what the operator obtains for a mint -----------------------------------------

ACCOUNT = {"name": "idp-client", "audience": "https://idp.example"}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, Proofs()),
        ({"clientAuth": "client_secret_basic"}, Proofs()),
        ({"clientAuth": "client_secret_post"}, Proofs()),
        ({"clientAuth": "private_key_jwt"}, Proofs()),
        ({"clientAuth": "none"}, Proofs()),
        (
            {"clientAuth": "service_account", "serviceAccountRef": ACCOUNT},
            Proofs(service_account=ServiceAccountRef("idp-client", "https://idp.example")),
        ),
        (
            {"clientAuth": "tls_client_auth", "tlsSecretRef": {"name": "client-tls"}},
            Proofs(tls_secret="client-tls"),
        ),
        (
            {
                "grantType": "token_exchange",
                "subjectTokenSource": "serviceAccount",
                "serviceAccountRef": ACCOUNT,
            },
            Proofs(service_account=ServiceAccountRef("idp-client", "https://idp.example")),
        ),
        (
            {
                "clientAuth": "tls_client_auth",
                "tlsSecretRef": {"name": "client-tls"},
                "grantType": "token_exchange",
                "subjectTokenSource": "serviceAccount",
                "serviceAccountRef": ACCOUNT,
            },
            Proofs(
                service_account=ServiceAccountRef("idp-client", "https://idp.example"),
                tls_secret="client-tls",
            ),
        ),
        (
            {
                "clientAuth": "service_account",
                "grantType": "token_exchange",
                "subjectTokenSource": "serviceAccount",
                "serviceAccountRef": ACCOUNT,
            },
            Proofs(service_account=ServiceAccountRef("idp-client", "https://idp.example")),
        ),
        # A reference a mode does not use is not followed (the CRD refuses it anyway).
        ({"clientAuth": "client_secret_basic", "serviceAccountRef": ACCOUNT}, Proofs()),
        ({"grantType": "token_exchange", "serviceAccountRef": ACCOUNT}, Proofs()),
        (
            {"clientAuth": "service_account", "tlsSecretRef": {"name": "x"}},
            Proofs(service_account=ServiceAccountRef("", "")),
        ),
        # A mode without its reference (a manifest the API server never saw): empty names,
        # which MintInputs refuses with InvalidSpec before any request.
        ({"clientAuth": "service_account"}, Proofs(service_account=ServiceAccountRef("", ""))),
        ({"clientAuth": "tls_client_auth"}, Proofs(tls_secret="")),
    ],
)
def test_oauth2_proofs_follow_the_mode(spec: dict[str, Any], expected: Proofs) -> None:
    assert proofs(spec) == expected
