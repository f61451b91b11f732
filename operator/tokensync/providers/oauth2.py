"""Any standard OAuth2 / OpenID Connect token endpoint (RFC 6749, 7523, 8693, OIDC Discovery).

Credentials keys: ``clientId``; ``clientSecret`` (client_secret_basic/post);
``privateKey`` (private_key_jwt, PEM); ``username``/``password`` (password grant);
``subjectToken`` (token exchange).
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote_plus

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tokensync.endpoints import HttpClient
from tokensync.providers import common
from tokensync.providers.base import (
    CredentialsIncomplete,
    InvalidCredentials,
    InvalidResponse,
    InvalidSpec,
    MintRequest,
    Token,
)

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_ASSERTION_LIFETIME_S = 60
_DISCOVERY_TTL_S = 3600.0


def basic_auth(client_id: str, client_secret: str) -> str:
    """RFC 6749 2.3.1: both parts form-urlencoded before the Basic encoding."""
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def client_assertion(
    private_key_pem: str, client_id: str, audience: str, key_id: str | None, now: float
) -> str:
    """RFC 7523 client authentication: a short-lived JWS, fresh ``jti`` every time."""
    try:
        key = load_pem_private_key(private_key_pem.encode(), password=None)
    except (ValueError, TypeError):
        raise CredentialsIncomplete("privateKey is not an unencrypted PEM private key") from None
    if isinstance(key, rsa.RSAPrivateKey):
        algorithm = "RS256"
    elif isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        algorithm = "ES256"
    else:
        raise CredentialsIncomplete("privateKey must be an RSA or a P-256 EC key")
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": int(now),
        "exp": int(now) + _ASSERTION_LIFETIME_S,
        "jti": str(uuid.uuid4()),
    }
    headers = {"kid": key_id} if key_id else None
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def asks_for_openid(spec: Mapping[str, Any]) -> bool:
    # scope wins over extraParams.scope (extraParams never override a named field).
    scope = spec.get("scope") or (spec.get("extraParams") or {}).get("scope") or ""
    return "openid" in str(scope).split()


class OAuth2:
    name: ClassVar[str] = "oauth2"

    def __init__(self) -> None:
        self._discovered: dict[str, tuple[str, float]] = {}
        self._discovery_lock = asyncio.Lock()

    def required_credentials(self, spec: Mapping[str, Any]) -> tuple[str, ...]:
        keys: list[str] = ["clientId"]
        client_auth = spec.get("clientAuth", "client_secret_basic")
        if client_auth in ("client_secret_basic", "client_secret_post"):
            keys.append("clientSecret")
        elif client_auth == "private_key_jwt":
            keys.append("privateKey")
        grant = spec.get("grantType", "client_credentials")
        if grant == "password":
            keys += ["username", "password"]
        elif grant == "token_exchange":
            keys.append("subjectToken")
        return tuple(keys)

    def shareable(self, spec: Mapping[str, Any]) -> bool:
        # A client-credentials token belongs to the client, not to a user or a session.
        return bool(spec.get("grantType", "client_credentials") == "client_credentials")

    async def token_endpoint(self, spec: Mapping[str, Any], http: HttpClient) -> str:
        url = spec.get("tokenUrl")
        if isinstance(url, str):
            return url
        issuer = spec.get("issuerUrl")
        if not isinstance(issuer, str):
            raise CredentialsIncomplete("oauth2 needs tokenUrl or issuerUrl")
        cached = self._discovered.get(issuer)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        async with self._discovery_lock:
            cached = self._discovered.get(issuer)
            if cached and cached[1] > time.monotonic():
                return cached[0]
            discovery = issuer.rstrip("/") + "/.well-known/openid-configuration"
            response = await common.call(http, "GET", discovery, official=False)
            document = common.json_object(response) if response.status == 200 else None
            endpoint = (document or {}).get("token_endpoint")
            if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
                raise InvalidResponse(
                    f"discovery at the issuer answered {response.status} without a token_endpoint"
                )
            self._discovered[issuer] = (endpoint, time.monotonic() + _DISCOVERY_TTL_S)
            return endpoint

    def _client_auth(
        self,
        spec: Mapping[str, Any],
        credentials: Mapping[str, str],
        endpoint: str,
        form: dict[str, str],
        headers: dict[str, str],
    ) -> None:
        client_id = credentials["clientId"]
        method = spec.get("clientAuth", "client_secret_basic")
        if method == "client_secret_basic":
            headers["Authorization"] = basic_auth(client_id, credentials["clientSecret"])
        elif method == "client_secret_post":
            form["client_id"] = client_id
            form["client_secret"] = credentials["clientSecret"]
        elif method == "private_key_jwt":
            form["client_id"] = client_id
            form["client_assertion_type"] = JWT_BEARER_ASSERTION
            form["client_assertion"] = client_assertion(
                credentials["privateKey"], client_id, endpoint, spec.get("keyId"), time.time()
            )
        else:
            form["client_id"] = client_id

    def _grant(self, spec: Mapping[str, Any], credentials: Mapping[str, str]) -> dict[str, str]:
        grant = spec.get("grantType", "client_credentials")
        if grant == "password":
            return {
                "grant_type": "password",
                "username": credentials["username"],
                "password": credentials["password"],
            }
        if grant == "token_exchange":
            form = {
                "grant_type": TOKEN_EXCHANGE,
                "subject_token": credentials["subjectToken"],
                "subject_token_type": spec.get("subjectTokenType", ACCESS_TOKEN_TYPE),
            }
            if spec.get("resource"):
                form["resource"] = str(spec["resource"])
            return form
        return {"grant_type": "client_credentials"}

    async def mint(self, request: MintRequest) -> Token:
        spec, credentials = request.spec, request.credentials
        if spec.get("tokenField") == "id_token" and not asks_for_openid(spec):
            # OIDC issues an id_token only for the openid scope: every attempt would open
            # a session at the provider and fail on the answer, for ever (issue 14, item 3).
            raise InvalidSpec(
                "tokenField id_token needs openid in spec.provider.oauth2.scope: "
                "without it the provider issues no id_token"
            )
        endpoint = await self.token_endpoint(spec, request.http)
        refresh = common.usable_refresh_token(request.state, request.now)
        if refresh is not None:
            try:
                return await self._post(
                    request,
                    endpoint,
                    {
                        "grant_type": "refresh_token",
                        "refresh_token": refresh,
                    },
                )
            except InvalidCredentials:
                pass  # expired, revoked or stale: the configured grant starts afresh
        form = self._grant(spec, credentials)
        for field in ("scope", "audience"):
            if spec.get(field):
                form[field] = str(spec[field])
        for key, value in (spec.get("extraParams") or {}).items():
            form.setdefault(str(key), str(value))
        return await self._post(request, endpoint, form)

    async def _post(self, request: MintRequest, endpoint: str, form: dict[str, str]) -> Token:
        headers = {"Accept": "application/json"}
        self._client_auth(request.spec, request.credentials, endpoint, form, headers)
        token, body = await common.request_token(
            request,
            endpoint,
            official=False,  # a generic endpoint always goes through the allowlist
            token_field=request.spec.get("tokenField", "access_token"),
            headers=headers,
            data=form,
        )
        # Client-credentials tokens are shared and carry no refresh token (RFC 6749 4.4.3);
        # for the other grants an empty state forgets a refresh token no longer handed out.
        state = None if self.shareable(request.spec) else common.refresh_state(body, request.now)
        return Token(
            value=token.value, expires_at=token.expires_at, minted_at=token.minted_at, state=state
        )
