"""Any standard OAuth2 / OpenID Connect token endpoint (RFC 6749, 7009, 7523, 8693, 8705,
OIDC Discovery). The credentials keys depend on the grant and the client authentication
(see ``spec.SPEC``)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, ClassVar

from tokensync.endpoints import HttpClient
from tokensync.providers import token_endpoint
from tokensync.providers.base import (
    CredentialsIncomplete,
    InvalidCredentials,
    InvalidResponse,
    InvalidSpec,
    MintRequest,
    Proofs,
    Provider,
    Token,
)
from tokensync.providers.oauth2 import spec as oauth2_spec
from tokensync.providers.oauth2.client_auth import authenticate
from tokensync.providers.oauth2.spec import (
    JWT_TOKEN_TYPE,
    SPEC,
    TLS_CLIENT_AUTH,
    TOKEN_EXCHANGE,
    asks_for_openid,
    revokes_on_delete,
    service_account_source,
)
from tokensync.providers.spec import SpecBlock

_DISCOVERY_TTL = timedelta(hours=1)
# Kept in the provider state beside the refresh token when revokeOnDelete is set: after an
# operator restart it is the one copy of the access token the deletion must revoke.
REVOCABLE_ACCESS_TOKEN = "access_token"


class OAuth2(Provider):
    name: ClassVar[str] = "oauth2"
    spec: ClassVar[SpecBlock] = SPEC

    def __init__(self) -> None:
        self._discovered: dict[str, tuple[Mapping[str, Any], datetime]] = {}
        self._discovery_lock = asyncio.Lock()

    def shareable(self, spec: Mapping[str, Any]) -> bool:
        # A client-credentials token belongs to the client, not to a user or a session;
        # but one a deletion revokes must not be in another ProviderToken's Secret.
        return SPEC.value(spec, "grantType") == "client_credentials" and not revokes_on_delete(spec)

    def proofs(self, spec: Mapping[str, Any]) -> Proofs:
        return oauth2_spec.proofs(spec)

    def revokes_on_delete(self, spec: Mapping[str, Any]) -> bool:
        return revokes_on_delete(spec)

    async def _discovery(self, issuer: str, http: HttpClient, now: datetime) -> Mapping[str, Any]:
        """The issuer's discovery document, kept an hour."""
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
            if not _is_url(_get(document, "token_endpoint")):
                raise InvalidResponse(
                    f"discovery at the issuer answered {response.status} without a token_endpoint"
                )
            assert document is not None
            self._discovered[issuer] = (document, now + _DISCOVERY_TTL)
            return document

    async def _named_or_discovered(
        self, spec: Mapping[str, Any], http: HttpClient, now: datetime, field: str, key: str
    ) -> object:
        """The spec's URL ``field``, else ``key`` of the issuer's discovery (None without
        an issuer)."""
        url = SPEC.value(spec, field)
        if isinstance(url, str):
            return url
        issuer = SPEC.value(spec, "issuerUrl")
        if not isinstance(issuer, str):
            return None
        return _endpoint(await self._discovery(issuer, http, now), key, spec)

    async def resolve_endpoint(
        self, spec: Mapping[str, Any], http: HttpClient, now: datetime
    ) -> str:
        """``tokenUrl``, or the token endpoint the issuer's discovery names."""
        url = await self._named_or_discovered(spec, http, now, "tokenUrl", "token_endpoint")
        if url is None:
            raise CredentialsIncomplete("oauth2 needs tokenUrl or issuerUrl")
        return str(url)

    async def revocation_endpoint(
        self, spec: Mapping[str, Any], http: HttpClient, now: datetime
    ) -> str:
        """``revocationUrl``, or the revocation endpoint the issuer's discovery names."""
        url = await self._named_or_discovered(
            spec, http, now, "revocationUrl", "revocation_endpoint"
        )
        if not _is_url(url):
            raise InvalidSpec(
                "revokeOnDelete: the issuer's discovery names no revocation_endpoint; "
                "set spec.provider.oauth2.revocationUrl"
            )
        return str(url)

    def _grant(self, request: MintRequest) -> dict[str, str]:
        spec, credentials = request.spec, request.credentials
        grant = SPEC.value(spec, "grantType")
        if grant == "password":
            return {
                "grant_type": "password",
                "username": credentials["username"],
                "password": credentials["password"],
            }
        if grant == "token_exchange":
            if service_account_source(spec):
                if not request.service_account_token:
                    raise CredentialsIncomplete("subjectTokenSource serviceAccount needs a token")
                subject = request.service_account_token
                subject_type = spec.get("subjectTokenType") or JWT_TOKEN_TYPE
            else:
                subject = credentials["subjectToken"]
                subject_type = SPEC.value(spec, "subjectTokenType")
            form = {
                "grant_type": TOKEN_EXCHANGE,
                "subject_token": subject,
                "subject_token_type": str(subject_type),
            }
            if SPEC.value(spec, "resource"):
                form["resource"] = str(SPEC.value(spec, "resource"))
            return form
        return {"grant_type": "client_credentials"}

    async def mint(self, request: MintRequest) -> Token:
        spec = request.spec
        if SPEC.value(spec, "tokenField") == "id_token" and not asks_for_openid(spec):
            # OIDC issues an id_token only for the openid scope: every attempt would open
            # a session at the provider and fail on the answer, for ever (issue 14, item 3).
            raise InvalidSpec(
                "tokenField id_token needs openid in spec.provider.oauth2.scope: "
                "without it the provider issues no id_token"
            )
        endpoint = await self.resolve_endpoint(spec, request.http, request.now)
        if revokes_on_delete(spec):
            # Found and checked now, not at deletion: a token that could never be revoked
            # is refused while someone is watching its status.
            revocation = await self.revocation_endpoint(spec, request.http, request.now)
            token_endpoint.check_allowed(request.http, revocation)
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
        form = self._grant(request)
        for field in ("scope", "audience"):
            if SPEC.value(spec, field):
                form[field] = str(SPEC.value(spec, field))
        for key, value in (SPEC.value(spec, "extraParams") or {}).items():
            form.setdefault(str(key), str(value))
        return await self._post(request, endpoint, form)

    async def _post(self, request: MintRequest, endpoint: str, form: dict[str, str]) -> Token:
        headers = {"Accept": "application/json"}
        connection = authenticate(request, endpoint, form, headers)
        token, body = await token_endpoint.request_token(
            request,
            endpoint,
            official=False,  # a generic endpoint always goes through the allowlist
            token_field=SPEC.value(request.spec, "tokenField"),
            headers=headers,
            data=form,
            **connection,
        )
        # Client-credentials tokens are shared and carry no refresh token (RFC 6749 4.4.3);
        # for the other grants an empty state forgets a refresh token no longer handed out.
        if self.shareable(request.spec):
            return replace(token, state=None)
        state = token_endpoint.refresh_state(body, request.now)
        if not state and form.get("grant_type") == "refresh_token":
            # RFC 6749 6: an answer without a new refresh token leaves the one sent valid.
            kept = (token_endpoint.REFRESH_TOKEN, token_endpoint.REFRESH_EXPIRES_AT)
            state = {key: value for key, value in request.state.items() if key in kept}
        if revokes_on_delete(request.spec):
            access = body.get("access_token")
            if isinstance(access, str) and access:
                state[REVOCABLE_ACCESS_TOKEN] = access
        return replace(token, state=state)

    async def revoke(
        self, request: MintRequest, tokens: Mapping[str, str]
    ) -> tuple[str, tuple[str, ...]]:
        """RFC 7009: one request per token, the refresh token first (revoking it may end
        the access tokens of its grant too), with the token endpoint's client auth."""
        endpoint = await self.revocation_endpoint(request.spec, request.http, request.now)
        revoked: list[str] = []
        for hint in (token_endpoint.REFRESH_TOKEN, REVOCABLE_ACCESS_TOKEN):
            value = tokens.get(hint)
            if not value:
                continue
            form = {"token": value, "token_type_hint": hint}
            headers = {"Accept": "application/json"}
            connection = authenticate(request, endpoint, form, headers)
            response = await token_endpoint.call(
                request.http,
                "POST",
                endpoint,
                official=False,
                headers=headers,
                data=form,
                **connection,
            )
            if 200 <= response.status < 300:
                revoked.append(hint)
                continue
            body = token_endpoint.json_object(response) or {}
            if response.status == 400 and body.get("error") == "unsupported_token_type":
                continue  # RFC 7009 2.2.1: this server does not revoke this kind
            secrets = [*token_endpoint.sent_secrets(request, headers, form), *tokens.values()]
            error = token_endpoint.classify_failure(response, request.now, secrets)
            if revoked:
                # Said, so a partial revocation is not reported as none.
                error.message = f"{' and '.join(revoked)} revoked, {hint} not: {error.message}"
            raise error
        return endpoint, tuple(revoked)


def _get(document: Mapping[str, Any] | None, key: str) -> object:
    return (document or {}).get(key)


def _endpoint(document: Mapping[str, Any], key: str, spec: Mapping[str, Any]) -> object:
    """The discovery's endpoint; with tls_client_auth its mutual-TLS alias when it names
    one (RFC 8705 5: a server may take client certificates on other hosts only)."""
    if SPEC.value(spec, "clientAuth") == TLS_CLIENT_AUTH:
        aliases = document.get("mtls_endpoint_aliases")
        alias = aliases.get(key) if isinstance(aliases, Mapping) else None
        if _is_url(alias):
            return alias
    return document.get(key)


def _is_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(("https://", "http://"))
