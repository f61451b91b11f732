"""Basiq's /token on loopback: API key as issued, version header, list-format errors."""

from __future__ import annotations

import base64
import uuid
from typing import Any

from fakes.base import FakeProvider, Request, Response


def api_key() -> str:
    """Keys are issued as base64 of ``uuid:uuid``; clients must send them as they are."""
    return base64.b64encode(f"{uuid.uuid4()}:{uuid.uuid4()}".encode()).decode()


def error(status: int, code: str, title: str, detail: str) -> Response:
    return Response(
        status,
        {
            "type": "list",
            "correlationId": str(uuid.uuid4()),
            "data": [
                {"type": "error", "code": code, "title": title, "detail": detail, "source": {}}
            ],
        },
    )


class FakeBasiq(FakeProvider):
    provider = "basiq"

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self.keys: dict[str, str] = {}  # key -> name
        self.disabled: set[str] = set()
        self.lifetimes: dict[str, int] = {}  # key name -> token lifetime (s), else 1 h
        self.rate_limit = (1500, 300.0)  # Basiq's documented /token limit

    @property
    def token_url(self) -> str:
        return self.base_url + "/token"

    def add_key(self, name: str, lifetime_s: int | None = None) -> str:
        key = api_key()
        with self.lock:
            self.keys[key] = name
            if lifetime_s is not None:
                self.lifetimes[name] = lifetime_s
            self.known_secrets.add(key)
        return key

    def rate_limited_body(self) -> Any:
        return error(429, "too-many-requests", "Too Many Requests", "Rate limit exceeded").body

    def answer(self, request: Request) -> Response:
        if request.path != "/token" or request.method != "POST":
            return error(404, "resource-not-found", "Resource not found", "Unknown path")
        header = request.headers.get("authorization", "")
        if not header.startswith("Basic ") or not header[6:].strip():
            return error(
                400,
                "parameter-not-supplied",
                "Required header not supplied",
                "Authorization header is missing or invalid",
            )
        if "basiq-version" not in request.headers:
            return error(
                400,
                "parameter-not-supplied",
                "Required header not supplied",
                "basiq-version header is required",
            )
        key = header[6:].strip()
        with self.lock:
            name = self.keys.get(key)
            disabled = key in self.disabled
            lifetime = self.lifetimes.get(name or "", 3600)
        if name is None:
            return error(
                404,
                "resource-not-found",
                "Requested resource is not found",
                "Unable to authenticate. Please, check your API key",
            )
        if disabled:
            return error(403, "forbidden-access", "Forbidden Access", "Account is disabled")
        form = request.form
        scope = form.get("scope", "SERVER_ACCESS")
        if scope not in ("SERVER_ACCESS", "CLIENT_ACCESS"):
            return error(400, "parameter-not-valid", "Parameter value is not valid", "scope")
        if scope == "CLIENT_ACCESS" and not form.get("userId"):
            return error(400, "parameter-not-supplied", "Required parameter", "userId is required")
        issued = self.issue(
            name,
            lifetime_s=lifetime,
            grant=scope,
            jwt_claims={"partnerid": name, "scope": scope, "userId": form.get("userId")},
        )
        return Response(
            200, {"access_token": issued.value, "token_type": "Bearer", "expires_in": lifetime}
        )
