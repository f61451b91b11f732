"""Any standard OAuth2 / OpenID Connect token endpoint (RFC 6749, 7523, 8693, OIDC Discovery).

The credentials keys depend on the grant and the client authentication (see ``SPEC``).
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import quote_plus

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tokensync.endpoints import HttpClient
from tokensync.providers import token_endpoint
from tokensync.providers.base import (
    CredentialsIncomplete,
    InvalidCredentials,
    InvalidResponse,
    InvalidSpec,
    MintRequest,
    Provider,
    Token,
)
from tokensync.providers.spec import Credential, Field, Rule, SpecBlock, endpoint_url

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_ASSERTION_LIFETIME_S = 60
_DISCOVERY_TTL = timedelta(hours=1)

# The API server's twin of asks_for_openid.
_ID_TOKEN_NEEDS_OPENID = (
    "!has(self.tokenField) || self.tokenField != 'id_token' || (has(self.scope) && "
    "self.scope != '' ? self.scope : (has(self.extraParams) && 'scope' in self.extraParams ? "
    r"self.extraParams['scope'] : '')).matches('(^|\\s)openid(\\s|$)')"
)
SPEC = SpecBlock(
    "Any standard OAuth2/OIDC token endpoint.",
    fields=(
        endpoint_url("tokenUrl", "The token endpoint."),
        endpoint_url(
            "issuerUrl",
            "The OpenID Connect issuer, whose discovery document "
            "(/.well-known/openid-configuration) names the token endpoint.",
            hosts="the hosts of both",
        ),
        Field(
            "grantType",
            enum=("client_credentials", "password", "token_exchange"),
            default="client_credentials",
        ),
        Field(
            "clientAuth",
            enum=("client_secret_basic", "client_secret_post", "private_key_jwt", "none"),
            default="client_secret_basic",
        ),
        Field("scope", max_length=1024),
        Field("audience", max_length=1024),
        Field("extraParams", kind="string-map", max_properties=32, max_length=1024),
        Field("tokenField", enum=("access_token", "id_token"), default="access_token"),
        Field(
            "subjectTokenType",
            description="RFC 8693 subject_token_type (token_exchange)",
            default=ACCESS_TOKEN_TYPE,
            default_in_crd=False,  # it would land in every stored block, and in its digest
            max_length=256,
        ),
        Field("resource", description="RFC 8693 resource (token_exchange)", max_length=2048),
        Field(
            "keyId",
            description="kid header of the private_key_jwt client assertion",
            max_length=256,
        ),
    ),
    credentials=(
        Credential("clientId"),
        Credential(
            "clientSecret", when=("clientAuth", ("client_secret_basic", "client_secret_post"))
        ),
        Credential("privateKey", when=("clientAuth", ("private_key_jwt",))),
        Credential("username", when=("grantType", ("password",))),
        Credential("password", when=("grantType", ("password",))),
        Credential("subjectToken", when=("grantType", ("token_exchange",))),
    ),
    rules=(
        Rule(
            "has(self.tokenUrl) != has(self.issuerUrl)",
            "oauth2 needs exactly one of tokenUrl or issuerUrl",
        ),
        Rule(
            _ID_TOKEN_NEEDS_OPENID,
            "tokenField id_token needs openid in scope (an OpenID provider issues an id_token "
            "only for the openid scope)",
        ),
    ),
)


def basic_auth(client_id: str, client_secret: str) -> str:
    """RFC 6749 2.3.1: both parts form-urlencoded before the Basic encoding."""
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def client_assertion(
    private_key_pem: str, client_id: str, audience: str, key_id: str | None, now: datetime
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
    issued_at = int(now.timestamp())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": issued_at,
        "exp": issued_at + _ASSERTION_LIFETIME_S,
        "jti": str(uuid.uuid4()),
    }
    headers = {"kid": key_id} if key_id else None
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def asks_for_openid(spec: Mapping[str, Any]) -> bool:
    # scope wins over extraParams.scope (extraParams never override a named field).
    scope = SPEC.value(spec, "scope") or (SPEC.value(spec, "extraParams") or {}).get("scope")
    return "openid" in str(scope or "").split()


class OAuth2(Provider):
    name: ClassVar[str] = "oauth2"
    spec: ClassVar[SpecBlock] = SPEC

    def __init__(self) -> None:
        self._discovered: dict[str, tuple[str, datetime]] = {}
        self._discovery_lock = asyncio.Lock()

    def shareable(self, spec: Mapping[str, Any]) -> bool:
        # A client-credentials token belongs to the client, not to a user or a session.
        return bool(SPEC.value(spec, "grantType") == "client_credentials")

    async def resolve_endpoint(
        self, spec: Mapping[str, Any], http: HttpClient, now: datetime
    ) -> str:
        """``tokenUrl``, or the token endpoint the issuer's discovery names (kept an hour)."""
        url = SPEC.value(spec, "tokenUrl")
        if isinstance(url, str):
            return url
        issuer = SPEC.value(spec, "issuerUrl")
        if not isinstance(issuer, str):
            raise CredentialsIncomplete("oauth2 needs tokenUrl or issuerUrl")
        cached = self._discovered.get(issuer)
        if cached and cached[1] > now:
            return cached[0]
        async with self._discovery_lock:
            cached = self._discovered.get(issuer)
            if cached and cached[1] > now:
                return cached[0]
            discovery = issuer.rstrip("/") + "/.well-known/openid-configuration"
            response = await token_endpoint.call(http, "GET", discovery, official=False)
            document = token_endpoint.json_object(response) if response.status == 200 else None
            endpoint = (document or {}).get("token_endpoint")
            if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
                raise InvalidResponse(
                    f"discovery at the issuer answered {response.status} without a token_endpoint"
                )
            self._discovered[issuer] = (endpoint, now + _DISCOVERY_TTL)
            return endpoint

    def _client_auth(
        self, request: MintRequest, endpoint: str, form: dict[str, str], headers: dict[str, str]
    ) -> None:
        spec, credentials = request.spec, request.credentials
        client_id = credentials["clientId"]
        method = SPEC.value(spec, "clientAuth")
        if method == "client_secret_basic":
            headers["Authorization"] = basic_auth(client_id, credentials["clientSecret"])
        elif method == "client_secret_post":
            form["client_id"] = client_id
            form["client_secret"] = credentials["clientSecret"]
        elif method == "private_key_jwt":
            form["client_id"] = client_id
            form["client_assertion_type"] = JWT_BEARER_ASSERTION
            form["client_assertion"] = client_assertion(
                credentials["privateKey"],
                client_id,
                endpoint,
                SPEC.value(spec, "keyId"),
                request.now,
            )
        else:
            form["client_id"] = client_id

    def _grant(self, spec: Mapping[str, Any], credentials: Mapping[str, str]) -> dict[str, str]:
        grant = SPEC.value(spec, "grantType")
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
                "subject_token_type": SPEC.value(spec, "subjectTokenType"),
            }
            if SPEC.value(spec, "resource"):
                form["resource"] = str(SPEC.value(spec, "resource"))
            return form
        return {"grant_type": "client_credentials"}

    async def mint(self, request: MintRequest) -> Token:
        spec, credentials = request.spec, request.credentials
        if SPEC.value(spec, "tokenField") == "id_token" and not asks_for_openid(spec):
            # OIDC issues an id_token only for the openid scope: every attempt would open
            # a session at the provider and fail on the answer, for ever (issue 14, item 3).
            raise InvalidSpec(
                "tokenField id_token needs openid in spec.provider.oauth2.scope: "
                "without it the provider issues no id_token"
            )
        endpoint = await self.resolve_endpoint(spec, request.http, request.now)
        refresh = token_endpoint.usable_refresh_token(request.state, request.now)
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
            if SPEC.value(spec, field):
                form[field] = str(SPEC.value(spec, field))
        for key, value in (SPEC.value(spec, "extraParams") or {}).items():
            form.setdefault(str(key), str(value))
        return await self._post(request, endpoint, form)

    async def _post(self, request: MintRequest, endpoint: str, form: dict[str, str]) -> Token:
        headers = {"Accept": "application/json"}
        self._client_auth(request, endpoint, form, headers)
        token, body = await token_endpoint.request_token(
            request,
            endpoint,
            official=False,  # a generic endpoint always goes through the allowlist
            token_field=SPEC.value(request.spec, "tokenField"),
            headers=headers,
            data=form,
        )
        # Client-credentials tokens are shared and carry no refresh token (RFC 6749 4.4.3);
        # for the other grants an empty state forgets a refresh token no longer handed out.
        state = (
            None
            if self.shareable(request.spec)
            else token_endpoint.refresh_state(body, request.now)
        )
        return replace(token, state=state)
