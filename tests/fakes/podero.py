"""Podero's token endpoint on loopback (django-oauth-toolkit style, JSON body)."""

from __future__ import annotations

import base64
import json

from fakes.base import FakeProvider, Request, Response

TOKEN_PATH = "/oauth2/token/"


class FakePodero(FakeProvider):
    provider = "podero"

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self.clients: dict[str, str] = {}
        self.lifetimes: dict[str, int] = {}  # client id -> token lifetime (s), else 10 h
        self.allowed_grants = {"client_credentials"}

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    def add_client(self, client_id: str, secret: str, lifetime_s: int | None = None) -> None:
        with self.lock:
            self.clients[client_id] = secret
            if lifetime_s is not None:
                self.lifetimes[client_id] = lifetime_s
            self.known_secrets.add(secret)

    def answer(self, request: Request) -> Response:
        if request.path != TOKEN_PATH:  # the trailing slash matters
            return Response(
                404, b"<html><body>Not Found</body></html>", {"Content-Type": "text/html"}
            )
        if request.method != "POST":
            return Response(405, {"detail": f'Method "{request.method}" not allowed.'})
        invalid_client = Response(
            401, {"error": "invalid_client"}, {"WWW-Authenticate": 'Bearer error="invalid_client"'}
        )
        header = request.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return invalid_client
        try:
            client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return invalid_client
        with self.lock:
            if self.clients.get(client_id) != secret:
                return invalid_client
        try:
            body = json.loads(request.body) if request.content_type == "application/json" else {}
        except ValueError:
            body = {}
        grant = body.get("grant_type") if isinstance(body, dict) else None
        if grant is None or grant not in {"client_credentials", "password", "authorization_code"}:
            return Response(400, {"error": "unsupported_grant_type"})
        if grant not in self.allowed_grants:
            return Response(400, {"error": "unauthorized_client"})
        if isinstance(body, dict) and body.get("scope") not in (
            None,
            "read write",
            "read",
            "write",
        ):
            return Response(400, {"error": "invalid_scope"})
        with self.lock:
            lifetime = self.lifetimes.get(client_id, 36000)
        issued = self.issue(client_id, lifetime_s=lifetime, grant=grant, opaque_length=30)
        return Response(
            200,
            {
                "access_token": issued.value,
                "expires_in": lifetime,
                "token_type": "Bearer",
                "scope": "read write",
            },
        )
