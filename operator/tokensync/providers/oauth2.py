"""Any standard OAuth2 token endpoint (RFC 6749)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

from tokensync.providers import common
from tokensync.providers.base import CredentialsIncomplete, MintRequest, Token, register


def basic_auth(client_id: str, client_secret: str) -> str:
    """RFC 6749 2.3.1: both parts form-urlencoded before the Basic encoding."""
    pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


class OAuth2:
    name: ClassVar[str] = "oauth2"

    def required_credentials(self, spec: Mapping[str, Any]) -> tuple[str, ...]:
        keys: list[str] = ["clientId"]
        if spec.get("clientAuth", "client_secret_basic") in (
            "client_secret_basic",
            "client_secret_post",
        ):
            keys.append("clientSecret")
        if spec.get("grantType", "client_credentials") == "password":
            keys += ["username", "password"]
        return tuple(keys)

    def token_url(self, spec: Mapping[str, Any]) -> tuple[str, bool]:
        url = spec.get("tokenUrl")
        if not isinstance(url, str):
            raise CredentialsIncomplete("oauth2 needs spec.provider.oauth2.tokenUrl")
        # A generic endpoint is never "official": it always goes through the allowlist.
        return url, False

    async def mint(self, request: MintRequest) -> Token:
        spec, credentials = request.spec, request.credentials
        url, official = self.token_url(spec)
        form: dict[str, str] = {}
        headers = {"Accept": "application/json"}
        grant = spec.get("grantType", "client_credentials")
        form["grant_type"] = grant
        if grant == "password":
            form["username"] = credentials["username"]
            form["password"] = credentials["password"]
        client_auth = spec.get("clientAuth", "client_secret_basic")
        if client_auth == "client_secret_basic":
            headers["Authorization"] = basic_auth(
                credentials["clientId"], credentials["clientSecret"]
            )
        elif client_auth == "client_secret_post":
            form["client_id"] = credentials["clientId"]
            form["client_secret"] = credentials["clientSecret"]
        else:
            form["client_id"] = credentials["clientId"]
        for field in ("scope", "audience"):
            if spec.get(field):
                form[field] = str(spec[field])
        for key, value in (spec.get("extraParams") or {}).items():
            form.setdefault(str(key), str(value))
        response = await common.call(
            request.http, "POST", url, official=official, headers=headers, data=form
        )
        common.check_success(response, request.now, credentials.values())
        token, _ = common.token_from_success(
            response,
            now=request.now,
            token_field=spec.get("tokenField", "access_token"),
            fallback=request.fallback_lifetime,
        )
        return token


register(OAuth2())
