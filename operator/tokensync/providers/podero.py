"""Podero (energy partner API): OAuth2 client credentials, Basic auth and a JSON body.

The credentials belong to one environment.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, ClassVar

from tokensync.providers import token_endpoint
from tokensync.providers.base import MintRequest, Provider, Token
from tokensync.providers.spec import TOKEN_URL, Credential, Field, SpecBlock

# The trailing slash matters: the server answers the slash-less path differently.
TOKEN_URLS = {
    "production": "https://app.podero.com/oauth2/token/",
    "sandbox": "https://sandbox-app.podero.com/oauth2/token/",
}


class Podero(Provider):
    name: ClassVar[str] = "podero"
    spec: ClassVar[SpecBlock] = SpecBlock(
        "Podero client credentials.",
        fields=(Field("environment", enum=tuple(TOKEN_URLS), default="production"), TOKEN_URL),
        credentials=(Credential("clientId"), Credential("clientSecret")),
    )

    def shareable(self, spec: Mapping[str, Any]) -> bool:
        return True

    async def mint(self, request: MintRequest) -> Token:
        environment = self.spec.value(request.spec, "environment")
        url, official = token_endpoint.endpoint(request.spec, TOKEN_URLS[environment])
        pair = f"{request.credentials['clientId']}:{request.credentials['clientSecret']}"
        token, _ = await token_endpoint.request_token(
            request,
            url,
            official=official,
            headers={
                # As documented: base64 of "id:secret" as they are (not form-encoded).
                "Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii"),
                "Accept": "application/json",
                "Cache-Control": "no-cache",
            },
            json_body={"grant_type": "client_credentials"},
        )
        return token
