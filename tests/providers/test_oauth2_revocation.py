"""revokeOnDelete against real endpoints on loopback (issue 18): what a mint keeps for the
revocation, RFC 7009 revocation with the token endpoint's client authentication (refresh
token first), a partial revocation said as such, nothing secret in a refusal, and RFC 6749
section 6 (a refresh answer without a refresh token leaves the one sent valid)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fakes.base import FakeProvider, Request, Response
from fakes.oauth2_server import REVOKE_PATH, FakeOAuth2Server
from providers.conftest import HttpFactory, mint_request
from tokensync.providers.base import (
    InvalidCredentials,
    MintError,
    ProviderUnavailable,
)
from tokensync.providers.oauth2 import (
    JWT_BEARER_ASSERTION,
    REVOCABLE_ACCESS_TOKEN,
    OAuth2,
    basic_auth,
)
from tokensync.providers.token_endpoint import REFRESH_EXPIRES_AT, REFRESH_TOKEN

CLIENT_ID = "app"
# Characters that change under form- and URL-encoding: the redaction must find every form.
CLIENT_SECRET = "s3cr3t/with+plus&amp=eq"
USERNAME = "alice"
PASSWORD = "wonder-pass-value"
CREDS = {
    "clientId": CLIENT_ID,
    "clientSecret": CLIENT_SECRET,
    "username": USERNAME,
    "password": PASSWORD,
}


@pytest.fixture
def idp() -> Iterator[FakeOAuth2Server]:
    with FakeOAuth2Server() as server:
        yield server


def password_spec(idp: FakeOAuth2Server, **more: Any) -> dict[str, Any]:
    return {
        "tokenUrl": idp.token_url,
        "grantType": "password",
        "revokeOnDelete": True,
        "revocationUrl": idp.revocation_url,
        **more,
    }


def refused_refresh(idp: FakeOAuth2Server, refresh: str) -> dict[str, Any]:
    """What the fake's token endpoint answers the refresh token now (the client as sent)."""
    answer = httpx.post(
        idp.token_url,
        data={"grant_type": "refresh_token", "refresh_token": refresh},
        # RFC 6749 2.3.1, as the operator sends it (httpx's auth= does not form-encode).
        headers={"Authorization": basic_auth(CLIENT_ID, CLIENT_SECRET)},
        timeout=5.0,
    )
    assert answer.status_code == 400
    body: dict[str, Any] = answer.json()
    return body


# --- with the fake identity provider ---------------------------------------------------------


async def test_a_password_grant_keeps_both_tokens_and_revokes_the_refresh_token_first(
    idp: FakeOAuth2Server, http_for: HttpFactory
) -> None:
    idp.add_client(
        CLIENT_ID,
        CLIENT_SECRET,
        auth_method="client_secret_basic",
        users={USERNAME: PASSWORD},
    )
    provider = OAuth2()
    http = http_for(idp.host)
    spec = password_spec(idp)
    assert provider.revokes_on_delete(spec) and not provider.shareable(spec)
    token = await provider.mint(mint_request(http, spec, CREDS))
    state = dict(token.state or {})
    # The one copy of the access token after a restart is the state: kept beside the refresh.
    assert state[REVOCABLE_ACCESS_TOKEN] == token.value == idp.issued_to(CLIENT_ID)[-1].value
    refresh = state[REFRESH_TOKEN]
    assert refresh in idp.refresh_token_owners and REFRESH_EXPIRES_AT in state

    endpoint, revoked = await provider.revoke(mint_request(http, spec, CREDS), state)

    assert endpoint == idp.revocation_url
    assert revoked == ("refresh_token", "access_token")
    assert [(r.token_type_hint, r.kind, r.token) for r in idp.revocations] == [
        ("refresh_token", "refresh_token", refresh),
        ("access_token", "access_token", token.value),
    ]
    assert all(r.revoked and r.status == 200 and r.client_id == CLIENT_ID for r in idp.revocations)
    # With the token endpoint's client authentication (this client insists on Basic).
    sent = [r for r in idp.requests if r.path == REVOKE_PATH]
    assert len(sent) == 2
    assert all(r.headers["authorization"].startswith("Basic ") for r in sent)
    assert all("client_secret" not in r.form for r in sent)
    assert idp.is_revoked(refresh) and idp.is_revoked(token.value)
    # The refresh token is dead at the token endpoint.
    assert refused_refresh(idp, refresh)["error"] == "invalid_grant"
    # And a mint given it starts the password grant afresh.
    await provider.mint(mint_request(http, spec, CREDS, state=state))
    assert idp.grants(CLIENT_ID) == ["password", "password"]


