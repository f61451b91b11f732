"""What the status and the Events say: the pure builders, one row per situation."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tokensync import status
from tokensync.decision import Cause, CredentialsNotFound, TargetConflict
from tokensync.model import ProviderTokenView, Status, format_time, parse_provider_token
from tokensync.providers.base import InvalidCredentials, ProviderUnavailable, Token

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
EARLIER = "2026-11-22T08:00:00Z"


def view(ready: str | None = None, reason: str = "Minted", renewal: datetime | None = None) -> Any:
    conditions = (
        [{"type": "Ready", "status": ready, "reason": reason, "lastTransitionTime": EARLIER}]
        if ready
        else []
    )
    return parse_provider_token(
        {
            "metadata": {"namespace": "ns", "name": "pt", "uid": "u", "generation": 3},
            "spec": {
                "provider": {"podero": {}},
                "credentialsRef": {"name": "creds"},
                "target": {"name": "out"},
            },
            "status": {
                "observedGeneration": 3,
                "renewalTime": format_time(renewal),
                "conditions": conditions,
            },
        }
    )


def condition(report: status.Report) -> dict[str, Any]:
    conditions: list[dict[str, Any]] = report.patch["status"]["conditions"]
    assert len(conditions) == 1
    return conditions[0]


def test_minted_says_until_when_and_resets_the_failure_count() -> None:
    token = Token("v", expires_at=NOW + timedelta(hours=1), minted_at=NOW)
    report = status.minted(view(), token, NOW + timedelta(minutes=40), NOW)
    assert report.message == (
        "token valid until 2026-11-23T11:00:00Z; next renewal at 2026-11-23T10:40:00Z"
    )
    fields = report.patch["status"]
    assert fields["observedGeneration"] == 3
    assert fields["failedAttempts"] == 0
    assert fields["expiresAt"] == "2026-11-23T11:00:00Z"
    assert fields["renewalTime"] == "2026-11-23T10:40:00Z"
    assert condition(report) | {"lastTransitionTime": None} == {
        "type": "Ready",
        "status": "True",
        "reason": "Minted",
        "message": report.message,
        "observedGeneration": 3,
        "lastTransitionTime": None,
    }


@pytest.mark.parametrize(
    ("ready", "transition"),
    [(None, format_time(NOW)), ("False", format_time(NOW)), ("True", EARLIER)],
)
def test_the_transition_time_moves_only_when_ready_changes(
    ready: str | None, transition: str
) -> None:
    token = Token("v", expires_at=None, minted_at=NOW)
    report = status.minted(view(ready), token, None, NOW)
    assert report.message.startswith("token does not expire")
    assert condition(report)["lastTransitionTime"] == transition


@pytest.mark.parametrize(
    ("serving_until", "kept"),
    [
        (NOW + timedelta(minutes=5), True),
        (NOW - timedelta(seconds=1), False),
        (None, False),
    ],
)
def test_a_failure_says_whether_the_last_good_token_still_serves(
    serving_until: datetime | None, kept: bool
) -> None:
    error = ProviderUnavailable("token endpoint unreachable: connection failed")
    next_try = NOW + timedelta(seconds=30)
    report = status.failed(view("True"), error, 2, next_try, serving_until, NOW)
    assert report.message.startswith("token endpoint unreachable: connection failed")
    assert ("the last good token stays in the Secret" in report.message) is kept
    assert report.message.endswith("next attempt at 2026-11-23T10:00:30Z")
    assert report.patch["status"]["failedAttempts"] == 2
    assert report.patch["status"]["renewalTime"] == "2026-11-23T10:00:30Z"
    assert "expiresAt" not in report.patch["status"]
    assert condition(report)["reason"] == "ProviderUnavailable"


def test_an_expired_token_retried_every_few_seconds_reads_the_same_at_every_attempt() -> None:
    error = ProviderUnavailable("token endpoint answered 503")
    first = status.failed(
        view("True"),
        error,
        1,
        NOW + timedelta(seconds=3),
        NOW - timedelta(seconds=1),
        NOW,
        urgent=True,
    )
    assert first.message == (
        "token endpoint answered 503; the token in the Secret expired at "
        "2026-11-23T09:59:59Z; trying again every 2-6 s until it succeeds"
    )
    # The next attempt, written back as the API server would hold it.
    later = NOW + timedelta(seconds=4)
    failing = replace(view("True"), status=Status.parse(first.patch["status"]))
    again = status.failed(
        failing,
        error,
        2,
        later + timedelta(seconds=5),
        NOW - timedelta(seconds=1),
        later,
        urgent=True,
    )
    assert status.repeats(failing, error, again)
    # Another error, or a token that was still valid before: written.
    other = ProviderUnavailable("token endpoint unreachable: connection failed")
    assert not status.repeats(
        failing,
        other,
        status.failed(failing, other, 2, later, NOW - timedelta(seconds=1), later, urgent=True),
    )
    assert not status.repeats(view("True"), error, first)


@pytest.mark.parametrize(
    ("ready", "generation", "since"),
    [
        ("False", 3, datetime(2026, 11, 22, 8, 0, tzinfo=UTC)),  # failing since then
        ("True", 3, NOW),  # a first failure
        ("False", 2, NOW),  # failing for an older spec: this one begins now
        (None, None, NOW),
    ],
)
def test_a_failure_lasts_since_ready_turned_false_for_this_generation(
    ready: str | None, generation: int | None, since: datetime
) -> None:
    current = view(ready, reason="ProviderUnavailable") if ready else view()
    current = replace(current, status=replace(current.status, observed_generation=generation))
    assert status.failing_since(current, NOW) == since


def test_an_invalid_spec_is_reported_once_per_generation() -> None:
    body: dict[str, Any] = {"metadata": {"namespace": "ns", "name": "pt", "generation": 4}}
    report = status.invalid(body, "two providers", NOW)
    assert report is not None
    assert condition(report)["reason"] == "InvalidSpec"
    assert report.patch["status"]["observedGeneration"] == 4
    assert status.invalid({**body, "status": report.patch["status"]}, "again", NOW) is None
    newer = {"metadata": {**body["metadata"], "generation": 5}, "status": report.patch["status"]}
    assert status.invalid(newer, "still two", NOW) is not None


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        (view("False", "CredentialsNotFound", NOW + timedelta(minutes=1)), True),
        # Its retry is due: write again (a new attempt, a new count).
        (view("False", "CredentialsNotFound", NOW - timedelta(minutes=1)), False),
        (view("False", "TargetConflict", NOW + timedelta(minutes=1)), False),
        (view("True", "Minted", NOW + timedelta(minutes=1)), False),
    ],
)
def test_a_failure_already_reported_is_not_written_again(
    current: ProviderTokenView, expected: bool
) -> None:
    error = CredentialsNotFound("credentials Secret creds not found in namespace ns")
    assert status.already_reported(current, error, NOW) is expected


@pytest.mark.parametrize(
    ("cause", "reason"),
    [
        (Cause.INITIAL, "Minted"),
        (Cause.CREDENTIALS_CHANGED, "CredentialsChanged"),
        (Cause.SECRET_MISSING, "SecretRestored"),
        (Cause.SECRET_DRIFTED, "SecretRestored"),
        (Cause.RETRY, "Minted"),
        (Cause.SCHEDULED, None),
    ],
)
def test_events_mark_transitions_and_a_renewal_on_schedule_stays_quiet(
    cause: Cause, reason: str | None
) -> None:
    event = status.mint_event(cause, "token valid until ...")
    assert (event.reason if event else None) == reason
    if event is not None:
        assert event.type == "Normal"
        assert event.note.endswith("; token valid until ...")


def test_every_cause_has_an_event_note() -> None:
    for cause in Cause:
        status.mint_event(cause, "m")


@pytest.mark.parametrize(
    ("current", "error", "reason"),
    [
        (view("True"), InvalidCredentials("bad"), "MintFailed"),
        (view("False", "ProviderUnavailable"), InvalidCredentials("bad"), "MintFailed"),
        (view("False", "InvalidCredentials"), InvalidCredentials("bad"), None),
        (view("True"), TargetConflict("taken"), "TargetConflict"),
    ],
)
def test_a_warning_when_a_token_fails_anew(current: Any, error: Any, reason: str | None) -> None:
    event = status.failure_event(current, error, "bad; next attempt at ...")
    assert (event.reason if event else None) == reason
    if event is not None:
        assert event.type == "Warning"
        assert event.note == f"{error.reason}: bad; next attempt at ..."
