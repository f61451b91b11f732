"""Biotz's Keycloak realm on loopback: password and refresh grants, Keycloak's error shapes."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fakes.base import FakeProvider, Request, Response

REALM_TOKEN_PATH = "/realms/biotz-platform/protocol/openid-connect/token"
# Every realm answers, so a test can move a ProviderToken to another endpoint and see what
# the operator sends there. Sessions are shared across realms here (Keycloak's are not):
# the fake records what was sent; refusing it is the operator's job.
_ANY_REALM_TOKEN_PATH = re.compile(r"/realms/[^/]+/protocol/openid-connect/token")
CLIENTS = {"biotz-platform-devices", "biotz-platform-programmatic-users"}


@dataclass
class User:
    password: str
    enabled: bool = True
    set_up: bool = True
    locked: bool = False
    access_lifetime: int | None = None  # this user's access/id token lifetime, else the realm's


@dataclass
class Session:
    user: str
    refresh_expires_at: float
    current_refresh: str
    active: bool = True
    old: tuple[str, ...] = ()


@dataclass
class KeycloakState:
    users: dict[str, User] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)


class FakeKeycloak(FakeProvider):
    provider = "biotz"

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self.state = KeycloakState()
        self.access_lifetime = 300
        self.refresh_lifetime = 1800
        self.rotate_refresh_tokens = True  # Keycloak's "Revoke Refresh Token"

    @property
    def token_url(self) -> str:
        return self.base_url + REALM_TOKEN_PATH

    def add_user(self, username: str, password: str, **flags: Any) -> User:
        with self.lock:
            self.state.users[username] = User(password, **flags)
            self.known_secrets.add(password)
            return self.state.users[username]

    def grants(self, username: str) -> list[str]:
        return [
            i.grant for i in self.issued_to(username) if i.grant in ("password", "refresh_token")
        ]

    def end_sessions(self, username: str) -> None:
        with self.lock:
            for session in self.state.sessions.values():
                if session.user == username:
                    session.active = False

    def realm_token_url(self, realm: str) -> str:
        return f"{self.base_url}/realms/{realm}/protocol/openid-connect/token"

    def answer(self, request: Request) -> Response:
        if not _ANY_REALM_TOKEN_PATH.fullmatch(request.path):
            return Response(404, {"error": "Unable to find matching target resource method"})
        if request.method != "POST":
            return Response(405, {"error": "RESTEASY003650: No resource method found"})
        # Keycloak reads form parameters only: JSON or multipart leaves them all missing.
        form = request.form if request.content_type == "application/x-www-form-urlencoded" else {}
        grant = form.get("grant_type")
        if not grant:
            return Response(
                400,
                {
                    "error": "invalid_request",
                    "error_description": "Missing form parameter: grant_type",
                },
            )
        if form.get("client_id") not in CLIENTS:
            return Response(
                401, {"error": "invalid_client", "error_description": "Invalid client credentials"}
            )
        issuer = self.base_url + request.path.removesuffix("/protocol/openid-connect/token")
        if grant == "password":
            return self._password(form, issuer)
        if grant == "refresh_token":
            return self._refresh(form, issuer)
        return Response(
            400, {"error": "unsupported_grant_type", "error_description": "Unsupported grant_type"}
        )

    def _password(self, form: dict[str, str], issuer: str) -> Response:
        username = form.get("username", "")
        with self.lock:
            user = self.state.users.get(username)
        if user is None or user.locked or user.password != form.get("password"):
            return Response(
                400, {"error": "invalid_grant", "error_description": "Invalid user credentials"}
            )
        if not user.enabled:
            return Response(
                400, {"error": "invalid_grant", "error_description": "Account disabled"}
            )
        if not user.set_up:
            return Response(
                400, {"error": "invalid_grant", "error_description": "Account is not fully set up"}
            )
        session_id = str(uuid.uuid4())
        return self._tokens(username, session_id, "password", form, issuer)

    def _refresh(self, form: dict[str, str], issuer: str) -> Response:
        presented = form.get("refresh_token", "")
        with self.lock:
            session_id, session = next(
                (
                    (sid, s)
                    for sid, s in self.state.sessions.items()
                    if presented == s.current_refresh or presented in s.old
                ),
                ("", None),
            )
            if session is None:
                return Response(
                    400, {"error": "invalid_grant", "error_description": "Invalid refresh token"}
                )
            if not session.active:
                return Response(
                    400, {"error": "invalid_grant", "error_description": "Session not active"}
                )
            if session.refresh_expires_at < time.time():
                return Response(
                    400, {"error": "invalid_grant", "error_description": "Token is not active"}
                )
            if self.rotate_refresh_tokens and presented != session.current_refresh:
                return Response(400, {"error": "invalid_grant", "error_description": "Stale token"})
            username = session.user
        return self._tokens(
            username, session_id, "refresh_token", {**form, "scope": "openid"}, issuer
        )

    def _tokens(
        self, username: str, session_id: str, grant: str, form: dict[str, str], issuer: str
    ) -> Response:
        scope = form.get("scope", "")
        with self.lock:
            user = self.state.users.get(username)
        lifetime = (user.access_lifetime if user else None) or self.access_lifetime
        claims = {"sub": username, "sid": session_id, "azp": form["client_id"], "iss": issuer}
        access = self.issue(username, lifetime_s=lifetime, grant=grant, jwt_claims=claims)
        payload: dict[str, Any] = {
            "access_token": access.value,
            "expires_in": lifetime,
            "refresh_expires_in": self.refresh_lifetime,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "session_state": session_id,
            "scope": "openid profile email",
        }
        if "openid" in scope.split():
            payload["id_token"] = self.issue(
                username,
                lifetime_s=lifetime,
                grant="id_token",
                jwt_claims={**claims, "typ": "ID"},
            ).value
        refresh = self.issue(
            username,
            lifetime_s=self.refresh_lifetime,
            grant="refresh",
            jwt_claims={**claims, "typ": "Refresh"},
        )
        with self.lock:
            self.issued.remove(refresh)
            self.known_secrets.add(refresh.value)
            previous = self.state.sessions.get(session_id)
            old = (*previous.old, previous.current_refresh) if previous is not None else ()
            self.state.sessions[session_id] = Session(
                username, time.time() + self.refresh_lifetime, refresh.value, old=old
            )
        payload["refresh_token"] = refresh.value
        return Response(200, payload)
