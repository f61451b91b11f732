"""Microshare: password grant with every parameter in the query string; pipe tokens.

The ``apiKey`` credential is the app key from Manage -> Keys, sent as ``client_id``.
``tokenKind: pipe`` mints a write-only token without time limit: minted once, and again
only when the credentials or the spec change. The request URL carries the password:
nothing here logs a URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, ClassVar

from tokensync.providers import token_endpoint
from tokensync.providers.base import MintRequest, Provider, Token
from tokensync.providers.spec import TOKEN_URL, Credential, Field, SpecBlock

AUTH_HOSTS = {
    "production": "https://auth.microshare.io",
    "development": "https://dauth.microshare.io",
}
ACCESS_TOKEN_LIFETIME = timedelta(hours=48)  # documented; the answer rarely says


def official_token_url(environment: str) -> str:
    return f"{AUTH_HOSTS[environment]}/oauth2/token"


class Microshare(Provider):
    name: ClassVar[str] = "microshare"
    spec: ClassVar[SpecBlock] = SpecBlock(
        "Microshare password grant.",
        fields=(
            Field("environment", enum=tuple(AUTH_HOSTS), default="production"),
            Field("tokenKind", enum=("access", "pipe"), default="access"),
            Field("scope", default="ALL:ALL", min_length=1, max_length=256),
            TOKEN_URL,
        ),
        credentials=(
            Credential("username"),
            Credential("password"),
            Credential("apiKey", note="the app key"),
        ),
    )

    def shareable(self, spec: Mapping[str, Any]) -> bool:
        return True

    async def mint(self, request: MintRequest) -> Token:
        spec, credentials = request.spec, request.credentials
        url, official = token_endpoint.endpoint(
            spec, official_token_url(self.spec.value(spec, "environment"))
        )
        pipe = self.spec.value(spec, "tokenKind") == "pipe"
        params = {
            "username": credentials["username"],
            "password": credentials["password"],
            "client_id": credentials["apiKey"],
            "grant_type": "pipe" if pipe else "password",
            "scope": str(self.spec.value(spec, "scope")),
        }
        token, _ = await token_endpoint.request_token(
            request,
            url,
            official=official,
            provider_default=ACCESS_TOKEN_LIFETIME,
            never_expires=pipe,
            headers={"Accept": "application/json"},
            params=params,
        )
        return token
