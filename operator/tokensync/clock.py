"""The one clock. Made once at the top (runtime, the one-shot mint) and passed down.

Every decision about time (renewals, retries, leases, Event times, the work queue's
timers) reads this clock, never ``datetime.now`` or ``time.time`` of its own, so a test
can move time and see the whole operator follow. Elapsed durations for metrics and
logs are measured with ``time.perf_counter``: nothing is decided on them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)
