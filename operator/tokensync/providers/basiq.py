"""Basiq (open banking): an API key buys a SERVER_ACCESS or CLIENT_ACCESS token.

Credentials key: ``apiKey``, exactly as issued (already base64 of ``uuid:uuid``).
Basiq limits /token to 1,500 calls per 5 minutes and asks clients to reuse tokens:
ProviderTokens with the same key, scope and user share one token (see Reconciler).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, ClassVar

from tokensync.endpoints import HttpResponse
from tokensync.providers import common
from tokensync.providers.base import (
    InvalidCredentials,
    InvalidRequest,
    MintError,
    MintRequest,
    RateLimited,
    Token,
)

OFFICIAL_TOKEN_URL = "https://au-api.basiq.io/token"


class AccountDisabled(MintError):
    reason = "AccountDisabled"
    permanent = True


def _first_error(response: HttpResponse, secrets: Iterable[str]) -> str:
    body = common.json_object(response) or {}
    data = body.get("data")
    first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
    parts = [str(first.get(k)) for k in ("code", "title", "detail") if first.get(k)]
    return common.redact(" - ".join(parts), secrets)


def classify(response: HttpResponse, now: datetime, secrets: Iterable[str]) -> MintError:
    """Basiq's list-format errors; a bad key is a 404, throttling may be a 403."""
    secrets = tuple(secrets)
    detail = _first_error(response, secrets)
    said = f"Basiq answered {response.status}" + (f": {detail}" if detail else "")
    wait = common.retry_after(response.headers, now)
    if response.status == 404:
        return InvalidCredentials(f"{said} (a wrong or deleted API key)")
    if response.status == 429:
        return RateLimited(said, retry_after=wait)
    if response.status == 403:
        if any(word in detail.lower() for word in ("disabled", "suspend", "inactive")):
            return AccountDisabled(said)
        # Basiq also throttles /token with 403: treated as a rate limit, never hammered.
        return RateLimited(said, retry_after=wait)
    if response.status == 400:
        return InvalidRequest(said)
    return common.classify_failure(response, now, secrets)


class Basiq:
    name: ClassVar[str] = "basiq"

    def required_credentials(self, spec: Mapping[str, Any]) -> tuple[str, ...]:
        return ("apiKey",)

    def shareable(self, spec: Mapping[str, Any]) -> bool:
        return True

    async def mint(self, request: MintRequest) -> Token:
        spec = request.spec
        url, official = common.endpoint(spec, OFFICIAL_TOKEN_URL)
        form = {"scope": str(spec.get("scope") or "SERVER_ACCESS")}
        if form["scope"] == "CLIENT_ACCESS":
            form["userId"] = str(spec["userId"])
        token, _ = await common.request_token(
            request,
            url,
            official=official,
            classify=classify,
            headers={
                "Authorization": f"Basic {request.credentials['apiKey'].strip()}",
                "basiq-version": str(spec.get("version") or "3.0"),
                "Accept": "application/json",
            },
            data=form,
        )
        return token
