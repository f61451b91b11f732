"""Biotz (IoT data ingestion): Keycloak password grant; workloads need the id_token.

The ``username`` credential is the device's HTTP username,
``<device-id>@devices.data-ingestion.biotz.io``. Renewals use the refresh-token grant
while the refresh token lives, always keeping the newest one (Keycloak may rotate it), and
fall back to the password grant when it is rejected.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, ClassVar

from tokensync.endpoints import HttpResponse
from tokensync.providers import token_endpoint
from tokensync.providers.base import InvalidCredentials, MintError, MintRequest, Provider, Token
from tokensync.providers.spec import TOKEN_URL, Credential, Field, SpecBlock

OFFICIAL_TOKEN_URL = "https://auth.biotz.io/realms/biotz-platform/protocol/openid-connect/token"


class AccountDisabled(MintError):
    reason = "AccountDisabled"
    permanent = True


class AccountNotSetUp(MintError):
    reason = "AccountNotSetUp"
    permanent = True


class InvalidClient(MintError):
    """The Keycloak client (spec.provider.biotz.clientId) is unknown."""

    reason = "InvalidClient"
    permanent = True


class HttpsRequired(MintError):
    reason = "HttpsRequired"
    permanent = True


class RefreshRejected(InvalidCredentials):
    """A refresh token was refused (expired, stale, session ended): use the password."""


def classify(response: HttpResponse, now: datetime, secrets: Iterable[str]) -> MintError:
    """Keycloak's answers: the same ``error`` code means different things by description."""
    body = token_endpoint.json_object(response) or {}
    code = body.get("error")
    description = str(body.get("error_description") or "")
    lowered = description.lower()
    detail = (
        f"Keycloak answered {response.status} {code}: {token_endpoint.redact(description, secrets)}"
    )
    if code == "invalid_grant":
        if "disabled" in lowered:
            return AccountDisabled(detail)
        if "not fully set up" in lowered:
            return AccountNotSetUp(detail)
        if any(s in lowered for s in ("token is not active", "session not active", "stale")):
            return RefreshRejected(detail)
        return InvalidCredentials(
            f"{detail} (Keycloak answers a locked account the same way: retried slowly)"
        )
    if code == "invalid_client":
        return InvalidClient(detail)
    if code == "invalid_request" and response.status == 403:
        return HttpsRequired(detail)
    return token_endpoint.classify_failure(response, now, secrets)


class Biotz(Provider):
    name: ClassVar[str] = "biotz"
    spec: ClassVar[SpecBlock] = SpecBlock(
        "Biotz (Keycloak password grant).",
        fields=(
            Field("tokenField", enum=("id_token", "access_token"), default="id_token"),
            Field("clientId", default="biotz-platform-devices", min_length=1, max_length=256),
            TOKEN_URL,
        ),
        credentials=(Credential("username"), Credential("password")),
    )

    def shareable(self, spec: Mapping[str, Any]) -> bool:
        return False  # each token carries its own refresh token

    async def mint(self, request: MintRequest) -> Token:
        client_id = str(self.spec.value(request.spec, "clientId"))
        refresh = token_endpoint.usable_refresh_token(request.state, request.now)
        if refresh is not None:
            try:
                return await self._post(
                    request,
                    {
                        "grant_type": "refresh_token",
                        "refresh_token": refresh,
                        "client_id": client_id,
                    },
                )
            except InvalidCredentials:
                pass  # rejected or stale: the password grant below starts a new session
        return await self._post(
            request,
            {
                "grant_type": "password",
                "client_id": client_id,
                "scope": "openid",
                "username": request.credentials["username"],
                "password": request.credentials["password"],
            },
        )

    async def _post(self, request: MintRequest, form: dict[str, str]) -> Token:
        url, official = token_endpoint.endpoint(request.spec, OFFICIAL_TOKEN_URL)
        token, body = await token_endpoint.request_token(
            request,
            url,
            official=official,
            token_field=str(self.spec.value(request.spec, "tokenField")),
            classify=classify,
            headers={"Accept": "application/json"},
            data=form,
        )
        return replace(token, state=token_endpoint.refresh_state(body, request.now))
