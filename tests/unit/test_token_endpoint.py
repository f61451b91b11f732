"""Token answers and error answers, as every provider parses them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest

from tokensync.endpoints import HttpResponse
from tokensync.providers import token_endpoint
from tokensync.providers.base import (
    ExpiryUnknown,
    InvalidCredentials,
    InvalidRequest,
    InvalidResponse,
    InvalidScope,
    ProviderUnavailable,
    RateLimited,
    TokenExpired,
    UnauthorizedClient,
    UnsupportedGrantType,
)

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def answer(status: int, body: bytes, **headers: str) -> HttpResponse:
    return HttpResponse(
        status=status, headers={k.replace("_", "-"): v for k, v in headers.items()}, body=body
    )


def jwt_with_exp(exp: datetime) -> str:
    return jwt.encode({"exp": int(exp.timestamp()), "sub": "x"}, "k" * 32, algorithm="HS256")


def test_expires_in_wins() -> None:
    token, _ = token_endpoint.token_from_success(
        answer(200, b'{"access_token":"abc","token_type":"bearer","expires_in":300}'), now=NOW
    )
    assert token.expires_at == NOW + timedelta(seconds=300)
    assert token.value == "abc"


def test_expires_in_as_a_string_is_accepted() -> None:
    token, _ = token_endpoint.token_from_success(
        answer(200, b'{"access_token":"abc","expires_in":"60"}'), now=NOW
    )
    assert token.expires_at == NOW + timedelta(seconds=60)


def test_jwt_exp_when_no_expires_in() -> None:
    exp = NOW + timedelta(minutes=7)
    body = f'{{"access_token":"{jwt_with_exp(exp)}"}}'.encode()
    token, _ = token_endpoint.token_from_success(answer(200, body), now=NOW)
    assert token.expires_at == exp


def test_provider_default_then_fallback() -> None:
    body = b'{"access_token":"opaque"}'
    token, _ = token_endpoint.token_from_success(
        answer(200, body), now=NOW, provider_default=timedelta(hours=48)
    )
    assert token.expires_at == NOW + timedelta(hours=48)
    token, _ = token_endpoint.token_from_success(
        answer(200, body), now=NOW, fallback=timedelta(hours=1)
    )
    assert token.expires_at == NOW + timedelta(hours=1)
    with pytest.raises(ExpiryUnknown, match="fallbackLifetime"):
        token_endpoint.token_from_success(answer(200, body), now=NOW)


def test_already_expired_token_is_refused() -> None:
    body = f'{{"access_token":"{jwt_with_exp(NOW - timedelta(seconds=5))}"}}'.encode()
    with pytest.raises(TokenExpired):
        token_endpoint.token_from_success(answer(200, body), now=NOW)


@pytest.mark.parametrize(
    "body",
    [b"<html>oops</html>", b"{", b"[]", b'{"token_type":"Bearer"}', b'{"access_token":""}'],
)
def test_unusable_success_answers(body: bytes) -> None:
    with pytest.raises(InvalidResponse):
        token_endpoint.token_from_success(answer(200, body), now=NOW, fallback=timedelta(hours=1))


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, b'{"error":"invalid_client"}', InvalidCredentials),
        (400, b'{"error":"invalid_grant","error_description":"bad"}', InvalidCredentials),
        (400, b'{"error":"unauthorized_client"}', UnauthorizedClient),
        (400, b'{"error":"invalid_scope"}', InvalidScope),
        (400, b'{"error":"unsupported_grant_type"}', UnsupportedGrantType),
        (400, b'{"error":"invalid_request"}', InvalidRequest),
        (401, b"", InvalidCredentials),
        (500, b"<html>", ProviderUnavailable),
        (503, b'{"error":"temporarily_unavailable"}', ProviderUnavailable),
        (302, b"", ProviderUnavailable),
        (404, b"", InvalidRequest),
    ],
)
def test_failures_are_classified_by_error_code_first(
    status: int, body: bytes, error: type[Exception]
) -> None:
    assert type(token_endpoint.classify_failure(answer(status, body), NOW, [])) is error


def test_rate_limit_carries_retry_after_seconds_or_date() -> None:
    limited = token_endpoint.classify_failure(answer(429, b"", retry_after="17"), NOW, [])
    assert isinstance(limited, RateLimited) and limited.retry_after == timedelta(seconds=17)
    dated = token_endpoint.classify_failure(
        answer(503, b"", retry_after="Mon, 23 Nov 2026 10:01:00 GMT"), NOW, []
    )
    assert dated.retry_after == timedelta(minutes=1)
    assert not limited.permanent and not dated.permanent


def test_permanent_errors_are_marked() -> None:
    assert token_endpoint.classify_failure(
        answer(401, b'{"error":"invalid_client"}'), NOW, []
    ).permanent


def test_echoed_secrets_are_redacted_from_messages() -> None:
    body = b'{"error":"invalid_grant","error_description":"password hunter2 is wrong"}'
    error = token_endpoint.classify_failure(answer(400, body), NOW, ["hunter2"])
    assert "hunter2" not in error.message
    assert "***" in error.message


@pytest.mark.parametrize(
    ("echoed", "secrets"),
    [
        # A secret that begins with another one (a client id) is not left half shown.
        ("client svc secret svc-S3cretValue", ["svc", "svc-S3cretValue"]),
        # As a form body or a query string carried it.
        ("got password=p%40ss+w%2Frd", ["p@ss w/rd"]),
        ("got password=p%40ss%20w%2Frd", ["p@ss w/rd"]),
    ],
)
def test_a_secret_is_redacted_in_every_form_it_was_sent_in(echoed: str, secrets: list[str]) -> None:
    redacted = token_endpoint.redact(echoed, secrets)
    assert "S3cret" not in redacted
    assert "w%2Frd" not in redacted and "w/rd" not in redacted
    assert "***" in redacted
