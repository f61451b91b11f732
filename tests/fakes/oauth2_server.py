"""A standard OAuth2 / OIDC token endpoint on loopback (RFC 6749, 7523, 8693, discovery).

Steered per client (lifetime, outages, the client authentication it insists on) so that
tests sharing one server do not disturb each other.

Besides secrets and private_key_jwt it plays an identity provider that trusts a
Kubernetes cluster (Keycloak's federated client authentication, Entra ID workload identity
federation): a client may prove itself with a ServiceAccount token as its
``client_assertion``, or present one as the ``subject_token`` of a token exchange, and the
fake verifies it for real, against the JWKS the cluster's issuer publishes. Started with a
``ServerTls``, it serves HTTPS and authenticates clients by their certificate (RFC 8705
``tls_client_auth``). It revokes tokens at ``/oauth/revoke`` (RFC 7009).
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import jwt
from cryptography import x509

from fakes.base import FakeProvider, Issued, Request, Response, ServerTls
from fakes.federation import FederatedIdentity, FederationRefused, IssuerKeys

TOKEN_PATH = "/oauth/token"
REVOKE_PATH = "/oauth/revoke"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
AUTH_METHODS = (
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "tls_client_auth",
    "none",
)


@dataclass
class ClientBehaviour:
    secret: str = ""
    expires_in: int | None = 3600
    outage_until: float = 0.0
    outage_status: int = 503
    retry_after: str | None = None
    auth_method: str | None = None  # insist on one client authentication method
    public_key: Any = None  # for private_key_jwt
    users: dict[str, str] = field(default_factory=dict)
    subject_tokens: set[str] = field(default_factory=set)
    refresh_expires_in: int = 1800
    id_token: bool = False
    # Misbehaviour for fault tests: this answer instead of a token, and/or a slow answer.
    scripted: Response | None = None
    latency_s: float = 0.0
    # Keyless clients. ``federated``: authenticates with a ServiceAccount token as its
    # client_assertion (client_id optional: found by the token's sub, as Keycloak does).
    # ``federated_subject``: a token exchange's subject_token is such a token.
    # ``tls_subject``: authenticates by a client certificate with this subject DN
    # (RFC 4514, e.g. "CN=app"), RFC 8705 tls_client_auth.
    federated: FederatedIdentity | None = None
    federated_subject: FederatedIdentity | None = None
    tls_subject: str | None = None


@dataclass
class Recorded:
    """A request as the tests read it: who asked (client id) and what was on the wire."""

    request: Request
    client_id: str | None

    @property
    def assertion_claims(self) -> dict[str, Any] | None:
        """The claims of the ServiceAccount token that authenticated it, once verified."""
        claims: dict[str, Any] | None = self.request.notes.get("assertion_claims")
        return claims

    @property
    def subject_claims(self) -> dict[str, Any] | None:
        """The claims of the verified ServiceAccount token exchanged as subject_token."""
        claims: dict[str, Any] | None = self.request.notes.get("subject_claims")
        return claims

    @property
    def peer_fingerprint(self) -> str | None:
        """SHA-256 (hex) of the client certificate presented on the TLS connection."""
        cert = self.request.peer_cert
        return hashlib.sha256(cert).hexdigest() if cert is not None else None

    @property
    def peer_subject(self) -> str | None:
        cert = self.request.peer_cert
        return _subject(cert) if cert is not None else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.request, name)


@dataclass
class Revocation:
    """One call of the revocation endpoint, as the tests read it."""

    client_id: str | None
    token_type_hint: str | None
    known: bool  # a token this server issued
    kind: str | None  # "refresh_token" or "access_token"; None when unknown
    revoked: bool  # it was the caller's and is now unusable
    status: int  # what the endpoint answered
    at: float
    token: str = field(repr=False)


def _subject(der: bytes) -> str:
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


class FakeOAuth2Server(FakeProvider):
    provider = "oauth2"

    def __init__(self, port: int = 0, tls: ServerTls | None = None) -> None:
        super().__init__(port, tls)
        self.clients: dict[str, ClientBehaviour] = {}
        self.refresh_tokens: dict[str, tuple[str, float]] = {}  # token -> (client, expiry)
        # Every refresh token ever issued and its client: a spent or revoked one is still
        # "one it issued" for revocation, and still a secret for the leak scan.
        self.refresh_token_owners: dict[str, str] = {}
        self.used_assertion_ids: set[str] = set()
        self.discovery_requests = 0
        # Federation: the cluster issuers' JWKS, cached per issuer as a real IdP does.
        self.issuers = IssuerKeys()
        # The fake's clock runs this far ahead when checking a token's exp (an expired
        # ServiceAccount token cannot be had: TokenRequest's minimum lifetime is 10 min).
        self.clock_offset_s = 0.0
        # Revocation (RFC 7009).
        self.revocations: list[Revocation] = []
        self.revoked_access_tokens: set[str] = set()
        self.revocation_failure: Response | None = None

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    @property
    def revocation_url(self) -> str:
        return self.base_url + REVOKE_PATH

    @property
    def issuer(self) -> str:
        return self.base_url

    def add_client(self, client_id: str, secret: str = "", **behaviour: Any) -> ClientBehaviour:
        """Register a client; ``behaviour`` sets ``ClientBehaviour`` fields, e.g.
        ``federated=FederatedIdentity(...)``, ``tls_subject="CN=app"``."""
        with self.lock:
            self.clients[client_id] = ClientBehaviour(secret=secret, **behaviour)
            self.known_secrets.add(secret)
            for password in self.clients[client_id].users.values():
                self.known_secrets.add(password)
            return self.clients[client_id]

    def outage(self, client_id: str, seconds: float, status: int = 503) -> None:  # type: ignore[override]
        with self.lock:
            self.clients[client_id].outage_until = time.time() + seconds
            self.clients[client_id].outage_status = status

    def misbehave(
        self, client_id: str, answer: Response | None = None, latency_s: float = 0.0
    ) -> None:
        """Answer this client with ``answer`` (None: behave) after ``latency_s``."""
        with self.lock:
            self.clients[client_id].scripted = answer
            self.clients[client_id].latency_s = latency_s

    def revocation_outage(self, status: int | None = 503) -> None:
        """Answer every revocation request with ``status`` (None: revoke again)."""
        with self.lock:
            self.revocation_failure = (
                None if status is None else Response(status, {"error": "temporarily_unavailable"})
            )

    def is_revoked(self, token: str) -> bool:
        with self.lock:
            return token in self.revoked_access_tokens or (
                token in self.refresh_token_owners and token not in self.refresh_tokens
            )

    def revocations_by(self, client_id: str) -> list[Revocation]:
        with self.lock:
            return [r for r in self.revocations if r.client_id == client_id]

    def requests_from(self, client_id: str) -> list[Recorded]:
        with self.lock:
            recorded = [Recorded(r, self._client_id(r)) for r in self.requests]
        return [r for r in recorded if r.client_id == client_id]

    def every_secret(self) -> Iterator[str]:
        yield from super().every_secret()
        with self.lock:
            yield from list(self.refresh_tokens)
            yield from list(self.refresh_token_owners)
            for client in self.clients.values():
                yield from client.subject_tokens

    @staticmethod
    def _basic(request: Request) -> tuple[str, str] | None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("basic "):
            return None
        try:
            decoded = base64.b64decode(header.split(" ", 1)[1]).decode()
        except ValueError:
            return None
        client_id, _, secret = decoded.partition(":")
        return unquote_plus(client_id), unquote_plus(secret)

    def _client_id(self, request: Request) -> str | None:
        basic = self._basic(request)
        if basic:
            return basic[0]
        form = request.form
        if "client_id" in form:
            return form["client_id"]
        # Keycloak style: a federated client sends no client_id; its assertion's sub (and
        # iss) name it. Only a lookup: the assertion is verified before anything is issued.
        assertion = form.get("client_assertion")
        return self._federated_client_for(assertion) if assertion else None

    def _federated_client_for(self, assertion: str) -> str | None:
        try:
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None
        with self.lock:
            for client_id, client in self.clients.items():
                identity = client.federated
                if (
                    identity is not None
                    and identity.subject == claims.get("sub")
                    and identity.issuer == claims.get("iss")
                ):
                    return client_id
        return None

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "token_endpoint": self.token_url,
            "revocation_endpoint": self.revocation_url,
            "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
            "revocation_endpoint_auth_methods_supported": list(AUTH_METHODS),
        }

    def answer(self, request: Request) -> Response:
        if request.path == "/.well-known/openid-configuration" and request.method == "GET":
            with self.lock:
                self.discovery_requests += 1
            return Response(200, self.discovery())
        if request.path not in (TOKEN_PATH, REVOKE_PATH):
            return Response(404, {"error": "not_found"})
        if request.method != "POST":
            return Response(405, {"error": "invalid_request"})
        # Whatever a client sends as a credential is a secret for the leak scan, whether
        # it is accepted or not.
        with self.lock:
            for name in ("client_assertion", "subject_token", "token"):
                if request.form.get(name):
                    self.known_secrets.add(request.form[name])
        if request.path == REVOKE_PATH:
            return self._revocation(request)
        client_id = self._client_id(request)
        with self.lock:
            client = self.clients.get(client_id or "")
            if client is not None and client.outage_until > time.time():
                headers = {"Retry-After": client.retry_after} if client.retry_after else {}
                return Response(client.outage_status, {"error": "temporarily_unavailable"}, headers)
            scripted, latency = (client.scripted, client.latency_s) if client else (None, 0.0)
        if latency:
            time.sleep(latency)
        if scripted is not None:
            return scripted
        if request.content_type != "application/x-www-form-urlencoded":
            return Response(400, {"error": "invalid_request", "error_description": "form body"})
        if client is None:
            return Response(401, {"error": "invalid_client"})
        refused = self._authenticate(request, client, client_id or "")
        if refused is not None:
            return refused
        return self._grant(request, client, client_id or "")

    def _authenticate(
        self, request: Request, client: ClientBehaviour, client_id: str
    ) -> Response | None:
        form = request.form
        basic = self._basic(request)
        if client.federated is not None or client.tls_subject is not None:
            return self._authenticate_keyless(request, client, basic is not None)
        if basic:
            method, secret = "client_secret_basic", basic[1]
        elif "client_assertion" in form:
            method, secret = "private_key_jwt", None
        elif "client_secret" in form:
            method, secret = "client_secret_post", form["client_secret"]
        else:
            method, secret = "none", None
        if client.auth_method and client.auth_method != method:
            return Response(401, {"error": "invalid_client", "error_description": "auth method"})
        if method == "private_key_jwt":
            return self._check_assertion(form, client, client_id, request.path)
        if method == "none":
            return (
                None if client.auth_method == "none" else Response(401, {"error": "invalid_client"})
            )
        if secret != client.secret:
            return Response(401, {"error": "invalid_client", "error_description": "bad secret"})
        return None

    def _authenticate_keyless(
        self, request: Request, client: ClientBehaviour, basic: bool
    ) -> Response | None:
        """A client with no secret at all: a ServiceAccount token or a certificate."""
        form = request.form
        if basic or "client_secret" in form:
            return _invalid_client("this client authenticates without a secret")
        if "client_assertion" in form:
            if client.federated is None:
                return _invalid_client("this client sends no client_assertion")
            if form.get("client_assertion_type") != JWT_BEARER:
                return _invalid_client("client_assertion_type")
            try:
                claims = self.verify_service_account_token(
                    form["client_assertion"], client.federated
                )
            except FederationRefused as refused:
                return _invalid_client(f"client_assertion refused: {refused}")
            request.notes["assertion_claims"] = claims
            return None
        if client.tls_subject is not None:
            # RFC 8705 2.1: client_id is a parameter; the handshake proved the key.
            if "client_id" not in form:
                return _invalid_client("client_id is required with tls_client_auth")
            if request.peer_cert is None:
                return _invalid_client("no client certificate on the connection")
            if _subject(request.peer_cert) != client.tls_subject:
                return _invalid_client("the client certificate's subject does not match")
            return None
        return _invalid_client("no client authentication")

    def verify_service_account_token(
        self, token: str, identity: FederatedIdentity
    ) -> dict[str, Any]:
        """The claims of ``token`` if ``identity``'s issuer signed it for ``identity``."""
        return self.issuers.verify(token, identity, now=time.time() + self.clock_offset_s)

    @property
    def jwks_fetches(self) -> int:
        return self.issuers.fetches

    def _check_assertion(
        self, form: dict[str, str], client: ClientBehaviour, client_id: str, path: str
    ) -> Response | None:
        if form.get("client_assertion_type") != JWT_BEARER or client.public_key is None:
            return Response(401, {"error": "invalid_client"})
        try:
            claims = jwt.decode(
                form["client_assertion"],
                client.public_key,
                algorithms=["RS256", "ES256"],
                # The URL called, as Okta and Keycloak check it: the token endpoint's for a
                # token, the revocation endpoint's for a revocation.
                audience=self.base_url + path,
            )
        except jwt.PyJWTError as error:
            return Response(401, {"error": "invalid_client", "error_description": str(error)})
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            return Response(401, {"error": "invalid_client", "error_description": "iss/sub"})
        with self.lock:
            if claims.get("jti") in self.used_assertion_ids:
                return Response(401, {"error": "invalid_client", "error_description": "jti reuse"})
            self.used_assertion_ids.add(str(claims.get("jti")))
        return None

    def _grant(self, request: Request, client: ClientBehaviour, client_id: str) -> Response:
        form = request.form
        grant = form.get("grant_type")
        if grant == "password":
            if client.users.get(form.get("username", "")) != form.get("password"):
                return Response(
                    401, {"error": "invalid_grant", "error_description": "Invalid credentials"}
                )
        elif grant == TOKEN_EXCHANGE:
            if client.federated_subject is not None:
                if form.get("subject_token_type") != JWT_TOKEN_TYPE:
                    return Response(
                        400, {"error": "invalid_request", "error_description": "subject type"}
                    )
                try:
                    subject_claims = self.verify_service_account_token(
                        form.get("subject_token", ""), client.federated_subject
                    )
                except FederationRefused as refused:
                    return Response(
                        400,
                        {"error": "invalid_grant", "error_description": f"subject: {refused}"},
                    )
                request.notes["subject_claims"] = subject_claims
            elif form.get("subject_token") not in client.subject_tokens:
                return Response(400, {"error": "invalid_grant", "error_description": "subject"})
        elif grant == "refresh_token":
            with self.lock:
                owner, expiry = self.refresh_tokens.pop(form.get("refresh_token", ""), ("", 0.0))
            if owner != client_id or expiry < time.time():
                return Response(400, {"error": "invalid_grant", "error_description": "Stale token"})
        elif grant != "client_credentials":
            return Response(400, {"error": "unsupported_grant_type"})
        exchanged: dict[str, Any] | None = request.notes.get("subject_claims")
        if exchanged is not None:
            # The exchanged token speaks for the ServiceAccount, on behalf of the client.
            about = {"sub": exchanged["sub"], "client_id": client_id}
            if form.get("audience"):
                about["aud"] = form["audience"]
            issued = self.issue(
                client_id, lifetime_s=client.expires_in, grant=str(grant), jwt_claims=about
            )
        else:
            issued = self.issue(client_id, lifetime_s=client.expires_in, grant=str(grant))
        payload: dict[str, Any] = {"access_token": issued.value, "token_type": "Bearer"}
        if client.expires_in:
            payload["expires_in"] = client.expires_in
        if form.get("scope"):
            payload["scope"] = form["scope"]
        if grant in ("password", "refresh_token"):
            refresh = self.issue(client_id, lifetime_s=client.refresh_expires_in, grant="refresh")
            with self.lock:
                self.issued.remove(refresh)
                self.refresh_tokens[refresh.value] = (client_id, refresh.expires_at or 0.0)
                self.refresh_token_owners[refresh.value] = client_id
            payload["refresh_token"] = refresh.value
            payload["refresh_expires_in"] = client.refresh_expires_in
        # OpenID Connect: an id_token only for the openid scope (Keycloak, Entra ID, Okta).
        if client.id_token and "openid" in form.get("scope", "").split():
            payload["id_token"] = self.issue(
                client_id,
                lifetime_s=client.expires_in,
                grant="id_token",
                jwt_claims={"sub": client_id, "aud": client_id},
            ).value
        return Response(200, payload)

    def grants(self, client_id: str) -> list[str]:
        return [i.grant for i in self.issued_to(client_id) if i.grant != "id_token"]

    def _revocation(self, request: Request) -> Response:
        """RFC 7009: the client authenticates as at the token endpoint; 200 for any token
        (an unknown one included, 2.2); only the caller's own token is revoked."""
        client_id = self._client_id(request)
        form = request.form
        token = form.get("token", "")
        with self.lock:
            failure = self.revocation_failure
            client = self.clients.get(client_id or "")
        answer: Response | None = failure
        if answer is None and request.content_type != "application/x-www-form-urlencoded":
            answer = Response(400, {"error": "invalid_request", "error_description": "form body"})
        if answer is None and client is None:
            answer = _invalid_client("unknown client")
        if answer is None and client is not None:
            answer = self._authenticate(request, client, client_id or "")
        if answer is None and not token:
            answer = Response(400, {"error": "invalid_request", "error_description": "token"})
        with self.lock:
            kind, owner = self._token_kind(token)
            revoked = answer is None and kind is not None and owner == client_id
            if revoked and kind == "refresh_token":
                self.refresh_tokens.pop(token, None)
            elif revoked:
                self.revoked_access_tokens.add(token)
            answer = answer or Response(200, b"")
            self.revocations.append(
                Revocation(
                    client_id=client_id,
                    token_type_hint=form.get("token_type_hint"),
                    known=kind is not None,
                    kind=kind,
                    revoked=revoked,
                    status=answer.status,
                    at=request.at,
                    token=token,
                )
            )
        return answer

    def _token_kind(self, token: str) -> tuple[str | None, str | None]:
        """("refresh_token" or "access_token", its client) for a token issued here."""
        if token in self.refresh_token_owners:
            return "refresh_token", self.refresh_token_owners[token]
        for issued in self.issued:
            if issued.value == token and issued.grant != "id_token":
                return "access_token", issued.subject
        return None, None


