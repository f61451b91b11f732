"""Microshare's auth server on loopback: parameters in the query string, pipe tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fakes.base import FakeProvider, Request, Response


@dataclass
class Account:
    password: str
    app_key: str
    lifetime_s: int | None = None  # set: this account's tokens last so long and say so


class FakeMicroshare(FakeProvider):
    provider = "microshare"

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self.accounts: dict[str, Account] = {}
        self.send_expires_in: int | None = None  # unconfirmed in their docs: off by default

    @property
    def token_url(self) -> str:
        return self.base_url + "/oauth2/token"

    def add_account(
        self, username: str, password: str, app_key: str, lifetime_s: int | None = None
    ) -> None:
        with self.lock:
            self.accounts[username] = Account(password, app_key, lifetime_s)
            self.known_secrets.update({password, app_key})

    def answer(self, request: Request) -> Response:
        if request.path != "/oauth2/token":
            return Response(404, {"error": "not found"})
        if request.method != "POST":
            return Response(405, {"error": "method not allowed"})
        params = request.query
        with self.lock:
            account = self.accounts.get(params.get("username", ""))
        if (
            account is None
            or account.password != params.get("password")
            or account.app_key != params.get("client_id")
        ):
            return Response(401, {"error": "unauthorized", "message": "Bad credentials"})
        grant = params.get("grant_type")
        extended: dict[str, Any] = {"user": {"email": params["username"]}, "org": {"id": "org-1"}}
        if grant == "pipe":
            issued = self.issue(params["username"], lifetime_s=None, grant="pipe", opaque_length=64)
            return Response(
                200,
                {
                    "token_type": "Pipe",
                    "access_token": issued.value,
                    "scope": "SHARE:WRITE",
                    "extended": extended,
                },
            )
        if grant != "password":
            return Response(400, {"error": "unsupported_grant_type"})
        said = account.lifetime_s or self.send_expires_in
        lifetime = said or 48 * 3600
        issued = self.issue(
            params["username"], lifetime_s=lifetime, grant="password", opaque_length=64
        )
        payload: dict[str, Any] = {"access_token": issued.value, "extended": extended}
        if said:
            payload["expires_in"] = said
            payload["token_type"] = "bearer"
        return Response(200, payload)
