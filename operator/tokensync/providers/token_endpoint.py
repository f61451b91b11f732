"""The token-endpoint flow every provider shares: the call, the answer, the error shapes."""

from __future__ import annotations

import email.utils
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, quote_plus

import jwt

from tokensync.endpoints import (
    EndpointRefused,
    HttpClient,
    HttpResponse,
    TransportFailure,
    UnsendableRequest,
)
from tokensync.providers.base import (
    EndpointNotAllowed,
    ExpiryUnknown,
    InvalidCredentials,
    InvalidRequest,
    InvalidResponse,
    InvalidScope,
    MintError,
    MintRequest,
    ProviderUnavailable,
    RateLimited,
    Token,
    TokenExpired,
    UnauthorizedClient,
    UnsupportedGrantType,
)

# A token with less life than this left on arrival is useless: refused, not written.
MIN_USEFUL_LIFETIME = timedelta(seconds=2)
_MAX_DESCRIPTION = 200

OAUTH_ERRORS: Mapping[str, type[MintError]] = {
    "invalid_client": InvalidCredentials,
    "invalid_grant": InvalidCredentials,
    "unauthorized_client": UnauthorizedClient,
    "invalid_scope": InvalidScope,
    "unsupported_grant_type": UnsupportedGrantType,
    "invalid_request": InvalidRequest,
}


async def call(
    http: HttpClient,
    method: str,
    url: str,
    *,
    official: bool,
    **kwargs: Any,
) -> HttpResponse:
    """One request, with configuration refusals and transport failures as MintErrors."""
    try:
        return await http.request(method, url, official=official, **kwargs)
    except EndpointRefused as refused:
        raise EndpointNotAllowed(str(refused)) from None
    except TransportFailure as failure:
        raise ProviderUnavailable(f"token endpoint unreachable: {failure}") from None
    except UnsendableRequest as unsendable:
        # Only credentials vary per request: one of them cannot be sent as it is.
        raise InvalidCredentials(f"credentials cannot be sent: {unsendable}") from None


def sent_secrets(
    request: MintRequest,
    headers: Mapping[str, str] | None,
    form: Mapping[str, str] | None,
) -> list[str]:
    """Every secret value one request carries, as sent, for redaction from its answer:
    the request's own, the Authorization header's value (a Basic pair, a bearer key) and
    a client assertion built for it (a signed JWT, valid for a minute)."""
    secrets = request.secrets()
    authorization = (headers or {}).get("Authorization")
    if authorization:
        secrets.append(authorization.partition(" ")[2])
    assertion = (form or {}).get("client_assertion")
    if assertion:
        secrets.append(assertion)
    return secrets


def check_allowed(http: HttpClient, url: str) -> None:
    """Refuse now an endpoint a later call would be refused (the allowlist, the scheme)."""
    try:
        http.policy.check(url, official=False)
    except EndpointRefused as refused:
        raise EndpointNotAllowed(str(refused)) from None


def redact(text: str, secrets: Iterable[str]) -> str:
    """Remove any secret value a provider may echo back, and bound the length.

    Also in the forms the request carried it (form- and URL-encoded), and longest first,
    so a secret that begins with a shorter one (a client id) is not left half shown.
    """
    forms = {
        form
        for secret in secrets
        if secret and len(secret) >= 3
        for form in (secret, quote_plus(secret), quote(secret, safe=""))
    }
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "***")
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DESCRIPTION else text[: _MAX_DESCRIPTION - 1] + "…"


# Longer than any sane server asks; also keeps the arithmetic on datetimes finite.
_MAX_RETRY_AFTER = timedelta(days=1)


def retry_after(headers: Mapping[str, str], now: datetime) -> timedelta | None:
    """``Retry-After`` as seconds or as an HTTP date; absent or unparsable gives None."""
    raw = headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    if raw.isascii() and raw.isdigit():
        return min(timedelta(seconds=int(raw[:12])), _MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(when - now, timedelta(0)), _MAX_RETRY_AFTER)


def json_object(response: HttpResponse) -> dict[str, Any] | None:
    try:
        parsed = json.loads(response.body)
    except (ValueError, UnicodeDecodeError):
        return None
    return parsed if isinstance(parsed, dict) else None


def classify_failure(
    response: HttpResponse,
    now: datetime,
    secrets: Iterable[str],
) -> MintError:
    """Map a non-2xx answer to an error, by the OAuth2 ``error`` code before the status."""
    status = response.status
    wait = retry_after(response.headers, now)
    if status == 429:
        return RateLimited("provider answered 429 Too Many Requests", retry_after=wait)
    body = json_object(response) or {}
    code = body.get("error")
    if isinstance(code, str) and code in OAUTH_ERRORS:
        description = body.get("error_description")
        detail = f": {redact(description, secrets)}" if isinstance(description, str) else ""
        return OAUTH_ERRORS[code](f"provider answered {status} {code}{detail}")
    if status >= 500:
        return ProviderUnavailable(f"provider answered {status}", retry_after=wait)
    if status == 401:
        return InvalidCredentials("provider answered 401 Unauthorized")
    if status == 403:
        return InvalidCredentials("provider answered 403 Forbidden")
    if 300 <= status < 400:
        return ProviderUnavailable(f"provider answered a {status} redirect, which is not followed")
    if isinstance(code, str):
        return InvalidRequest(f"provider answered {status} {redact(code, secrets)}")
    return InvalidRequest(f"provider answered {status}")


