"""Property tests: whatever a provider answers, parsing ends in a Token or a MintError.

Never another exception (which would bypass the failure handling), never a secret in the
message, never a token that is already expired.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from tokensync.endpoints import HttpResponse
from tokensync.providers import basiq, biotz, token_endpoint
from tokensync.providers.base import MintError, Token

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
SECRET = "s3cr3t-Value-42"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
token_fields = st.fixed_dictionaries(
    {},
    optional={
        "access_token": st.one_of(st.text(max_size=30), json_values),
        "id_token": st.one_of(st.text(max_size=30), json_values),
        "expires_in": st.one_of(st.integers(-10, 10**12), st.text(max_size=8), json_values),
        "token_type": json_values,
        "error": st.one_of(
            st.sampled_from(list(token_endpoint.OAUTH_ERRORS)), st.text(max_size=12)
        ),
        "error_description": st.one_of(st.just(f"bad password {SECRET}"), st.text(max_size=30)),
        "data": json_values,
    },
)
bodies = st.one_of(
    token_fields.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "retry-after": st.one_of(
            st.integers(-5, 10**30).map(str),
            st.text(max_size=30),
            st.just("²"),  # a digit to str.isdigit, not to int()
            st.just("Mon, 23 Nov 2026 10:01:00 GMT"),
        ),
        "content-type": st.sampled_from(["application/json", "text/html", "x/y"]),
    },
)


@settings(max_examples=400, deadline=None)
@given(status=st.integers(100, 599), body=bodies, head=headers)
def test_failure_answers_always_classify(status: int, body: bytes, head: dict[str, str]) -> None:
    response = HttpResponse(status=status, headers=head, body=body)
    for classify in (token_endpoint.classify_failure, biotz.classify, basiq.classify):
        error = classify(response, NOW, [SECRET])
        assert isinstance(error, MintError)
        assert SECRET not in error.message
        assert error.retry_after is None or error.retry_after >= timedelta(0)


@settings(max_examples=400, deadline=None)
@given(
    body=bodies,
    field=st.sampled_from(["access_token", "id_token"]),
    fallback=st.sampled_from([None, timedelta(hours=1)]),
)
def test_success_answers_give_a_valid_token_or_a_mint_error(
    body: bytes, field: str, fallback: timedelta | None
) -> None:
    response = HttpResponse(status=200, headers={}, body=body)
    try:
        token, _ = token_endpoint.token_from_success(
            response, now=NOW, token_field=field, fallback=fallback
        )
    except MintError as error:
        assert SECRET not in error.message
        return
    assert isinstance(token, Token) and token.value.strip()
    assert (
        token.expires_at is not None
        and token.expires_at - NOW >= token_endpoint.MIN_USEFUL_LIFETIME
    )
