"""Biotz at the HTTP level against a Keycloak-shaped fake: request, id_token, refresh, errors."""

from __future__ import annotations

from collections.abc import Iterator

import jwt
import pytest

from fakes.keycloak import REALM_TOKEN_PATH, FakeKeycloak
from providers.conftest import HttpFactory, mint_request
from tokensync.providers import base
from tokensync.providers.biotz import OFFICIAL_TOKEN_URL
from tokensync.providers.registry import PROVIDERS

DEVICE = "7fc1bc71-b90f-49e2-8758-54cf1bfb3dc9@devices.data-ingestion.biotz.io"
BIOTZ = PROVIDERS.get("biotz")


@pytest.fixture
def keycloak() -> Iterator[FakeKeycloak]:
    with FakeKeycloak() as server:
        server.add_user(DEVICE, "device-password")
        yield server


def spec(keycloak: FakeKeycloak, **extra: str) -> dict[str, str]:
    return {"tokenUrl": keycloak.token_url, **extra}


CREDS = {"username": DEVICE, "password": "device-password"}


def test_official_endpoint_is_the_realm_token_url() -> None:
    assert OFFICIAL_TOKEN_URL == "https://auth.biotz.io" + REALM_TOKEN_PATH


async def test_password_grant_on_the_wire_and_id_token_by_default(
    keycloak: FakeKeycloak, http_for: HttpFactory
) -> None:
    http = http_for(keycloak.host)
    token = await BIOTZ.mint(mint_request(http, spec(keycloak), CREDS))
    wire = keycloak.requests[-1]
    assert (wire.method, wire.path) == ("POST", REALM_TOKEN_PATH)
    assert wire.content_type == "application/x-www-form-urlencoded"
    assert wire.form == {
        "grant_type": "password",
        "client_id": "biotz-platform-devices",
        "scope": "openid",
        "username": DEVICE,
        "password": "device-password",
    }
    assert "authorization" not in wire.headers  # a public client: no secret
    id_tokens = [i.value for i in keycloak.issued_to(DEVICE) if i.grant == "id_token"]
    assert token.value == id_tokens[-1]
    assert jwt.decode(token.value, options={"verify_signature": False})["typ"] == "ID"
    assert token.state and token.state["refresh_token"]
    assert token.expires_at is not None


async def test_token_field_access_token(keycloak: FakeKeycloak, http_for: HttpFactory) -> None:
    http = http_for(keycloak.host)
    token = await BIOTZ.mint(mint_request(http, spec(keycloak, tokenField="access_token"), CREDS))
    access = [i.value for i in keycloak.issued_to(DEVICE) if i.grant == "password"]
    assert token.value == access[-1]


async def test_renewals_use_the_newest_refresh_token(
    keycloak: FakeKeycloak, http_for: HttpFactory
) -> None:
    http = http_for(keycloak.host)
    token = await BIOTZ.mint(mint_request(http, spec(keycloak), CREDS))
    for _ in range(3):
        previous = token.state
        token = await BIOTZ.mint(
            mint_request(http, spec(keycloak), CREDS, state=dict(previous or {}))
        )
        assert token.state and token.state["refresh_token"] != (previous or {})["refresh_token"]
        assert keycloak.requests[-1].form["grant_type"] == "refresh_token"
        assert "password" not in keycloak.requests[-1].form
    assert keycloak.grants(DEVICE) == [
        "password",
        "refresh_token",
        "refresh_token",
        "refresh_token",
    ]


@pytest.mark.parametrize("spoil", ["stale", "session-ended", "garbage"])
async def test_rejected_refresh_token_falls_back_to_one_password_grant(
    keycloak: FakeKeycloak, http_for: HttpFactory, spoil: str
) -> None:
    http = http_for(keycloak.host)
    first = await BIOTZ.mint(mint_request(http, spec(keycloak), CREDS))
    state = dict(first.state or {})
    if spoil == "stale":
        await BIOTZ.mint(mint_request(http, spec(keycloak), CREDS, state=state))  # rotates
    elif spoil == "session-ended":
        keycloak.end_sessions(DEVICE)
    else:
        state["refresh_token"] = "not-a-token"
    token = await BIOTZ.mint(mint_request(http, spec(keycloak), CREDS, state=state))
    assert token.value
    assert keycloak.grants(DEVICE)[-1] == "password"
    assert keycloak.grants(DEVICE).count("password") == 2


ERRORS = [
    ("wrong password", {"password": "nope"}, {}, "InvalidCredentials", True),
    ("unknown user", {"username": "ghost@devices"}, {}, "InvalidCredentials", True),
    ("locked user", {}, {"locked": True}, "InvalidCredentials", True),
    ("disabled account", {}, {"enabled": False}, "AccountDisabled", True),
    ("account not set up", {}, {"set_up": False}, "AccountNotSetUp", True),
]


@pytest.mark.parametrize(
    ("creds_change", "user_flags", "reason", "permanent"),
    [e[1:] for e in ERRORS],
    ids=[e[0] for e in ERRORS],
)
async def test_documented_errors_map_to_distinct_reasons(
    keycloak: FakeKeycloak,
    http_for: HttpFactory,
    creds_change: dict[str, str],
    user_flags: dict[str, bool],
    reason: str,
    permanent: bool,
) -> None:
    keycloak.add_user(DEVICE, "device-password", **user_flags)
    with pytest.raises(base.MintError) as failure:
        await BIOTZ.mint(
            mint_request(http_for(keycloak.host), spec(keycloak), {**CREDS, **creds_change})
        )
    assert failure.value.reason == reason
    assert failure.value.permanent is permanent
    assert "device-password" not in failure.value.message and "nope" not in failure.value.message


async def test_unknown_client_is_its_own_reason(
    keycloak: FakeKeycloak, http_for: HttpFactory
) -> None:
    with pytest.raises(base.MintError) as failure:
        await BIOTZ.mint(
            mint_request(http_for(keycloak.host), spec(keycloak, clientId="nobody"), CREDS)
        )
    assert failure.value.reason == "InvalidClient"


async def test_keycloak_down_is_transient(keycloak: FakeKeycloak, http_for: HttpFactory) -> None:
    keycloak.outage(60, status=503)
    with pytest.raises(base.ProviderUnavailable):
        await BIOTZ.mint(mint_request(http_for(keycloak.host), spec(keycloak), CREDS))
