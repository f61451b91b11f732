"""Basiq (open banking): an API key buys a SERVER_ACCESS or CLIENT_ACCESS token.

The ``apiKey`` credential is sent exactly as issued (already base64 of ``uuid:uuid``).
Basiq limits /token to 1,500 calls per 5 minutes and asks clients to reuse tokens:
ProviderTokens with the same key, scope and user share one token (see Reconciler).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, ClassVar

from tokensync.endpoints import HttpResponse
from tokensync.providers import token_endpoint
from tokensync.providers.base import (
    InvalidCredentials,
    InvalidRequest,
    MintError,
    MintRequest,
    Provider,
    RateLimited,
    Token,
)
from tokensync.providers.spec import TOKEN_URL, Credential, Field, Rule, SpecBlock

OFFICIAL_TOKEN_URL = "https://au-api.basiq.io/token"


class AccountDisabled(MintError):
    reason = "AccountDisabled"
    permanent = True


def _first_error(response: HttpResponse, secrets: Iterable[str]) -> str:
    body = token_endpoint.json_object(response) or {}
    data = body.get("data")
    first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
    parts = [str(first.get(k)) for k in ("code", "title", "detail") if first.get(k)]
    return token_endpoint.redact(" - ".join(parts), secrets)


def classify(response: HttpResponse, now: datetime, secrets: Iterable[str]) -> MintError:
    """Basiq's list-format errors; a bad key is a 404, throttling may be a 403."""
    secrets = tuple(secrets)
    detail = _first_error(response, secrets)
    said = f"Basiq answered {response.status}" + (f": {detail}" if detail else "")
    wait = token_endpoint.retry_after(response.headers, now)
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
    return token_endpoint.classify_failure(response, now, secrets)


class Basiq(Provider):
    name: ClassVar[str] = "basiq"
    spec: ClassVar[SpecBlock] = SpecBlock(
        "Basiq API key to token.",
        fields=(
            Field("scope", enum=("SERVER_ACCESS", "CLIENT_ACCESS"), default="SERVER_ACCESS"),
            Field("userId", min_length=1, max_length=128),
            Field("version", default="3.0", pattern=r"^[0-9]+\.[0-9]+$"),
            TOKEN_URL,
        ),
        credentials=(Credential("apiKey"),),
        rules=(
            Rule(
                "self.scope != 'CLIENT_ACCESS' || has(self.userId)",
                "basiq.userId is required when scope is CLIENT_ACCESS",
            ),
        ),
    )

    def shareable(self, spec: Mapping[str, Any]) -> bool:
        return True

    async def mint(self, request: MintRequest) -> Token:
        spec = request.spec
        url, official = token_endpoint.endpoint(spec, OFFICIAL_TOKEN_URL)
        form = {"scope": str(self.spec.value(spec, "scope"))}
        if form["scope"] == "CLIENT_ACCESS":
            form["userId"] = str(spec["userId"])  # the CRD's rule: no CLIENT_ACCESS without it
        token, _ = await token_endpoint.request_token(
            request,
            url,
            official=official,
            classify=classify,
            headers={
                "Authorization": f"Basic {request.credentials['apiKey'].strip()}",
                "basiq-version": str(self.spec.value(spec, "version")),
                "Accept": "application/json",
            },
            data=form,
        )
        return token
