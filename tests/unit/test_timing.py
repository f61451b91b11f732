"""The pure timing functions, table by table, with an injected clock and jitter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tokensync.timing import (
    PERMANENT_CAP,
    RETRY_AFTER_CAP,
    TRANSIENT_CAP,
    URGENT_MARGIN,
    URGENT_MIN,
    RefreshPolicy,
    parse_duration,
    renew_before,
    renewal_time,
    retry_delay,
    urgent,
    write_retry_delay,
)

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
S = timedelta(seconds=1)
M = timedelta(minutes=1)
H = timedelta(hours=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", 90 * S),
        ("2m", 2 * M),
        ("1h30m", 90 * M),
        ("500ms", S / 2),
        ("1.5h", 90 * M),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "1d", "-1s", "1h 2m", "s", "1.s"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("lifetime", "policy", "before"),
    [
        # Default: a third of the lifetime, at least the kubelet margin when it fits.
        (H, RefreshPolicy(), 20 * M),
        (10 * H, RefreshPolicy(), timedelta(seconds=12000)),
        (300 * S, RefreshPolicy(), 100 * S),  # Keycloak's 5 minutes
        (180 * S, RefreshPolicy(), 90 * S),  # margin beats the third
        (6 * S, RefreshPolicy(), 3 * S),  # margin capped at half of a tiny lifetime
        (H, RefreshPolicy(renew_before=2 * M), 2 * M),
        (H, RefreshPolicy(renew_before_percentage=50), 30 * M),
        # Never more than 90% of the lifetime: a renewal at the mint would loop.
        (H, RefreshPolicy(renew_before=2 * H), 54 * M),
        (H, RefreshPolicy(renew_before_percentage=95), 54 * M),
    ],
)
def test_renew_before(lifetime: timedelta, policy: RefreshPolicy, before: timedelta) -> None:
    assert renew_before(lifetime, policy) == before


def test_renewal_time_without_jitter_is_expiry_minus_margin() -> None:
    assert renewal_time(T0, T0 + H, RefreshPolicy(), jitter=0.0) == T0 + 40 * M


def test_jitter_only_moves_renewal_earlier_and_is_bounded() -> None:
    latest = renewal_time(T0, T0 + H, RefreshPolicy(), jitter=0.0)
    earliest = renewal_time(T0, T0 + H, RefreshPolicy(), jitter=1.0)
    assert latest is not None and earliest is not None
    assert earliest < latest
    assert latest - earliest == 60 * S  # 10% of 40 min is 4 min, capped at 60 s
    short = renewal_time(T0, T0 + 300 * S, RefreshPolicy(), jitter=1.0)
    assert short == T0 + 200 * S - 20 * S  # 10% of the 200 s wait


def test_renewal_time_for_a_token_that_never_expires() -> None:
    assert renewal_time(T0, None, RefreshPolicy(), jitter=0.5) is None


def test_renewal_time_for_an_expired_token_is_now() -> None:
    assert renewal_time(T0, T0 - S, RefreshPolicy(), jitter=0.5) == T0


# One call at a time; tests/unit/test_outage_sequences.py checks whole outages.
@pytest.mark.parametrize(
    ("failing_for", "jitter", "expected"),
    [
        (0 * S, 0.0, 1 * S),  # the first retry: 1-2 s
        (0 * S, 1.0, 2 * S),
        (10 * S, 1.0, 5 * S),  # half the failure's age
        (10 * S, 0.0, 2.5 * S),
        (2 * M, 1.0, 1 * M),
        (10 * M, 1.0, TRANSIENT_CAP),
        (2 * H, 0.5, TRANSIENT_CAP * 0.75),
    ],
)
def test_transient_backoff_grows_with_how_long_the_failure_lasted(
    failing_for: timedelta, jitter: float, expected: timedelta
) -> None:
    assert retry_delay(failing_for, serving_for=H, permanent=False, jitter=jitter) == expected


def test_a_valid_token_is_retried_before_it_expires() -> None:
    assert retry_delay(H, serving_for=3 * M, permanent=False, jitter=1.0) == 90 * S


@pytest.mark.parametrize("serving_for", [0 * S, 30 * S, URGENT_MARGIN])
@pytest.mark.parametrize("failing_for", [0 * S, 10 * M, 2 * H])
@pytest.mark.parametrize(("jitter", "expected"), [(0.0, 2 * S), (0.5, 4 * S), (1.0, 6 * S)])
def test_an_expired_or_expiring_token_is_retried_every_few_seconds_however_long_it_failed(
    serving_for: timedelta, failing_for: timedelta, jitter: float, expected: timedelta
) -> None:
    assert urgent(serving_for, permanent=False, awaits_user=False)
    delay = retry_delay(failing_for, serving_for=serving_for, permanent=False, jitter=jitter)
    assert delay == expected


def test_a_token_that_never_expires_is_never_urgent() -> None:
    assert not urgent(None, permanent=False, awaits_user=False)
    assert retry_delay(2 * H, serving_for=None, permanent=False, jitter=1.0) == TRANSIENT_CAP


def test_a_failure_only_a_person_ends_backs_off_even_without_a_token() -> None:
    # A credentials Secret not created yet: not asked for every few seconds.
    assert not urgent(0 * S, permanent=False, awaits_user=True)
    delay = retry_delay(2 * H, serving_for=0 * S, permanent=False, awaits_user=True, jitter=1.0)
    assert delay == URGENT_MIN
    delay = retry_delay(2 * H, serving_for=H, permanent=False, awaits_user=True, jitter=1.0)
    assert delay == TRANSIENT_CAP


@pytest.mark.parametrize(
    ("serving_for", "retry_after", "expected"),
    [
        (H, 30 * S, 30 * S),
        (0 * S, 30 * S, 30 * S),  # honoured over the urgent interval
        (10 * S, 10 * M, RETRY_AFTER_CAP),  # honoured up to five minutes
    ],
)
def test_retry_after_is_honoured(
    serving_for: timedelta, retry_after: timedelta, expected: timedelta
) -> None:
    delay = retry_delay(
        0 * S, serving_for=serving_for, permanent=False, jitter=0.0, retry_after=retry_after
    )
    assert delay == expected


@pytest.mark.parametrize(
    ("failing_for", "jitter", "expected"),
    [
        (0 * S, 1.0, 5 * M),
        (0 * S, 0.0, 150 * S),
        (20 * M, 1.0, 20 * M),
        (5 * H, 1.0, PERMANENT_CAP),
    ],
)
def test_permanent_failures_are_retried_slowly(
    failing_for: timedelta, jitter: float, expected: timedelta
) -> None:
    assert retry_delay(failing_for, serving_for=H, permanent=True, jitter=jitter) == expected


@pytest.mark.parametrize("serving_for", [0 * S, 10 * S])
def test_permanent_retry_is_not_pulled_in_by_the_token_lifetime(serving_for: timedelta) -> None:
    # A locked account stays locked if hammered: slow even when the token is gone.
    assert not urgent(serving_for, permanent=True, awaits_user=False)
    assert retry_delay(0 * S, serving_for=serving_for, permanent=True, jitter=1.0) == 5 * M


@pytest.mark.parametrize(
    ("failures", "unreachable", "expiries", "expected"),
    [
        # Refusals double from 2 s up to a minute.
        (1, False, (), 2 * S),
        (2, False, (), 4 * S),
        (5, False, (), 32 * S),
        (6, False, (), 60 * S),
        (40, False, (), 60 * S),
        # Silence: every few seconds, never more than 5 s apart.
        (1, True, (), 2 * S),
        (2, True, (), 4 * S),
        (3, True, (), 5 * S),
        (40, True, (), 5 * S),
        # Never later than half the remaining life of a token that serves or is held.
        (6, False, (T0 + 30 * S,), 15 * S),
        (6, False, (None, T0 + 10 * M), 60 * S),
        (6, False, (T0 + 10 * M, T0 + 20 * S), 10 * S),
        # ...but at least a second, and an expired token bounds nothing.
        (6, False, (T0 + S,), S),
        (6, False, (T0 - M,), 60 * S),
    ],
)
def test_write_retry_delay(
    failures: int,
    unreachable: bool,
    expiries: tuple[datetime | None, ...],
    expected: timedelta,
) -> None:
    assert (
        write_retry_delay(failures, unreachable=unreachable, now=T0, expiries=expiries) == expected
    )


@pytest.mark.parametrize(
    ("serving_for", "expected"), [(3 * S, 2 * S), (6.5 * S, 5.5 * S), (0.5 * S, S), (30 * S, 6 * S)]
)
def test_an_urgent_attempt_comes_just_before_the_token_expires(
    serving_for: timedelta, expected: timedelta
) -> None:
    assert retry_delay(M, serving_for=serving_for, permanent=False, jitter=1.0) == expected
