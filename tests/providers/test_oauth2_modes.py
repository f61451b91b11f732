"""The oauth2 client authentications without a secret (issue 18): a ServiceAccount token
as the client assertion (RFC 7523), a client certificate on the connection (RFC 8705), a
ServiceAccount token as the RFC 8693 subject token; and mutual TLS in HttpClient itself,
against a real local TLS server that requires a client certificate."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fakes.base import ServerTls
from fakes.oauth2_server import FakeOAuth2Server, Recorded
from providers.conftest import HttpFactory, mint_request
from support.tls import CertificateAuthority, KeyPair
from support.waiting import wait_for
from tokensync.client_certificates import ClientCertificate
from tokensync.endpoints import (
    EndpointPolicy,
    EndpointRefused,
    HttpClient,
    TransportFailure,
    UnsendableRequest,
    normalise_hosts,
)
from tokensync.providers.base import (
    CredentialsIncomplete,
    EndpointNotAllowed,
    InvalidSpec,
    ProviderUnavailable,
)
from tokensync.providers.oauth2 import (
    ACCESS_TOKEN_TYPE,
    JWT_BEARER_ASSERTION,
    JWT_TOKEN_TYPE,
    TOKEN_EXCHANGE,
    OAuth2,
)
from tokensync.providers.oauth2.client_auth import authenticate

TOKEN_URL = "https://idp.example/oauth/token"
SA_TOKEN = "eyJhbGciOiJSUzI1NiJ9.sa-token-payload.sa-token-signature"
CLIENT_SECRET = "never-sent-client-secret"
ACCOUNT = {"name": "idp-client", "audience": "https://idp.example"}


# --- certificates of the test's own, and the fake that requires one ----------------------------


def certificate(pair: KeyPair) -> ClientCertificate:
    return ClientCertificate(pair.cert_pem, pair.key_pem)


def pem_lines(*pairs: ClientCertificate) -> list[str]:
    return [
        line
        for pair in pairs
        for pem in (pair.certificate, pair.private_key)
        for line in pem.splitlines()
        if line and not line.startswith("-----")
    ]


CLIENTS = ("app-one", "app-two")


@pytest.fixture
def authority() -> CertificateAuthority:
    return CertificateAuthority.create("tokensync-test-clients")


@pytest.fixture
def server(tmp_path: Path, authority: CertificateAuthority) -> Iterator[FakeOAuth2Server]:
    """HTTPS with a certificate of ``authority``, which also signs the client certificates
    it requires (RFC 8705 tls_client_auth: each client known by its subject)."""
    ca_file = authority.write(tmp_path / "clients-ca.pem")
    cert_file, key_file = authority.server_cert().write(tmp_path, "server")
    tls = ServerTls(str(cert_file), str(key_file), client_ca_file=str(ca_file))
    with FakeOAuth2Server(tls=tls) as fake:
        for cn in CLIENTS:
            fake.add_client(cn, tls_subject=f"CN={cn}")
        yield fake


@pytest.fixture
async def http(server: FakeOAuth2Server, tmp_path: Path) -> AsyncIterator[HttpClient]:
    # The server certificate is signed by the same CA: trust it, and only that one host.
    client = HttpClient(
        EndpointPolicy(allowed_hosts=normalise_hosts([server.host])),
        ca_file=str(tmp_path / "clients-ca.pem"),
        timeout_s=5.0,
    )
    yield client
    await client.close()


async def post(
    http: HttpClient, server: FakeOAuth2Server, cn: str, pair: ClientCertificate | None
) -> Recorded:
    """A client_credentials request as ``cn``; what the server recorded of it, once it
    issued ``cn`` a token (so the certificate's subject is ``cn``'s)."""
    response = await http.request(
        "POST",
        server.token_url,
        official=False,
        data={"grant_type": "client_credentials", "client_id": cn},
        client_certificate=pair,
    )
    assert response.status == 200
    assert response.json()["access_token"] == server.issued_to(cn)[-1].value
    recorded = server.requests_from(cn)[-1]
    assert recorded.peer_subject == f"CN={cn}"
    return recorded


def refused_by_the_server(server: FakeOAuth2Server, reason: str) -> None:
    """The server itself refused the handshake, for ``reason`` (and only that once): not
    the client refusing the server. The client may see the alert before the server's
    thread has noted why it sent it."""
    wait_for(lambda: server.tls_failures == [reason], timeout_s=5, what=f"the server's {reason}")


async def test_a_client_certificate_is_presented_to_the_server(
    http: HttpClient, server: FakeOAuth2Server, authority: CertificateAuthority
) -> None:
    one = authority.client_cert("app-one")
    await post(http, server, "app-one", certificate(one))
    recorded = server.requests_from("app-one")
    assert [(r.peer_subject, r.peer_fingerprint) for r in recorded] == [
        ("CN=app-one", one.fingerprint)
    ]
    assert len(server.requests) == 1 and server.tls_failures == []


async def test_without_a_client_certificate_the_server_refuses(
    http: HttpClient, server: FakeOAuth2Server
) -> None:
    with pytest.raises(TransportFailure):
        await post(http, server, "app-one", None)
    refused_by_the_server(server, "PEER_DID_NOT_RETURN_A_CERTIFICATE")
    assert server.requests == []


async def test_the_shared_pool_never_carries_a_client_certificate(
    http: HttpClient, server: FakeOAuth2Server, authority: CertificateAuthority
) -> None:
    one = authority.client_cert("app-one")
    await post(http, server, "app-one", certificate(one))
    with pytest.raises(TransportFailure):
        await post(http, server, "app-one", None)
    refused_by_the_server(server, "PEER_DID_NOT_RETURN_A_CERTIFICATE")
    assert [r.peer_fingerprint for r in server.requests_from("app-one")] == [one.fingerprint]
    assert len(server.requests) == 1


async def test_each_certificate_gets_its_own_connections(
    http: HttpClient, server: FakeOAuth2Server, authority: CertificateAuthority
) -> None:
    one, two = authority.client_cert("app-one"), authority.client_cert("app-two")
    assert (await post(http, server, "app-one", certificate(one))).peer_fingerprint == (
        one.fingerprint
    )
    # A rotated certificate (or another client's): the server sees the new one at once,
    # not the one a pooled connection was opened with.
    assert (await post(http, server, "app-two", certificate(two))).peer_fingerprint == (
        two.fingerprint
    )
    assert (await post(http, server, "app-one", certificate(one))).peer_fingerprint == (
        one.fingerprint
    )
    assert (await post(http, server, "app-two", certificate(two))).peer_fingerprint == (
        two.fingerprint
    )
    with server.lock:
        seen = [Recorded(r, r.form["client_id"]) for r in server.requests]
    assert [(r.client_id, r.peer_subject, r.peer_fingerprint) for r in seen] == [
        ("app-one", "CN=app-one", one.fingerprint),
        ("app-two", "CN=app-two", two.fingerprint),
        ("app-one", "CN=app-one", one.fingerprint),
        ("app-two", "CN=app-two", two.fingerprint),
    ]
    assert server.tls_failures == []


async def test_a_certificate_of_another_authority_is_refused_by_the_server(
    http: HttpClient, server: FakeOAuth2Server
) -> None:
    stranger = CertificateAuthority.create("somebody-else").client_cert("app-one")
    with pytest.raises(TransportFailure):
        await post(http, server, "app-one", certificate(stranger))
    refused_by_the_server(server, "CERTIFICATE_VERIFY_FAILED")
    assert server.requests == []


async def test_a_pair_that_cannot_be_loaded_is_unsendable_and_not_shown(
    http: HttpClient, server: FakeOAuth2Server, authority: CertificateAuthority
) -> None:
    one_pair, two_pair = authority.client_cert("app-one"), authority.client_cert("app-two")
    one, two = certificate(one_pair), certificate(two_pair)
    pairs = [
        ClientCertificate(certificate=one.certificate, private_key=two.private_key),
        ClientCertificate(certificate=one.certificate, private_key="not a key"),
        ClientCertificate(certificate="not a certificate", private_key=one.private_key),
        ClientCertificate(certificate="", private_key=""),
    ]
    for pair in pairs:
        with pytest.raises(UnsendableRequest) as caught:
            await post(http, server, "app-one", pair)
        shown = f"{caught.value!s} {caught.value!r}"
        assert "cannot be loaded" in shown
        for line in pem_lines(one, two):
            assert line not in shown
        assert caught.value.__cause__ is None
        assert caught.value.__context__ is None or caught.value.__suppress_context__
    # Refused before any connection: no request, and no handshake either.
    assert server.requests == [] and server.tls_failures == []
    # A good pair still works after the bad ones.
    assert (await post(http, server, "app-one", one)).peer_fingerprint == one_pair.fingerprint


async def test_the_allowlist_is_checked_before_a_certificate_is_loaded(
    http: HttpClient, authority: CertificateAuthority
) -> None:
    unloadable = ClientCertificate(certificate="x", private_key="y")
    with pytest.raises(EndpointRefused):
        await http.request(
            "POST", "https://other.example/token", official=False, client_certificate=unloadable
        )


def test_a_client_certificate_never_shows_in_its_repr(authority: CertificateAuthority) -> None:
    pair = certificate(authority.client_cert("app-one"))
    for line in pem_lines(pair):
        assert line not in repr(pair)
    assert pair.fingerprint != certificate(authority.client_cert("app-one")).fingerprint


# --- client authentication without a secret -----------------------------------------------


@pytest.fixture
async def offline() -> AsyncIterator[HttpClient]:
    """For code that must send nothing: every endpoint is refused."""
    client = HttpClient(EndpointPolicy())
    yield client
    await client.close()


def request_for(http: HttpClient, spec: dict[str, Any], **extra: Any) -> Any:
    # Credentials a mode without a secret must never send, even when a Secret holds them.
    return mint_request(
        http,
        spec,
        {"clientId": "from-secret", "clientSecret": CLIENT_SECRET},
        now=datetime(2026, 11, 23, tzinfo=UTC),
        **extra,
    )


@pytest.mark.parametrize(
    ("client_id", "form"),
    [
        (
            "app",
            {
                "client_id": "app",
                "client_assertion_type": JWT_BEARER_ASSERTION,
                "client_assertion": SA_TOKEN,
            },
        ),
        (None, {"client_assertion_type": JWT_BEARER_ASSERTION, "client_assertion": SA_TOKEN}),
        ("", {"client_assertion_type": JWT_BEARER_ASSERTION, "client_assertion": SA_TOKEN}),
    ],
)
async def test_service_account_sends_the_token_as_the_client_assertion(
    offline: HttpClient, client_id: str | None, form: dict[str, str]
) -> None:
    assert JWT_BEARER_ASSERTION == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    spec: dict[str, Any] = {
        "tokenUrl": TOKEN_URL,
        "clientAuth": "service_account",
        "serviceAccountRef": ACCOUNT,
    }
    if client_id is not None:
        spec["clientId"] = client_id
    sent: dict[str, str] = {"grant_type": "client_credentials"}
    headers = {"Accept": "application/json"}
    connection = authenticate(
        request_for(offline, spec, service_account_token=SA_TOKEN), TOKEN_URL, sent, headers
    )
    assert sent == {"grant_type": "client_credentials", **form}
    assert headers == {"Accept": "application/json"}  # no Authorization
    assert connection == {}


async def test_tls_client_auth_sends_the_client_id_and_rides_on_the_certificate(
    offline: HttpClient,
) -> None:
    client_certificate = certificate(CertificateAuthority.create("ca").client_cert("app"))
    spec = {
        "tokenUrl": TOKEN_URL,
        "clientAuth": "tls_client_auth",
        "clientId": "app",
        "tlsSecretRef": {"name": "client-tls"},
    }
    sent: dict[str, str] = {"grant_type": "client_credentials"}
    headers: dict[str, str] = {}
    connection = authenticate(
        request_for(offline, spec, client_certificate=client_certificate),
        TOKEN_URL,
        sent,
        headers,
    )
    assert sent == {"grant_type": "client_credentials", "client_id": "app"}
    assert headers == {}
    assert connection == {"client_certificate": client_certificate}
    assert CLIENT_SECRET not in json.dumps([sent, headers])


@pytest.mark.parametrize(
    ("client_auth", "missing"),
    [("service_account", "ServiceAccount token"), ("tls_client_auth", "client certificate")],
)
async def test_a_mode_without_its_proof_is_credentials_incomplete(
    offline: HttpClient, client_auth: str, missing: str
) -> None:
    spec = {"tokenUrl": TOKEN_URL, "clientAuth": client_auth, "clientId": "app"}
    sent: dict[str, str] = {}
    with pytest.raises(CredentialsIncomplete, match=missing):
        authenticate(request_for(offline, spec), TOKEN_URL, sent, {})
    assert sent == {}


async def test_an_empty_service_account_token_is_no_token(offline: HttpClient) -> None:
    spec = {"tokenUrl": TOKEN_URL, "clientAuth": "service_account", "serviceAccountRef": ACCOUNT}
    with pytest.raises(CredentialsIncomplete):
        authenticate(request_for(offline, spec, service_account_token=""), TOKEN_URL, {}, {})


@pytest.mark.parametrize(
    ("grant", "revoke", "shareable"),
    [
        ("client_credentials", None, True),
        ("client_credentials", False, True),
        # A token a deletion revokes must not be in another ProviderToken's Secret.
        ("client_credentials", True, False),
        ("password", False, False),
        ("password", True, False),
        ("token_exchange", False, False),
    ],
)
def test_a_revocable_token_is_never_shared(
    grant: str, revoke: bool | None, shareable: bool
) -> None:
    spec: dict[str, Any] = {"tokenUrl": TOKEN_URL, "grantType": grant}
    if revoke is not None:
        spec["revokeOnDelete"] = revoke
    assert OAuth2().shareable(spec) is shareable
    assert OAuth2().revokes_on_delete(spec) is (revoke is True)


# --- RFC 8693 with a ServiceAccount token as the subject ------------------------------------

EXCHANGE = {
    "tokenUrl": TOKEN_URL,
    "grantType": "token_exchange",
    "subjectTokenSource": "serviceAccount",
    "serviceAccountRef": ACCOUNT,
}


@pytest.mark.parametrize(
    ("extra", "subject_type"),
    [
        ({}, JWT_TOKEN_TYPE),
        ({"subjectTokenType": ""}, JWT_TOKEN_TYPE),
        ({"subjectTokenType": ACCESS_TOKEN_TYPE}, ACCESS_TOKEN_TYPE),
        ({"subjectTokenType": "urn:example:custom"}, "urn:example:custom"),
    ],
)
async def test_the_service_account_token_is_the_subject_token(
    offline: HttpClient, extra: dict[str, str], subject_type: str
) -> None:
    assert JWT_TOKEN_TYPE == "urn:ietf:params:oauth:token-type:jwt"
    request = request_for(offline, {**EXCHANGE, **extra}, service_account_token=SA_TOKEN)
    assert OAuth2()._grant(request) == {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": SA_TOKEN,
        "subject_token_type": subject_type,
    }


async def test_the_exchange_carries_its_resource(offline: HttpClient) -> None:
    request = request_for(
        offline, {**EXCHANGE, "resource": "https://api.example"}, service_account_token=SA_TOKEN
    )
    assert OAuth2()._grant(request)["resource"] == "https://api.example"


async def test_a_subject_token_from_the_credentials_is_an_access_token_by_default(
    offline: HttpClient,
) -> None:
    spec = {"tokenUrl": TOKEN_URL, "grantType": "token_exchange"}
    # A ServiceAccount token at hand (another mode's) is not the subject here.
    request = mint_request(
        offline, spec, {"subjectToken": "from-secret"}, service_account_token=SA_TOKEN
    )
    assert OAuth2()._grant(request) == {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": "from-secret",
        "subject_token_type": ACCESS_TOKEN_TYPE,
    }


async def test_a_service_account_subject_without_a_token_is_credentials_incomplete(
    offline: HttpClient,
) -> None:
    with pytest.raises(CredentialsIncomplete):
        OAuth2()._grant(request_for(offline, EXCHANGE))


# --- revokeOnDelete: where the revocation goes, checked before anything is sent -------------


async def test_the_revocation_url_is_the_revocation_endpoint(offline: HttpClient) -> None:
    spec = {"tokenUrl": TOKEN_URL, "revokeOnDelete": True, "revocationUrl": TOKEN_URL + "/revoke"}
    now = datetime(2026, 11, 23, tzinfo=UTC)
    assert await OAuth2().revocation_endpoint(spec, offline, now) == TOKEN_URL + "/revoke"


async def test_revoke_on_delete_without_a_revocation_endpoint_is_refused_before_a_mint(
    offline: HttpClient,
) -> None:
    spec = {"tokenUrl": TOKEN_URL, "revokeOnDelete": True}
    with pytest.raises(InvalidSpec, match="revocationUrl"):
        await OAuth2().mint(request_for(offline, spec))


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_revocation_url_outside_the_allowlist_is_refused_before_a_mint(
    http_for: HttpFactory,
) -> None:
    # The token endpoint is allowlisted (and unreachable: reaching it would be
    # ProviderUnavailable); the revocation endpoint is not: refused first, nothing sent.
    port = _closed_port()
    token_url = f"http://127.0.0.1:{port}/oauth/token"
    http = http_for(f"127.0.0.1:{port}")
    spec = {
        "tokenUrl": token_url,
        "revokeOnDelete": True,
        "revocationUrl": "https://elsewhere.example/revoke",
    }
    credentials = {"clientId": "app", "clientSecret": CLIENT_SECRET}
    with pytest.raises(EndpointNotAllowed, match=r"elsewhere\.example"):
        await OAuth2().mint(mint_request(http, spec, credentials))
    # The same spec without revokeOnDelete does try the token endpoint.
    with pytest.raises(ProviderUnavailable):
        await OAuth2().mint(mint_request(http, {"tokenUrl": token_url}, credentials))


async def test_a_refused_client_certificate_is_described_as_a_tls_failure(
    http: HttpClient, server: FakeOAuth2Server
) -> None:
    stranger = CertificateAuthority.create("somebody-else").client_cert("app-one")
    with pytest.raises(TransportFailure) as caught:
        await post(http, server, "app-one", certificate(stranger))
    assert "TLS" in str(caught.value)
    refused_by_the_server(server, "CERTIFICATE_VERIFY_FAILED")
    assert server.requests == []


@pytest.mark.parametrize(
    ("client_auth", "expected"),
    [
        ("tls_client_auth", "https://mtls.idp.example/token"),
        ("client_secret_basic", "https://idp.example/token"),
    ],
)
async def test_mutual_tls_follows_the_discoverys_endpoint_aliases(
    client_auth: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 8705 5: a server may take client certificates on other hosts only."""
    document = {
        "token_endpoint": "https://idp.example/token",
        "revocation_endpoint": "https://idp.example/revoke",
        "mtls_endpoint_aliases": {
            "token_endpoint": "https://mtls.idp.example/token",
            "revocation_endpoint": "https://mtls.idp.example/revoke",
        },
    }
    provider = OAuth2()

    async def discovered(*_: object) -> dict[str, object]:
        return document

    monkeypatch.setattr(provider, "_discovery", discovered)
    spec = {"issuerUrl": "https://idp.example", "clientAuth": client_auth}
    now = datetime.now(UTC)
    http = HttpClient(EndpointPolicy())
    try:
        assert await provider.resolve_endpoint(spec, http, now) == expected
        revocation = await provider.revocation_endpoint(spec, http, now)
        assert revocation == expected.replace("/token", "/revoke")
    finally:
        await http.close()
