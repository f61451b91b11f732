"""Podero at the HTTP level: Basic auth, JSON body, trailing slash, oauthlib-style errors."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest

from fakes.podero import FakePodero
from providers.conftest import HttpFactory, mint_request
from tokensync.providers import base
from tokensync.providers.podero import TOKEN_URLS
from tokensync.providers.registry import PROVIDERS

PODERO = PROVIDERS.get("podero")
CREDS = {"clientId": "partner-1", "clientSecret": "s3cr3t:with:colons"}


@pytest.fixture
def podero() -> Iterator[FakePodero]:
    with FakePodero() as server:
        server.add_client("partner-1", "s3cr3t:with:colons")
        yield server


def test_official_endpoints_keep_the_trailing_slash() -> None:
    assert TOKEN_URLS == {
        "production": "https://app.podero.com/oauth2/token/",
        "sandbox": "https://sandbox-app.podero.com/oauth2/token/",
    }


async def test_request_on_the_wire(podero: FakePodero, http_for: HttpFactory) -> None:
    token = await PODERO.mint(
        mint_request(http_for(podero.host), {"tokenUrl": podero.token_url}, CREDS)
    )
    wire = podero.requests[-1]
    assert (wire.method, wire.path) == ("POST", "/oauth2/token/")
    assert wire.content_type == "application/json"
    assert json.loads(wire.body) == {"grant_type": "client_credentials"}
    expected = base64.b64encode(b"partner-1:s3cr3t:with:colons").decode()
    assert wire.headers["authorization"] == f"Basic {expected}"
    assert token.value == podero.issued[-1].value and len(token.value) == 30
    assert token.expires_at is not None
    assert (token.expires_at - token.minted_at).total_seconds() == 36000


ERRORS = [
    ("bad secret", {"clientSecret": "wrong"}, None, "InvalidCredentials"),
    ("grant not allowed for the client", {}, "unauthorized", "UnauthorizedClient"),
    ("slash-less path", {}, "no-slash", "InvalidRequest"),
]


@pytest.mark.parametrize(
    ("creds_change", "server_change", "reason"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
async def test_documented_errors(
    podero: FakePodero,
    http_for: HttpFactory,
    creds_change: dict[str, str],
    server_change: str | None,
    reason: str,
) -> None:
    url = podero.token_url
    if server_change == "unauthorized":
        podero.allowed_grants = set()
    if server_change == "no-slash":
        url = url.rstrip("/")
    with pytest.raises(base.MintError) as failure:
        await PODERO.mint(
            mint_request(http_for(podero.host), {"tokenUrl": url}, {**CREDS, **creds_change})
        )
    assert failure.value.reason == reason


async def test_a_form_body_would_be_refused(podero: FakePodero, http_for: HttpFactory) -> None:
    """Why the body is JSON: the server ignores a form body (unsupported_grant_type)."""
    http = http_for(podero.host)
    header = "Basic " + base64.b64encode(b"partner-1:s3cr3t:with:colons").decode()
    answer = await http.request(
        "POST",
        podero.token_url,
        official=False,
        headers={"Authorization": header},
        data={"grant_type": "client_credentials"},
    )
    assert answer.status == 400 and answer.json() == {"error": "unsupported_grant_type"}