def _invalid_client(description: str) -> Response:
    return Response(401, {"error": "invalid_client", "error_description": description})


def main() -> None:
    """``make fake-oauth2`` (PYTHONPATH=tests python -m fakes.oauth2_server --port 9400)."""
    import argparse
    import contextlib

    parser = argparse.ArgumentParser(description="A fake OAuth2 token endpoint on loopback.")
    parser.add_argument("--port", type=int, default=9400)
    parser.add_argument("--client", action="append", default=[], metavar="ID:SECRET")
    parser.add_argument("--expires-in", type=int, default=300)
    parser.add_argument(
        "--federated",
        action="append",
        default=[],
        metavar="ID=NAMESPACE/SERVICEACCOUNT@AUDIENCE",
        help="a keyless client: a token of that ServiceAccount, for that audience, from "
        "--issuer is its client assertion (clientAuth service_account)",
    )
    parser.add_argument("--issuer", help="the cluster's service-account issuer URL")
    parser.add_argument("--issuer-ca", help="the CA file of the issuer's TLS certificate")
    args = parser.parse_args()
    if args.federated and not (args.issuer and args.issuer_ca):
        parser.error("--federated needs --issuer and --issuer-ca")
    server = FakeOAuth2Server(port=args.port)
    for pair in args.client or ([] if args.federated else ["demo:demo-secret"]):
        client_id, _, secret = pair.partition(":")
        server.add_client(client_id, secret, expires_in=args.expires_in)
    for entry in args.federated:
        client_id, _, rest = entry.partition("=")
        account, _, audience = rest.partition("@")
        namespace, _, name = account.partition("/")
        identity = FederatedIdentity(
            args.issuer, args.issuer_ca, f"system:serviceaccount:{namespace}:{name}", audience
        )
        server.add_client(client_id, expires_in=args.expires_in, federated=identity)
    print(f"fake OAuth2 token endpoint: {server.token_url}", flush=True)
    with server, contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()


if __name__ == "__main__":
    main()


__all__ = ["FakeOAuth2Server", "Issued"]
