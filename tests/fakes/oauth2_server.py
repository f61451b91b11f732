"""A standard OAuth2 / OIDC token endpoint on loopback (RFC 6749, 7523, 8693, discovery).

Steered per client (lifetime, outages, the client authentication it insists on) so that
tests sharing one server do not disturb each other.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import jwt

from fakes.base import FakeProvider, Issued, Request, Response

TOKEN_PATH = "/oauth/token"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


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


@dataclass
class Recorded:
    """A request as the tests read it: who asked (client id) and what was on the wire."""

    request: Request
    client_id: str | None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.request, name)


class FakeOAuth2Server(FakeProvider):
    provider = "oauth2"

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self.clients: dict[str, ClientBehaviour] = {}
        self.refresh_tokens: dict[str, tuple[str, float]] = {}  # token -> (client, expiry)
        self.used_assertion_ids: set[str] = set()
        self.discovery_requests = 0

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    @property
    def issuer(self) -> str:
        return self.base_url

    def add_client(self, client_id: str, secret: str = "", **behaviour: Any) -> ClientBehaviour:
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

    def requests_from(self, client_id: str) -> list[Recorded]:
        with self.lock:
            recorded = [Recorded(r, self._client_id(r)) for r in self.requests]
        return [r for r in recorded if r.client_id == client_id]

    def every_secret(self) -> Iterator[str]:
        yield from super().every_secret()
        with self.lock:
            yield from list(self.refresh_tokens)
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
        return basic[0] if basic else request.form.get("client_id")

    def answer(self, request: Request) -> Response:
        if request.path == "/.well-known/openid-configuration" and request.method == "GET":
            with self.lock:
                self.discovery_requests += 1
            return Response(200, {"issuer": self.issuer, "token_endpoint": self.token_url})
        if request.path != TOKEN_PATH:
            return Response(404, {"error": "not_found"})
        if request.method != "POST":
            return Response(405, {"error": "invalid_request"})
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
            return self._check_assertion(form, client, client_id)
        if method == "none":
            return (
                None if client.auth_method == "none" else Response(401, {"error": "invalid_client"})
            )
        if secret != client.secret:
            return Response(401, {"error": "invalid_client", "error_description": "bad secret"})
        return None

    def _check_assertion(
        self, form: dict[str, str], client: ClientBehaviour, client_id: str
    ) -> Response | None:
        if form.get("client_assertion_type") != JWT_BEARER or client.public_key is None:
            return Response(401, {"error": "invalid_client"})
        try:
            claims = jwt.decode(
                form["client_assertion"],
                client.public_key,
                algorithms=["RS256", "ES256"],
                audience=self.token_url,
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
            if form.get("subject_token") not in client.subject_tokens:
                return Response(400, {"error": "invalid_grant", "error_description": "subject"})
        elif grant == "refresh_token":
            with self.lock:
                owner, expiry = self.refresh_tokens.pop(form.get("refresh_token", ""), ("", 0.0))
            if owner != client_id or expiry < time.time():
                return Response(400, {"error": "invalid_grant", "error_description": "Stale token"})
        elif grant != "client_credentials":
            return Response(400, {"error": "unsupported_grant_type"})
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


def main() -> None:
    """``make fake-oauth2`` (PYTHONPATH=tests python -m fakes.oauth2_server --port 9400)."""
    import argparse
    import contextlib

    parser = argparse.ArgumentParser(description="A fake OAuth2 token endpoint on loopback.")
    parser.add_argument("--port", type=int, default=9400)
    parser.add_argument("--client", action="append", default=[], metavar="ID:SECRET")
    parser.add_argument("--expires-in", type=int, default=300)
    args = parser.parse_args()
    server = FakeOAuth2Server(port=args.port)
    for pair in args.client or ["demo:demo-secret"]:
        client_id, _, secret = pair.partition(":")
        server.add_client(client_id, secret, expires_in=args.expires_in)
    print(f"fake OAuth2 token endpoint: {server.token_url}", flush=True)
    with server, contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()


if __name__ == "__main__":
    main()


__all__ = ["FakeOAuth2Server", "Issued"]
