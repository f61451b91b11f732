"""What the status and the Events say. Pure: the reconciler writes what comes back.

Every status patch is built by ``_patch``: a token minted, a failure, a spec tokensync
cannot serve. The wording of Events lives here too, so a reader finds what a user sees
in ``kubectl describe`` in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tokensync import names
from tokensync.decision import Cause, TargetConflict
from tokensync.model import ProviderTokenView, Status, format_time, parse_time
from tokensync.providers.base import InvalidSpec, MintError, Token
from tokensync.timing import URGENT_MIN, URGENT_SPREAD


@dataclass(frozen=True)
class Report:
    """A status patch and the message its Ready condition carries."""

    patch: dict[str, Any]
    message: str


@dataclass(frozen=True)
class Announcement:
    """An Event to record about the ProviderToken."""

    type: str
    reason: str
    note: str


def _ready_condition(
    previous: Status,
    generation: int | None,
    ready: bool,
    reason: str,
    message: str,
    now: datetime,
) -> dict[str, Any]:
    status = "True" if ready else "False"
    unchanged = previous.ready == status and previous.last_transition
    return {
        "type": names.READY,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": previous.last_transition if unchanged else format_time(now),
    }


def _patch(generation: int | None, condition: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    return {"status": {"observedGeneration": generation, **fields, "conditions": [condition]}}


def minted(
    view: ProviderTokenView, token: Token, renewal: datetime | None, now: datetime
) -> Report:
    """The token is in its Secret: Ready, and when it is renewed."""
    message = (
        f"token valid until {format_time(token.expires_at) or 'never'}; "
        f"next renewal at {format_time(renewal)}"
        if renewal
        else "token does not expire; minted again only when the spec or credentials change"
    )
    condition = _ready_condition(view.status, view.generation, True, "Minted", message, now)
    patch = _patch(
        view.generation,
        condition,
        provider=view.provider,
        expiresAt=format_time(token.expires_at),
        renewalTime=format_time(renewal),
        lastMintTime=format_time(token.minted_at),
        failedAttempts=0,
        lastRenewRequest=view.renew_request,
    )
    return Report(patch, message)


def failed(
    view: ProviderTokenView,
    error: MintError,
    attempts: int,
    next_try: datetime,
    serving_until: datetime | None,
    now: datetime,
    *,
    urgent: bool = False,
) -> Report:
    """Not Ready, why, what the Secret holds meanwhile, and when tokensync tries again.

    While ``urgent`` (the token has expired or is about to) the message gives the
    interval, not the next time: it stays the same from one attempt to the next, so
    ``repeats`` spares the status a write every few seconds.
    """
    if serving_until is None:
        kept = ""
    elif serving_until > now:
        kept = f"; the last good token stays in the Secret until {format_time(serving_until)}"
    else:
        kept = f"; the token in the Secret expired at {format_time(serving_until)}"
    if urgent:
        low, high = (
            int(URGENT_MIN.total_seconds()),
            int((URGENT_MIN + URGENT_SPREAD).total_seconds()),
        )
        then = f"trying again every {low}-{high} s until it succeeds"
    else:
        then = f"next attempt at {format_time(next_try)}"
    message = f"{error.message}{kept}; {then}"
    condition = _ready_condition(view.status, view.generation, False, error.reason, message, now)
    patch = _patch(
        view.generation,
        condition,
        provider=view.provider,
        renewalTime=format_time(next_try),
        failedAttempts=attempts,
        lastRenewRequest=view.renew_request,
    )
    return Report(patch, message)


def repeats(view: ProviderTokenView, error: MintError, report: Report) -> bool:
    """The status already says exactly this failure: writing it again tells nobody
    anything (only the attempt count and the next time would change)."""
    return _reports(view, error) and view.status.message == report.message


def failing_since(view: ProviderTokenView, now: datetime) -> datetime:
    """When the failure began: the Ready condition turned False for this generation
    (it keeps that time while the reason changes); ``now`` for a first failure."""
    status = view.status
    if status.ready == "False" and status.observed_generation == view.generation:
        since = parse_time(status.last_transition)
        if since is not None and since <= now:
            return since
    return now


def invalid(body: Mapping[str, Any], message: str, now: datetime) -> Report | None:
    """A spec the schema let through but tokensync cannot serve. ``None`` when this
    generation is already reported: the status write comes back as an event, which must
    not write again."""
    generation = (body.get("metadata") or {}).get("generation")
    previous = Status.parse(body.get("status") or {})
    if previous.reason == InvalidSpec.reason and previous.observed_generation == generation:
        return None
    # A fresh transition time: the previous condition may be of an older, valid spec.
    condition = _ready_condition(Status(), generation, False, InvalidSpec.reason, message, now)
    return Report(_patch(generation, condition), message)


def already_reported(view: ProviderTokenView, error: MintError, now: datetime) -> bool:
    """A failure found before any request (credentials missing, a conflict) that the
    status already reports, for this generation, with its retry still ahead: our own
    status write triggers a new look, and that look must not write once more."""
    renewal = view.status.renewal_time
    return _reports(view, error) and renewal is not None and renewal > now


def already_failing(view: ProviderTokenView, error: MintError) -> bool:
    """The status already says Ready=False for this reason (a repeat, not news)."""
    return view.status.ready == "False" and view.status.reason == error.reason


def _reports(view: ProviderTokenView, error: MintError) -> bool:
    """Ready=False for this very reason, generation and renewal request."""
    status = view.status
    return (
        already_failing(view, error)
        and status.observed_generation == view.generation
        and status.last_renew_request == view.renew_request
    )


_MINT_EVENT_REASONS = {
    Cause.CREDENTIALS_CHANGED: "CredentialsChanged",
    Cause.SECRET_MISSING: "SecretRestored",
    Cause.SECRET_DRIFTED: "SecretRestored",
    Cause.TEMPLATE_CHANGED: "SecretRendered",
}
_MINT_NOTES = {
    Cause.INITIAL: "minted the first token",
    Cause.SPEC_CHANGED: "spec changed: minted a new token",
    Cause.TEMPLATE_CHANGED: "target type, key or template changed: wrote the same token again",
    Cause.RENEW_REQUESTED: "renewal requested through tokensync.dev/renew",
    Cause.CREDENTIALS_CHANGED: "credentials changed: minted a new token",
    Cause.SECRET_MISSING: "target Secret was missing: restored",
    Cause.SECRET_DRIFTED: "target Secret was edited: restored",
    Cause.EXPIRED: "token had expired: minted a new one",
    Cause.RETRY: "recovered: minted a new token",
    Cause.WRITE_RETRY: "wrote the token minted before the API server refused a write",
}


def mint_event(cause: Cause, message: str) -> Announcement | None:
    """Events on transitions only: a healthy token renewing on schedule stays quiet."""
    if cause is Cause.SCHEDULED:
        return None
    reason = _MINT_EVENT_REASONS.get(cause, "Minted")
    return Announcement("Normal", reason, f"{_MINT_NOTES[cause]}; {message}")


def failure_event(view: ProviderTokenView, error: MintError, message: str) -> Announcement | None:
    """A Warning when the token goes not-Ready, or fails for another reason than before."""
    if already_failing(view, error):
        return None
    reason = error.reason if isinstance(error, TargetConflict) else "MintFailed"
    return Announcement("Warning", reason, f"{error.reason}: {message}")
