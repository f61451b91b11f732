"""Microshare: password grant with every parameter in the query string; pipe tokens.

Credentials keys: ``username``, ``password`` and ``apiKey`` (the app key from Manage ->
Keys, sent as ``client_id``). ``tokenKind: pipe`` mints a write-only token without time
limit: minted once, and again only when the credentials or the spec change. The request
URL carries the password: nothing here logs a URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, ClassVar

from tokensync.providers import common
from tokensync.providers.base import MintRequest, Token

AUTH_HOSTS = {
    "production": "https://auth.microshare.io",
    "development": "https://dauth.microshare.io",
}
ACCESS_TOKEN_LIFETIME = timedelta(hours=48)  # documented; the answer rarely says


def official_token_url(environment: str) -> str:
    return f"{AUTH_HOSTS[environment]}/oauth2/token"


class Microshare:
    name: ClassVar[str] = "microshare"

    def required_credentials(self, spec: Mapping[str, Any]) -> tuple[str, ...]:
        return ("username", "password", "apiKey")

    def shareable(self, spec: Mapping[str, Any]) -> bool:
        return True

    async def mint(self, request: MintRequest) -> Token:
        spec, credentials = request.spec, request.credentials
        url, official = common.endpoint(
            spec, official_token_url(str(spec.get("environment") or "production"))
        )
        pipe = spec.get("tokenKind") == "pipe"
        params = {
            "username": credentials["username"],
            "password": credentials["password"],
            "client_id": credentials["apiKey"],
            "grant_type": "pipe" if pipe else "password",
            "scope": str(spec.get("scope") or "ALL:ALL"),
        }
        token, _ = await common.request_token(
            request,
            url,
            official=official,
            provider_default=ACCESS_TOKEN_LIFETIME,
            never_expires=pipe,
            headers={"Accept": "application/json"},
            params=params,
        )
        return token