async def test_a_client_credentials_token_revoked_on_delete_is_kept_and_not_shared(
    idp: FakeOAuth2Server, http_for: HttpFactory
) -> None:
    idp.add_client(CLIENT_ID, CLIENT_SECRET)
    provider = OAuth2()
    http = http_for(idp.host)
    spec = {"tokenUrl": idp.token_url, "revokeOnDelete": True, "revocationUrl": idp.revocation_url}
    assert provider.shareable(spec) is False
    assert provider.shareable({"tokenUrl": idp.token_url}) is True
    token = await provider.mint(mint_request(http, spec, CREDS))
    # RFC 6749 4.4.3: no refresh token; the access token is what a deletion revokes.
    assert token.state == {REVOCABLE_ACCESS_TOKEN: token.value}

    endpoint, revoked = await provider.revoke(mint_request(http, spec, CREDS), token.state)

    assert (endpoint, revoked) == (idp.revocation_url, ("access_token",))
    ((revocation,),) = [idp.revocations]
    assert revocation.token_type_hint == "access_token" and revocation.kind == "access_token"
    assert revocation.revoked and revocation.token == token.value
    assert idp.is_revoked(token.value)


async def test_revocation_with_private_key_jwt_signs_for_the_revocation_endpoint(
    idp: FakeOAuth2Server, http_for: HttpFactory
) -> None:
    """The assertion's aud is the URL called (Okta and Keycloak check it so): the fake
    refuses one signed for the token endpoint at /revoke."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    idp.add_client(
        CLIENT_ID,
        auth_method="private_key_jwt",
        public_key=key.public_key(),
        users={USERNAME: PASSWORD},
    )
    provider = OAuth2()
    http = http_for(idp.host)
    spec = password_spec(idp, clientAuth="private_key_jwt")
    creds = {
        "clientId": CLIENT_ID,
        "privateKey": _pem(key),
        "username": USERNAME,
        "password": PASSWORD,
    }
    token = await provider.mint(mint_request(http, spec, creds))

    _, revoked = await provider.revoke(mint_request(http, spec, creds), dict(token.state or {}))

    assert revoked == ("refresh_token", "access_token")
    assert [(r.kind, r.revoked, r.status) for r in idp.revocations] == [
        ("refresh_token", True, 200),
        ("access_token", True, 200),
    ]


async def test_revocation_with_client_secret_post(
    idp: FakeOAuth2Server, http_for: HttpFactory
) -> None:
    idp.add_client(
        CLIENT_ID, CLIENT_SECRET, auth_method="client_secret_post", users={USERNAME: PASSWORD}
    )
    provider = OAuth2()
    http = http_for(idp.host)
    spec = password_spec(idp, clientAuth="client_secret_post")
    token = await provider.mint(mint_request(http, spec, CREDS))
    state = dict(token.state or {})

    _, revoked = await provider.revoke(mint_request(http, spec, CREDS), state)

    assert revoked == ("refresh_token", "access_token")
    assert all(r.revoked for r in idp.revocations) and len(idp.revocations) == 2
    sent = [r for r in idp.requests if r.path == REVOKE_PATH]
    assert [r.form["token_type_hint"] for r in sent] == ["refresh_token", "access_token"]
    for wire in sent:
        assert "authorization" not in wire.headers
        assert wire.form["client_id"] == CLIENT_ID and wire.form["client_secret"] == CLIENT_SECRET


async def test_revocation_at_the_endpoint_the_issuers_discovery_names(
    idp: FakeOAuth2Server, http_for: HttpFactory
) -> None:
    idp.add_client(CLIENT_ID, CLIENT_SECRET, users={USERNAME: PASSWORD})
    provider = OAuth2()
    http = http_for(idp.host)
    spec = {"issuerUrl": idp.issuer, "grantType": "password", "revokeOnDelete": True}
    assert "revocation_endpoint" in idp.discovery()
    token = await provider.mint(mint_request(http, spec, CREDS))
    state = dict(token.state or {})

    endpoint, revoked = await provider.revoke(mint_request(http, spec, CREDS), state)

    assert endpoint == idp.revocation_url
    assert revoked == ("refresh_token", "access_token")
    assert [r.kind for r in idp.revocations if r.revoked] == ["refresh_token", "access_token"]
    assert idp.discovery_requests == 1  # the discovery document is kept, not fetched again


async def test_a_revocation_in_a_fresh_operator_finds_the_endpoint_by_discovery(
    idp: FakeOAuth2Server, http_for: HttpFactory
) -> None:
    """After a restart nothing was discovered yet: the revocation looks it up itself."""
    idp.add_client(CLIENT_ID, CLIENT_SECRET, users={USERNAME: PASSWORD})
    http = http_for(idp.host)
    spec = {"issuerUrl": idp.issuer, "grantType": "password", "revokeOnDelete": True}
    token = await OAuth2().mint(mint_request(http, spec, CREDS))
    endpoint, revoked = await OAuth2().revoke(mint_request(http, spec, CREDS), token.state or {})
    assert endpoint == idp.revocation_url and revoked == ("refresh_token", "access_token")
    assert idp.discovery_requests == 2


# --- a small endpoint of our own: scripted answers ---------------------------------------------


Answer = Callable[[Request], tuple[int, Any]]


class Scripted(FakeProvider):
    """A token and a revocation endpoint answering each request with what ``script``
    returns (status, JSON body); the base records what it was sent."""

    provider = "oauth2"

    def __init__(self, script: Answer) -> None:
        super().__init__()
        self.script = script

    @property
    def token_url(self) -> str:
        return self.base_url + "/token"

    @property
    def revocation_url(self) -> str:
        return self.base_url + "/revoke"

    def answer(self, request: Request) -> Response:
        status, body = self.script(request)
        return Response(status, body)

    def at(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


def revocable(server: Scripted, **more: Any) -> dict[str, Any]:
    return {
        "tokenUrl": server.token_url,
        "revocationUrl": server.revocation_url,
        "grantType": "password",
        "revokeOnDelete": True,
        **more,
    }


REFRESH = "rt-value-that-must-never-show"
ACCESS = "at-value-that-must-never-show"
TOKENS = {
    REFRESH_TOKEN: REFRESH,
    REFRESH_EXPIRES_AT: "2099-01-01T00:00:00+00:00",
    REVOCABLE_ACCESS_TOKEN: ACCESS,
}


# --- nothing secret in a refusal ---------------------------------------------------------------


def _echo(what: str) -> Answer:
    """Refuse the revocation with 400 invalid_client, echoing ``what`` was sent."""

    def answer(sent: Request) -> tuple[int, Any]:
        form, body = sent.form, sent.body.decode()
        basic = sent.headers.get("authorization", "").partition(" ")[2]
        echoes = {
            "authorization header": sent.headers.get("authorization", ""),
            "decoded basic pair": base64.b64decode(basic).decode() if basic else "",
            "form body": body,
            "form values": " ".join(form.values()),
            "client secret": form.get("client_secret", ""),
            "client assertion": form.get("client_assertion", ""),
            "token": form.get("token", ""),
            "header and form": f"{sent.headers.get('authorization', '')} {body}",
        }
        return 400, {"error": "invalid_client", "error_description": "got " + echoes[what]}

    return answer


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _leaks(message: str, secret: str) -> bool:
    """The secret, in any form a request carries it, or a telling piece of it."""
    forms = {secret, quote_plus(secret), quote(secret, safe="")}
    pieces = {form[:12] for form in forms if len(form) >= 12}
    return any(piece in message for piece in forms | pieces)


ECHOES = {
    "client_secret_basic": [
        "authorization header",
        "decoded basic pair",
        "form body",
        "token",
        "header and form",
    ],
    "client_secret_post": ["form body", "form values", "client secret", "token"],
    "private_key_jwt": ["form body", "form values", "client assertion", "token"],
}
CASES = [(auth, what) for auth, echoes in ECHOES.items() for what in echoes]


@pytest.mark.parametrize(("auth", "what"), CASES, ids=[f"{a}: {w}" for a, w in CASES])
async def test_a_refused_revocation_shows_nothing_secret(
    http_for: HttpFactory, auth: str, what: str
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    creds = {**CREDS, "privateKey": _pem(key)}
    if auth != "private_key_jwt":
        del creds["privateKey"]
    with Scripted(_echo(what)) as server:
        spec = revocable(server, clientAuth=auth)
        with pytest.raises(MintError) as caught:
            await OAuth2().revoke(mint_request(http_for(server.host), spec, creds), TOKENS)
        (sent,) = server.at("/revoke")  # refused at the first: the access token not sent
    message = caught.value.message
    assert isinstance(caught.value, InvalidCredentials)
    assert message.startswith("provider answered 400 invalid_client: got ")
    assert "***" in message, message  # the echo arrived, and was redacted
    authorization = sent.headers.get("authorization", "")
    secrets = [CLIENT_SECRET, REFRESH, ACCESS, PASSWORD]
    if auth == "client_secret_basic":
        basic = authorization.partition(" ")[2]
        assert basic
        secrets += [basic, base64.b64decode(basic).decode()]
    else:
        assert not authorization
    if auth == "private_key_jwt":
        assertion = sent.form["client_assertion"]
        assert sent.form["client_assertion_type"] == JWT_BEARER_ASSERTION
        assert jwt.decode(
            assertion, key.public_key(), algorithms=["RS256"], audience=server.revocation_url
        )
        _, payload, signature = assertion.split(".")
        secrets += [assertion, payload, signature]
    for secret in secrets:
        assert not _leaks(message, secret), (secret, message)


# --- what a revocation endpoint does not revoke, and a partial revocation ------------------------


def _by_hint(answers: dict[str, tuple[int, Any]]) -> Answer:
    def answer(sent: Request) -> tuple[int, Any]:
        return answers[sent.form["token_type_hint"]]

    return answer


UNSUPPORTED = (400, {"error": "unsupported_token_type"})
OK = (200, {})


async def test_an_access_token_the_server_does_not_revoke_is_skipped(
    http_for: HttpFactory,
) -> None:
    with Scripted(_by_hint({"refresh_token": OK, "access_token": UNSUPPORTED})) as server:
        endpoint, revoked = await OAuth2().revoke(
            mint_request(http_for(server.host), revocable(server), CREDS), TOKENS
        )
        sent = server.at("/revoke")
    assert endpoint == server.revocation_url
    assert revoked == ("refresh_token",)
    assert [(s.form["token_type_hint"], s.form["token"]) for s in sent] == [
        ("refresh_token", REFRESH),
        ("access_token", ACCESS),
    ]


async def test_a_refresh_token_the_server_does_not_revoke_is_skipped_too(
    http_for: HttpFactory,
) -> None:
    with Scripted(_by_hint({"refresh_token": UNSUPPORTED, "access_token": OK})) as server:
        _, revoked = await OAuth2().revoke(
            mint_request(http_for(server.host), revocable(server), CREDS), TOKENS
        )
    assert revoked == ("access_token",)


async def test_a_partial_revocation_says_what_was_revoked(http_for: HttpFactory) -> None:
    down = (503, {"error": "temporarily_unavailable"})
    with Scripted(_by_hint({"refresh_token": OK, "access_token": down})) as server:
        with pytest.raises(ProviderUnavailable) as caught:
            await OAuth2().revoke(
                mint_request(http_for(server.host), revocable(server), CREDS), TOKENS
            )
        assert len(server.at("/revoke")) == 2
    message = caught.value.message
    assert message.startswith("refresh_token revoked, access_token not"), message
    assert "503" in message
    assert not caught.value.permanent  # retried within the 30 seconds, as any outage


async def test_a_failure_at_the_first_token_says_nothing_was_revoked(
    http_for: HttpFactory,
) -> None:
    down = (503, {"error": "temporarily_unavailable"})
    with Scripted(_by_hint({"refresh_token": down, "access_token": OK})) as server:
        with pytest.raises(ProviderUnavailable) as caught:
            await OAuth2().revoke(
                mint_request(http_for(server.host), revocable(server), CREDS), TOKENS
            )
        assert len(server.at("/revoke")) == 1  # stopped at the refresh token
    assert "revoked" not in caught.value.message
    assert caught.value.message == "provider answered 503"


# --- RFC 6749 section 6: a refresh without a new refresh token -----------------------------------


FIRST_REFRESH = "rt-first-and-only"


def _refresh_kept_answer() -> Answer:
    issued = iter(range(1, 100))

    def answer(sent: Request) -> tuple[int, Any]:
        grant = sent.form.get("grant_type")
        access = {"access_token": f"at-{next(issued)}", "expires_in": 3600, "token_type": "Bearer"}
        if grant == "password":
            return 200, {**access, "refresh_token": FIRST_REFRESH, "refresh_expires_in": 7200}
        if grant == "refresh_token" and sent.form.get("refresh_token") == FIRST_REFRESH:
            return 200, access  # no refresh_token: the one sent stays valid
        return 400, {"error": "invalid_grant"}

    return answer


@pytest.mark.parametrize("revoke", [False, True], ids=["plain", "revokeOnDelete"])
async def test_a_refresh_answer_without_a_refresh_token_keeps_the_one_sent(
    http_for: HttpFactory, revoke: bool
) -> None:
    start = datetime.now(UTC)
    with Scripted(_refresh_kept_answer()) as server:
        spec: dict[str, Any] = {"tokenUrl": server.token_url, "grantType": "password"}
        if revoke:
            spec.update(revokeOnDelete=True, revocationUrl=server.revocation_url)
        http = http_for(server.host)
        provider = OAuth2()
        first = await provider.mint(mint_request(http, spec, CREDS, now=start))
        later = start + timedelta(minutes=50)
        second = await provider.mint(
            mint_request(http, spec, CREDS, state=dict(first.state or {}), now=later)
        )
        third = await provider.mint(
            mint_request(
                http, spec, CREDS, state=dict(second.state or {}), now=later + timedelta(minutes=50)
            )
        )
        grants = [(s.form["grant_type"], s.form.get("refresh_token")) for s in server.at("/token")]
    assert first.state and second.state and third.state
    expiry = (start + timedelta(seconds=7200)).isoformat()
    assert first.state[REFRESH_TOKEN] == FIRST_REFRESH
    assert first.state[REFRESH_EXPIRES_AT] == expiry
    # The sent refresh token and its expiry stay, not the refresh's time plus anything.
    assert second.state[REFRESH_TOKEN] == FIRST_REFRESH
    assert second.state[REFRESH_EXPIRES_AT] == expiry
    assert third.state[REFRESH_TOKEN] == FIRST_REFRESH
    assert grants == [
        ("password", None),
        ("refresh_token", FIRST_REFRESH),
        ("refresh_token", FIRST_REFRESH),
    ]
    assert (first.value, second.value, third.value) == ("at-1", "at-2", "at-3")
    if revoke:
        # The access token kept for revocation is the newest one, never the first.
        assert second.state[REVOCABLE_ACCESS_TOKEN] == "at-2"
        assert third.state[REVOCABLE_ACCESS_TOKEN] == "at-3"
        assert set(third.state) == {REFRESH_TOKEN, REFRESH_EXPIRES_AT, REVOCABLE_ACCESS_TOKEN}
    else:
        assert set(second.state) == set(third.state) == {REFRESH_TOKEN, REFRESH_EXPIRES_AT}