def jwt_expiry(token: str) -> datetime | None:
    """The ``exp`` claim of a JWT, read without verifying (we are not its audience)."""
    if token.count(".") != 2:
        return None
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        return None
    try:
        return datetime.fromtimestamp(exp, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _expires_in(value: object) -> timedelta | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value) and 0 < value < 10**9:
        return timedelta(seconds=value)
    return None


def expiry(
    *,
    now: datetime,
    expires_in: object,
    token: str,
    provider_default: timedelta | None,
    fallback: timedelta | None,
) -> datetime:
    """``expires_in``, else the JWT ``exp``, else the provider's default, else the fallback."""
    lifetime = _expires_in(expires_in)
    if lifetime is not None:
        return now + lifetime
    from_jwt = jwt_expiry(token)
    if from_jwt is not None:
        return from_jwt
    if provider_default is not None:
        return now + provider_default
    if fallback is not None:
        return now + fallback
    raise ExpiryUnknown(
        "the provider gave no expires_in and the token is not a JWT: "
        "set spec.refresh.fallbackLifetime"
    )


def token_from_success(
    response: HttpResponse,
    *,
    now: datetime,
    token_field: str = "access_token",
    provider_default: timedelta | None = None,
    fallback: timedelta | None = None,
    never_expires: bool = False,
) -> tuple[Token, dict[str, Any]]:
    """Parse a 2xx token answer; returns the Token and the whole JSON body for extras."""
    body = json_object(response)
    if body is None:
        kind = response.headers.get("content-type", "unknown content type").split(";")[0]
        raise InvalidResponse(f"provider answered {response.status} with a non-JSON body ({kind})")
    value = body.get(token_field)
    if not isinstance(value, str) or not value.strip():
        raise InvalidResponse(f"provider answered {response.status} without a {token_field}")
    token_type = body.get("token_type")
    if token_type is not None and not isinstance(token_type, str):
        raise InvalidResponse("provider answered a token_type that is not a string")
    scope = body.get("scope")
    described = Token(
        value=value,
        expires_at=None,
        minted_at=now,
        token_type=token_type,
        scope=scope if isinstance(scope, str) else None,
        others=_other_tokens(body, token_field),
    )
    if never_expires:
        return described, body
    expires_at = expiry(
        now=now,
        expires_in=body.get("expires_in"),
        token=value,
        provider_default=provider_default,
        fallback=fallback,
    )
    if expires_at - now < MIN_USEFUL_LIFETIME:
        raise TokenExpired("provider handed out a token that is already expired")
    return replace(described, expires_at=expires_at), body


# The tokens of one answer a template may name besides the chosen one. A refresh token is
# provider state (kept apart from what workloads read), never one of these.
_OTHER_TOKENS = ("access_token", "id_token")


def _other_tokens(body: Mapping[str, Any], token_field: str) -> dict[str, str]:
    return {
        name: value
        for name in _OTHER_TOKENS
        if name != token_field and isinstance(value := body.get(name), str) and value
    }


async def request_token(
    request: MintRequest,
    url: str,
    *,
    official: bool,
    token_field: str = "access_token",
    provider_default: timedelta | None = None,
    never_expires: bool = False,
    classify: Callable[[HttpResponse, datetime, Iterable[str]], MintError] = classify_failure,
    **http_request: Any,
) -> tuple[Token, dict[str, Any]]:
    """POST to a token endpoint and parse the answer; the one flow every provider shares.

    Everything that may be echoed back (credentials, saved state) is redacted from errors.
    """
    secrets = sent_secrets(request, http_request.get("headers"), http_request.get("data"))
    response = await call(request.http, "POST", url, official=official, **http_request)
    if not 200 <= response.status < 300:
        raise classify(response, request.now, secrets)
    return token_from_success(
        response,
        now=request.now,
        token_field=token_field,
        provider_default=provider_default,
        fallback=request.fallback_lifetime,
        never_expires=never_expires,
    )


# Refresh tokens: kept as provider state between mints (see Token.state).
REFRESH_TOKEN = "refresh_token"
REFRESH_EXPIRES_AT = "refresh_expires_at"
# A refresh token this close to its end is not worth a round trip.
_REFRESH_MARGIN = timedelta(seconds=10)


def refresh_state(body: Mapping[str, Any], now: datetime) -> dict[str, str]:
    """The refresh token of a token answer (empty when there is none)."""
    value = body.get("refresh_token")
    if not isinstance(value, str) or not value:
        return {}
    lifetime = _expires_in(body.get("refresh_expires_in"))
    expires = now + lifetime if lifetime is not None else jwt_expiry(value)
    state = {REFRESH_TOKEN: value}
    if expires is not None:
        state[REFRESH_EXPIRES_AT] = expires.isoformat()
    return state


def usable_refresh_token(state: Mapping[str, str], now: datetime) -> str | None:
    value = state.get(REFRESH_TOKEN)
    if not value:
        return None
    raw_expiry = state.get(REFRESH_EXPIRES_AT)
    if raw_expiry:
        try:
            expires = datetime.fromisoformat(raw_expiry)
        except ValueError:
            return None
        if expires - now < _REFRESH_MARGIN:
            return None
    return value


def endpoint(spec: Mapping[str, Any], official: str) -> tuple[str, bool]:
    """The provider's official endpoint, or the spec's ``tokenUrl`` override of it.

    Only the official one skips the operator's allowlist (HttpClient checks every call).
    """
    override = spec.get("tokenUrl")
    if not override or override == official:
        return official, True
    return str(override), False
