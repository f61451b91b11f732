"""The generic OAuth2/OIDC provider against a standards-following token endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fakes.base import FakeProvider
from fakes.oauth2_server import TOKEN_EXCHANGE, FakeOAuth2Server
from providers.conftest import HttpFactory, mint_request
from tokensync.endpoints import EndpointPolicy, EndpointRefused, HttpClient
from tokensync.providers import base
from tokensync.providers.registry import PROVIDERS

OAUTH2 = PROVIDERS.get("oauth2")


@pytest.fixture
def idp() -> Iterator[FakeOAuth2Server]:
    with FakeOAuth2Server() as server:
        yield server


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


async def test_client_credentials_basic_with_scope_audience_and_extra_params(
    idp: FakeOAuth2Server, http_for: HttpFactory
) -> None:
    idp.add_client("app", "s e/cret")
    spec = {
        "tokenUrl": idp.token_url,
        "scope": "read write",
        "audience": "https://api.example",
        "extraParams": {"resource": "r1"},
    }
    token = await OAUTH2.mint(
        mint_request(http_for(idp.host), spec, {"clientId": "app", "clientSecret": "s e/cret"})
    )
    wire = idp.requests[-1]
    assert wire.form == {
        "grant_type": "client_credentials",
        "scope": "read write",
        "audience": "https://api.example",
        "resource": "r1",
    }
    # RFC 6749 2.3.1: id and secret are form-encoded inside the Basic credentials.
    assert wire.headers["authorization"] == "Basic YXBwOnMrZSUyRmNyZXQ="
    assert token.value == idp.issued[-1].value
    assert token.state is None  # shared, stateless


async def test_password_grant_keeps_and_reuses_the_refresh_token(
    idp: FakeOAuth2Server, http_for: HttpFactory
) -> None:
    idp.add_client("app", "secret", users={"alice": "wonder"})
    spec = {"tokenUrl": idp.token_url, "grantType": "password", "clientAuth": "client_secret_post"}
    creds = {"clientId": "app", "clientSecret": "secret", "username": "alice", "password": "wonder"}
    http = http_for(idp.host)
    first = await OAUTH2.mint(mint_request(http, spec, creds))
    assert first.state and first.state["refresh_token"]
    second = await OAUTH2.mint(mint_request(http, spec, creds, state=dict(first.state)))
    assert idp.requests[-1].form["grant_type"] == "refresh_token"
    assert second.state and second.state["refresh_token"] != first.state["refresh_token"]
    # The old one is spent: presenting it again falls back to the password grant.
    await OAUTH2.mint(mint_request(http, spec, creds, state=dict(first.state)))
    assert idp.grants("app") == ["password", "refresh_token", "password"]


async def test_token_exchange(idp: FakeOAuth2Server, http_for: HttpFactory) -> None:
    idp.add_client("app", "secret", subject_tokens={"upstream-token"})
    spec = {
        "tokenUrl": idp.token_url,
        "grantType": "token_exchange",
        "audience": "downstream",
        "resource": "https://downstream.example",
    }
    creds = {"clientId": "app", "clientSecret": "secret", "subjectToken": "upstream-token"}
    await OAUTH2.mint(mint_request(http_for(idp.host), spec, creds))
    assert idp.requests[-1].form == {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": "upstream-token",
        "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "resource": "https://downstream.example",
        "audience": "downstream",
    }


@pytest.mark.parametrize("kind", ["RS256", "ES256"])
async def test_private_key_jwt(idp: FakeOAuth2Server, http_for: HttpFactory, kind: str) -> None:
    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    idp.add_client("signer", auth_method="private_key_jwt", public_key=key.public_key())
    spec = {"tokenUrl": idp.token_url, "clientAuth": "private_key_jwt", "keyId": "key-1"}
    creds = {"clientId": "signer", "privateKey": pem(key)}
    http = http_for(idp.host)
    await OAUTH2.mint(mint_request(http, spec, creds))
    await OAUTH2.mint(mint_request(http, spec, creds))  # a second assertion: new jti
    assertions = [r.form["client_assertion"] for r in idp.requests]
    headers = [jwt.get_unverified_header(a) for a in assertions]
    assert {h["alg"] for h in headers} == {kind} and {h["kid"] for h in headers} == {"key-1"}
    claims = [jwt.decode(a, options={"verify_signature": False}) for a in assertions]
    assert claims[0]["jti"] != claims[1]["jti"]
    assert claims[0]["aud"] == idp.token_url
    assert claims[0]["exp"] - claims[0]["iat"] <= 60
    assert len(idp.issued_to("signer")) == 2


async def test_the_client_assertion_is_dated_by_the_mint_clock(
    idp: FakeOAuth2Server, http_for: HttpFactory
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    idp.add_client("signer", auth_method="private_key_jwt", public_key=key.public_key())
    spec = {"tokenUrl": idp.token_url, "clientAuth": "private_key_jwt"}
    now = datetime.now(UTC) - timedelta(seconds=20)  # the operator's clock, not time.time()
    creds = {"clientId": "signer", "privateKey": pem(key)}
    await OAUTH2.mint(mint_request(http_for(idp.host), spec, creds, now=now))
    claims = jwt.decode(
        idp.requests[-1].form["client_assertion"], options={"verify_signature": False}
    )
    assert claims["iat"] == int(now.timestamp())
    assert claims["exp"] == int(now.timestamp()) + 60


@pytest.mark.parametrize(
    "asked",
    [{"scope": "openid profile"}, {"extraParams": {"scope": "openid"}}],
    ids=["scope", "extraParams scope"],
)
async def test_public_client_and_id_token_field(
    idp: FakeOAuth2Server, http_for: HttpFactory, asked: dict[str, object]
) -> None:
    idp.add_client("public", auth_method="none", id_token=True)
    spec = {"tokenUrl": idp.token_url, "clientAuth": "none", "tokenField": "id_token", **asked}
    token = await OAUTH2.mint(mint_request(http_for(idp.host), spec, {"clientId": "public"}))
    assert idp.requests[-1].form["client_id"] == "public"
    assert "openid" in idp.requests[-1].form["scope"].split()
    assert "authorization" not in idp.requests[-1].headers
    assert jwt.decode(token.value, options={"verify_signature": False})["aud"] == "public"


@pytest.mark.parametrize(
    "asked",
    [{}, {"scope": "profile"}, {"scope": "openid_x"}, {"extraParams": {"audience": "openid"}}],
    ids=["no scope", "another scope", "a longer word", "openid elsewhere"],
)
async def test_an_id_token_without_the_openid_scope_is_refused_before_any_request(
    idp: FakeOAuth2Server, http_for: HttpFactory, asked: dict[str, object]
) -> None:
    """Without openid no OIDC provider issues an id_token: each attempt would open a
    session there and fail on the answer. Refused once, as a spec problem, sending nothing."""
    idp.add_client("public", auth_method="none", id_token=True)
    spec = {"tokenUrl": idp.token_url, "clientAuth": "none", "tokenField": "id_token", **asked}
    with pytest.raises(base.InvalidSpec) as refused:
        await OAUTH2.mint(mint_request(http_for(idp.host), spec, {"clientId": "public"}))
    assert refused.value.permanent
    assert "openid" in refused.value.message
    assert idp.requests == []


async def test_discovery_is_used_and_cached(idp: FakeOAuth2Server, http_for: HttpFactory) -> None:
    idp.add_client("app", "secret")
    spec = {"issuerUrl": idp.issuer}
    http = http_for(idp.host)
    for _ in range(3):
        await OAUTH2.mint(mint_request(http, spec, {"clientId": "app", "clientSecret": "secret"}))
    assert idp.discovery_requests == 1
    assert len(idp.issued_to("app")) == 3


async def test_discovery_is_kept_an_hour_by_the_mint_clock(
    idp: FakeOAuth2Server, http_for: HttpFactory
) -> None:
    idp.add_client("app", "secret")
    spec = {"issuerUrl": idp.issuer}
    http = http_for(idp.host)
    start = datetime.now(UTC)
    creds = {"clientId": "app", "clientSecret": "secret"}
    for minutes, discoveries in ((0, 1), (59, 1), (61, 2), (100, 2)):
        now = start + timedelta(minutes=minutes)
        await OAUTH2.mint(mint_request(http, spec, creds, now=now))
        assert idp.discovery_requests == discoveries, minutes


CREDENTIALS = [
    ({}, ("clientId", "clientSecret")),
    ({"clientAuth": "client_secret_post"}, ("clientId", "clientSecret")),
    ({"clientAuth": "private_key_jwt"}, ("clientId", "privateKey")),
    ({"clientAuth": "none"}, ("clientId",)),
    ({"grantType": "password"}, ("clientId", "clientSecret", "username", "password")),
    (
        {"grantType": "password", "clientAuth": "private_key_jwt"},
        ("clientId", "privateKey", "username", "password"),
    ),
    ({"grantType": "token_exchange", "clientAuth": "none"}, ("clientId", "subjectToken")),
]


@pytest.mark.parametrize(("spec", "keys"), CREDENTIALS, ids=[str(s) for s, _ in CREDENTIALS])
def test_required_credentials_follow_the_grant_and_client_auth(
    spec: dict[str, str], keys: tuple[str, ...]
) -> None:
    assert OAUTH2.required_credentials({"tokenUrl": "https://idp.example/t", **spec}) == keys


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (EndpointPolicy(allow_insecure_http=True), "--allowed-hosts"),
        ("allowlisted-without-flag", "--allow-insecure-http"),
    ],
    ids=["host outside the allowlist", "plain http without the flag"],
)
async def test_refused_endpoints_get_no_request(
    idp: FakeOAuth2Server, policy: EndpointPolicy | str, message: str
) -> None:
    idp.add_client("app", "secret")
    if isinstance(policy, str):
        policy = EndpointPolicy(allowed_hosts=frozenset({idp.host}))
    client = HttpClient(policy)
    creds = {"clientId": "app", "clientSecret": "secret"}
    try:
        with pytest.raises(base.EndpointNotAllowed, match=message):
            await OAUTH2.mint(mint_request(client, {"tokenUrl": idp.token_url}, creds))
    finally:
        await client.close()
    assert idp.requests == []


async def test_oversized_answers_are_refused(idp: FakeOAuth2Server, http_for: HttpFactory) -> None:
    idp.add_client("app", "secret")
    FakeProvider.outage(idp, 60, status=200, body="x" * 2_000_000)
    with pytest.raises(base.ProviderUnavailable, match="larger than"):
        await OAUTH2.mint(
            mint_request(
                http_for(idp.host),
                {"tokenUrl": idp.token_url},
                {"clientId": "app", "clientSecret": "secret"},
            )
        )


async def test_a_permitted_name_resolving_to_loopback_is_refused(idp: FakeOAuth2Server) -> None:
    """`localhost` is in the allowlist, but it resolves to 127.0.0.1: refused, nothing sent."""
    idp.add_client("app", "secret")
    port = idp.host.rsplit(":", 1)[1]
    url = f"http://localhost:{port}/oauth/token"
    creds = {"clientId": "app", "clientSecret": "secret"}
    policy = EndpointPolicy(
        allowed_hosts=frozenset({f"localhost:{port}"}), allow_insecure_http=True
    )
    client = HttpClient(policy)
    try:
        with pytest.raises(base.EndpointNotAllowed, match="private, loopback or link-local"):
            await OAUTH2.mint(mint_request(client, {"tokenUrl": url}, creds))
    finally:
        await client.close()
    assert idp.requests == []
    permissive = HttpClient(
        EndpointPolicy(
            allowed_hosts=frozenset({f"localhost:{port}"}),
            allow_insecure_http=True,
            allow_private_networks=True,
        )
    )
    try:
        token = await OAUTH2.mint(mint_request(permissive, {"tokenUrl": url}, creds))
    finally:
        await permissive.close()
    assert token.value == idp.issued[-1].value


async def test_cloud_metadata_is_refused_even_when_allowlisted_by_name() -> None:
    client = HttpClient(EndpointPolicy(allowed_hosts=frozenset({"169.254.169.254.nip.invalid"})))
    try:
        with pytest.raises(EndpointRefused, match="link-local"):
            await client.request("GET", "https://169.254.169.254/latest/meta-data/", official=True)
    finally:
        await client.close()


@pytest.mark.parametrize(
    "location",
    ["http://169.254.169.254/latest/meta-data/iam", "OTHER"],
    ids=["to cloud metadata", "to another loopback server outside the allowlist"],
)
async def test_redirects_are_not_followed(
    idp: FakeOAuth2Server, http_for: HttpFactory, location: str
) -> None:
    """A token endpoint answering 30x must not steer the credentials anywhere else."""
    idp.add_client("app", "secret")
    with FakeOAuth2Server() as elsewhere:
        target = elsewhere.token_url if location == "OTHER" else location
        FakeProvider.outage(idp, 60, status=307, body=b"", headers={"Location": target})
        with pytest.raises(base.ProviderUnavailable, match="307 redirect, which is not followed"):
            await OAUTH2.mint(
                mint_request(
                    http_for(idp.host),
                    {"tokenUrl": idp.token_url},
                    {"clientId": "app", "clientSecret": "secret"},
                )
            )
        assert len(idp.requests) == 1
        assert elsewhere.requests == []


async def test_a_trickling_answer_is_cut_at_the_provider_timeout(http_for: HttpFactory) -> None:
    """Each byte arrives well within a read timeout; the whole answer does not."""
    import asyncio
    import time

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: 1000\r\n\r\n")
        try:
            for _ in range(1000):
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.05)
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    started = time.monotonic()
    try:
        with pytest.raises(base.ProviderUnavailable, match="timed out"):
            await OAUTH2.mint(
                mint_request(
                    http_for(f"127.0.0.1:{port}", timeout_s=0.5),
                    {"tokenUrl": f"http://127.0.0.1:{port}/token"},
                    {"clientId": "app", "clientSecret": "secret"},
                )
            )
    finally:
        server.close()
    assert time.monotonic() - started < 5
