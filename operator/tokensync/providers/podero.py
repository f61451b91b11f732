"""Podero (energy partner API): OAuth2 client credentials, Basic auth and a JSON body.

Credentials keys: ``clientId``, ``clientSecret``; they belong to one environment.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, ClassVar

from tokensync.providers import common
from tokensync.providers.base import MintRequest, Token

# The trailing slash matters: the server answers the slash-less path differently.
TOKEN_URLS = {
    "production": "https://app.podero.com/oauth2/token/",
    "sandbox": "https://sandbox-app.podero.com/oauth2/token/",
}


class Podero:
    name: ClassVar[str] = "podero"

    def required_credentials(self, spec: Mapping[str, Any]) -> tuple[str, ...]:
        return ("clientId", "clientSecret")

    def shareable(self, spec: Mapping[str, Any]) -> bool:
        return True

    async def mint(self, request: MintRequest) -> Token:
        url, official = common.endpoint(
            request.spec, TOKEN_URLS[str(request.spec.get("environment") or "production")]
        )
        pair = f"{request.credentials['clientId']}:{request.credentials['clientSecret']}"
        token, _ = await common.request_token(
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
