"""The one clock. Made once at the top (runtime, the one-shot mint) and passed down.

Every decision about time (renewals, retries, leases, Event times, the work queue's
timers) reads this clock, never ``datetime.now`` or ``time.time`` of its own, so a test
can move time and see the whole operator follow. Elapsed durations (a mint's duration
for metrics and logs, the Kubernetes client's credential refresh interval) are measured
on the monotonic clocks: no renewal, retry or lease is decided on them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)
