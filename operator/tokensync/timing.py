"""Pure timing: when to renew, how long to wait before a retry of a mint or a write.

No I/O, no clock reads.

Callers pass ``now`` and a ``jitter`` drawn from [0, 1), so every decision is a plain
function of its inputs and can be table-tested.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

# The kubelet refreshes mounted Secrets on its sync period plus its cache TTL: about one
# to two minutes. A token renewed later than that before expiry may reach a Pod too late.
KUBELET_PROPAGATION_MARGIN = timedelta(seconds=90)
# cert-manager's rule: renew when a third of the lifetime remains.
DEFAULT_REMAINING_FRACTION = 1 / 3
# Jitter only ever moves a renewal earlier, by at most this share of the wait, capped.
JITTER_FRACTION = 0.10
JITTER_CAP = timedelta(seconds=60)

# A failure the far side will end (the provider down, slow, rate limiting, answering
# garbage): the wait grows with how long the failure has lasted, not with how many
# attempts were made, so attempts forced close together by a short-lived token do not
# push the next one out. Half the failure's age: each wait about 1.4x the one before.
TRANSIENT_BASE = timedelta(seconds=2)
TRANSIENT_GROWTH = 0.5
TRANSIENT_CAP = timedelta(minutes=5)
# Once the token in the Secret has expired, or will within this margin, the workload is
# broken or about to be: ask again every few seconds until the provider answers. The
# wait is drawn uniformly from [URGENT_MIN, URGENT_MIN + URGENT_SPREAD): the tokens of one
# provider meet its return spread over those seconds (a quarter of them per second at
# most), and every one has a fresh token within URGENT_MIN + URGENT_SPREAD of it.
URGENT_MARGIN = timedelta(seconds=60)
URGENT_MIN = timedelta(seconds=2)
URGENT_SPREAD = timedelta(seconds=4)
EXPIRY_LEAD = timedelta(seconds=1)
# Bad credentials and the like: a locked account stays locked if hammered.
PERMANENT_BASE = timedelta(minutes=5)
PERMANENT_GROWTH = 1.0
PERMANENT_CAP = timedelta(hours=1)
# A provider's Retry-After is honoured up to this: a mistaken header must not park a
# token for hours.
RETRY_AFTER_CAP = timedelta(minutes=5)
MIN_RETRY = timedelta(seconds=1)

# After a failed Secret or status write the token is in hand: write it again soon.
WRITE_RETRY_BASE = timedelta(seconds=2)
WRITE_RETRY_CAP = timedelta(minutes=1)
# An API server that does not answer at all (restarting, a network cut) costs nothing to
# ask again: try every few seconds, so the token lands soon after it is back.
UNREACHABLE_WRITE_RETRY_CAP = timedelta(seconds=5)

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> timedelta:
    """Go-style durations as the CRD accepts them: ``90s``, ``2m``, ``1h30m``, ``500ms``."""
    if not _DURATION.match(text):
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 2m, 1h30m)")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class RefreshPolicy:
    """``spec.refresh``: at most one of the two may be set (the CRD enforces it)."""

    renew_before: timedelta | None = None
    renew_before_percentage: int | None = None


def renew_before(lifetime: timedelta, policy: RefreshPolicy) -> timedelta:
    """How long before expiry the next mint is due, never more than 90% of the lifetime."""
    if policy.renew_before is not None:
        wanted = policy.renew_before
    elif policy.renew_before_percentage is not None:
        wanted = lifetime * (policy.renew_before_percentage / 100)
    else:
        wanted = max(
            lifetime * DEFAULT_REMAINING_FRACTION,
            min(KUBELET_PROPAGATION_MARGIN, lifetime / 2),
        )
    # A renewal at the mint itself would loop; keep at least a tenth of the lifetime in use.
    return min(wanted, lifetime * 0.9)


def renewal_time(
    minted_at: datetime,
    expires_at: datetime | None,
    policy: RefreshPolicy,
    jitter: float,
) -> datetime | None:
    """When the next mint is due; ``None`` for a token that never expires."""
    if expires_at is None:
        return None
    lifetime = expires_at - minted_at
    if lifetime <= timedelta(0):
        return minted_at
    due = expires_at - renew_before(lifetime, policy)
    wait = due - minted_at
    spread = min(wait * JITTER_FRACTION, JITTER_CAP)
    # Whole seconds, earlier not later: status.renewalTime has second precision, and the
    # timer must fire exactly when the status says, also after a restart.
    return (due - spread * _unit(jitter)).replace(microsecond=0)


def retry_delay(
    failing_for: timedelta,
    *,
    serving_for: timedelta | None,
    permanent: bool,
    jitter: float,
    awaits_user: bool = False,
    retry_after: timedelta | None = None,
) -> timedelta:
    """Delay before the next attempt of a mint that has failed for ``failing_for``.

    ``serving_for`` is how long the token in the Secret stays valid (zero when there is
    none or it has expired, ``None`` when it never expires).

    - Permanent failures (bad credentials) wait 5 minutes, then as long as they have
      lasted, up to an hour; the token's life does not pull them in.
    - Other failures wait half as long as they have lasted (2 s to 5 min, equal jitter),
      and never past half the token's remaining life, so an attempt comes before it ends.
    - Once that token has expired or is within ``URGENT_MARGIN`` of it, attempts come
      every 2-6 s (uniform) until the provider answers, and one just before it expires:
      the workload is broken now.
      Not for failures only a person can end (``awaits_user``: a Secret to create).
    - ``Retry-After`` is honoured (up to ``RETRY_AFTER_CAP``), also over the above.
    """
    if permanent:
        delay = _equal_jitter(failing_for, PERMANENT_BASE, PERMANENT_GROWTH, PERMANENT_CAP, jitter)
    elif urgent(serving_for, permanent=permanent, awaits_user=awaits_user):
        delay = URGENT_MIN + URGENT_SPREAD * _unit(jitter)
        if serving_for is not None and serving_for > timedelta(0):
            # One attempt just before the token expires: a provider back in the meantime
            # then replaces it in time, instead of up to 6 s after it expired.
            delay = min(delay, serving_for - EXPIRY_LEAD)
    else:
        delay = _equal_jitter(failing_for, TRANSIENT_BASE, TRANSIENT_GROWTH, TRANSIENT_CAP, jitter)
        if serving_for is not None:
            delay = min(delay, max(serving_for / 2, URGENT_MIN))
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_CAP))
    return delay if delay > MIN_RETRY else MIN_RETRY


def urgent(serving_for: timedelta | None, *, permanent: bool, awaits_user: bool) -> bool:
    """Whether a failed mint is retried every few seconds (see ``retry_delay``)."""
    return (
        not permanent
        and not awaits_user
        and serving_for is not None
        and serving_for <= URGENT_MARGIN
    )


def _equal_jitter(
    failing_for: timedelta, base: timedelta, growth: float, cap: timedelta, jitter: float
) -> timedelta:
    """Between half and all of the backoff: retries spread but never vanish."""
    backoff = min(max(failing_for * growth, base), cap)
    return backoff / 2 + (backoff / 2) * _unit(jitter)


def write_retry_delay(
    failures: int,
    *,
    unreachable: bool,
    now: datetime,
    expiries: Iterable[datetime | None] = (),
) -> timedelta:
    """Delay before writing a minted token again after ``failures`` (1-based) refusals.

    2 s, 4 s, ... up to a minute: a write that keeps failing (a quota, a webhook) must not
    turn into a loop, nor into a new mint each time. Every few seconds while the API
    server does not answer. Never later than half the remaining life of any token in
    ``expiries`` (the one the Secret serves now, the one held for it).
    """
    delay: timedelta = WRITE_RETRY_BASE * 2 ** min(max(failures, 1) - 1, 5)
    cap = UNREACHABLE_WRITE_RETRY_CAP if unreachable else WRITE_RETRY_CAP
    for expiry in expiries:
        if expiry is not None and expiry > now:
            cap = min(cap, max((expiry - now) / 2, MIN_RETRY))
    return delay if delay < cap else cap


def _unit(jitter: float) -> float:
    return min(max(jitter, 0.0), 1.0)
