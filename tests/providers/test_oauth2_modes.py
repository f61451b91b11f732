"""The oauth2 client authentications without a secret (issue 18): a ServiceAccount token
as the client assertion (RFC 7523), a client certificate on the connection (RFC 8705), a
ServiceAccount token as the RFC 8693 subject token; and mutual TLS in HttpClient itself,
against a real local TLS server that requires a client certificate."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from providers.conftest import HttpFactory, mint_request
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


# --- certificates of the test's own ---------------------------------------------------------


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class Authority:
    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = self._sign(self.name, self.key.public_key(), ca=True)

    def _sign(
        self,
        subject: x509.Name,
        public_key: ec.EllipticCurvePublicKey,
        *,
        ca: bool = False,
        usage: x509.ObjectIdentifier | None = None,
        ip: str | None = None,
    ) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if usage is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if ip is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                critical=False,
            )
        return builder.sign(self.key, hashes.SHA256())

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, cn: str, *, server: bool = False) -> ClientCertificate:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        cert = self._sign(
            subject, key.public_key(), usage=usage, ip="127.0.0.1" if server else None
        )
        return ClientCertificate(
            certificate=cert.public_bytes(serialization.Encoding.PEM).decode(),
            private_key=_pem(key),
        )


def pem_lines(*pairs: ClientCertificate) -> list[str]:
    return [
        line
        for pair in pairs
        for pem in (pair.certificate, pair.private_key)
        for line in pem.splitlines()
        if line and not line.startswith("-----")
    ]


# --- a TLS server that requires a client certificate ---------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: MtlsServer

    def setup(self) -> None:
        # The handshake in this request's thread, so a refused one holds nothing else up.
        self.request.do_handshake()
        super().setup()

    def do_POST(self) -> None:
        peer = self.request.getpeercert()
        subject = dict(item for part in peer["subject"] for item in part)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append(subject["commonName"])
        body = json.dumps({"cn": subject["commonName"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


class MtlsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, directory: Path, authority: Authority) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[str] = []
        self.refused = 0
        server = authority.issue("127.0.0.1", server=True)
        (directory / "server.pem").write_text(server.certificate + server.private_key)
        (directory / "clients-ca.pem").write_text(authority.cert_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory / "server.pem")
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=directory / "clients-ca.pem")
        self.socket = context.wrap_socket(
            self.socket, server_side=True, do_handshake_on_connect=False
        )
        self.port = self.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}/oauth/token"

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.refused += 1  # a handshake without an acceptable certificate


@pytest.fixture
def authority() -> Authority:
    return Authority("tokensync-test-clients")


@pytest.fixture
def server(tmp_path: Path, authority: Authority) -> Iterator[MtlsServer]:
    mtls = MtlsServer(tmp_path, authority)
    thread = threading.Thread(target=mtls.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield mtls
    finally:
        mtls.shutdown()
        mtls.server_close()
        thread.join(timeout=5)


@pytest.fixture
async def http(server: MtlsServer, tmp_path: Path) -> AsyncIterator[HttpClient]:
    # The server certificate is signed by the same CA: trust it, and only that one host.
    client = HttpClient(
        EndpointPolicy(allowed_hosts=normalise_hosts([f"127.0.0.1:{server.port}"])),
        ca_file=str(tmp_path / "clients-ca.pem"),
        timeout_s=5.0,
    )
    yield client
    await client.close()


async def post(
    http: HttpClient, server: MtlsServer, certificate: ClientCertificate | None
) -> dict[str, Any]:
    response = await http.request(
        "POST",
        server.url,
        official=False,
        data={"grant_type": "client_credentials", "client_id": "app"},
        client_certificate=certificate,
    )
    assert response.status == 200
    answer: dict[str, Any] = response.json()
    return answer


async def test_a_client_certificate_is_presented_to_the_server(
    http: HttpClient, server: MtlsServer, authority: Authority
) -> None:
    answer = await post(http, server, authority.issue("app-one"))
    assert answer == {"cn": "app-one"}
    assert server.seen == ["app-one"]


async def test_without_a_client_certificate_the_server_refuses(
    http: HttpClient, server: MtlsServer
) -> None:
    with pytest.raises(TransportFailure):
        await post(http, server, None)
    assert server.seen == []


async def test_the_shared_pool_never_carries_a_client_certificate(
    http: HttpClient, server: MtlsServer, authority: Authority
) -> None:
    await post(http, server, authority.issue("app-one"))
    with pytest.raises(TransportFailure):
        await post(http, server, None)
    assert server.seen == ["app-one"]


async def test_each_certificate_gets_its_own_connections(
    http: HttpClient, server: MtlsServer, authority: Authority
) -> None:
    one, two = authority.issue("app-one"), authority.issue("app-two")
    assert (await post(http, server, one))["cn"] == "app-one"
    # A rotated certificate (or another client's): the server sees the new one at once,
    # not the one a pooled connection was opened with.
    assert (await post(http, server, two))["cn"] == "app-two"
    assert (await post(http, server, one))["cn"] == "app-one"
    assert (await post(http, server, two))["cn"] == "app-two"
    assert server.seen == ["app-one", "app-two", "app-one", "app-two"]


async def test_a_certificate_of_another_authority_is_refused_by_the_server(
    http: HttpClient, server: MtlsServer
) -> None:
    stranger = Authority("somebody-else").issue("app-one")
    with pytest.raises(TransportFailure):
        await post(http, server, stranger)
    assert server.seen == []


async def test_a_pair_that_cannot_be_loaded_is_unsendable_and_not_shown(
    http: HttpClient, server: MtlsServer, authority: Authority
) -> None:
    one, two = authority.issue("app-one"), authority.issue("app-two")
    pairs = [
        ClientCertificate(certificate=one.certificate, private_key=two.private_key),
        ClientCertificate(certificate=one.certificate, private_key="not a key"),
        ClientCertificate(certificate="not a certificate", private_key=one.private_key),
        ClientCertificate(certificate="", private_key=""),
    ]
    for pair in pairs:
        with pytest.raises(UnsendableRequest) as caught:
            await post(http, server, pair)
        shown = f"{caught.value!s} {caught.value!r}"
        assert "cannot be loaded" in shown
        for line in pem_lines(one, two):
            assert line not in shown
        assert caught.value.__cause__ is None
        assert caught.value.__context__ is None or caught.value.__suppress_context__
    assert server.seen == []
    # A good pair still works after the bad ones.
    assert (await post(http, server, one))["cn"] == "app-one"


async def test_the_allowlist_is_checked_before_a_certificate_is_loaded(
    http: HttpClient, authority: Authority
) -> None:
    unloadable = ClientCertificate(certificate="x", private_key="y")
    with pytest.raises(EndpointRefused):
        await http.request(
            "POST", "https://other.example/token", official=False, client_certificate=unloadable
        )


def test_a_client_certificate_never_shows_in_its_repr(authority: Authority) -> None:
    pair = authority.issue("app-one")
    for line in pem_lines(pair):
        assert line not in repr(pair)
    assert pair.fingerprint != authority.issue("app-one").fingerprint


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
    certificate = Authority("ca").issue("app")
    spec = {
        "tokenUrl": TOKEN_URL,
        "clientAuth": "tls_client_auth",
        "clientId": "app",
        "tlsSecretRef": {"name": "client-tls"},
    }
    sent: dict[str, str] = {"grant_type": "client_credentials"}
    headers: dict[str, str] = {}
    connection = authenticate(
        request_for(offline, spec, client_certificate=certificate), TOKEN_URL, sent, headers
    )
    assert sent == {"grant_type": "client_credentials", "client_id": "app"}
    assert headers == {}
    assert connection == {"client_certificate": certificate}
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
    http: HttpClient, server: MtlsServer
) -> None:
    with pytest.raises(TransportFailure) as caught:
        await post(http, server, Authority("somebody-else").issue("app-one"))
    assert "TLS" in str(caught.value)


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
