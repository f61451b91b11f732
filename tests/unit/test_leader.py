"""Leader election when the API server does not answer: the Lease is asked for again
every second, not every renewal period, so leadership returns soon after it is back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from tokensync.kube import ApiError
from tokensync.leader import LeaderElector


class SilentApi:
    """An API server that is down until ``back`` is set, then has no Lease yet."""

    def __init__(self) -> None:
        self.asked = 0
        self.asked_thrice = asyncio.Event()
        self.back = False
        self.created: list[dict[str, Any]] = []

    async def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        self.asked += 1
        if self.asked >= 3:
            self.asked_thrice.set()
        if not self.back:
            raise ApiError(0, "Unreachable", "connection refused")
        if method == "GET":
            raise ApiError(404, "NotFound", "no lease")
        self.created.append(kwargs.get("json_body") or {})
        return {}


async def test_an_unreachable_lease_is_asked_for_every_second_and_taken_when_back() -> None:
    api = SilentApi()
    changes: list[bool] = []
    leading = asyncio.Event()
    elector = LeaderElector(
        api,  # type: ignore[arg-type]
        namespace="tokensync-system",
        name="tokensync-leader",
        identity="replica-a",
        on_change=lambda now: (changes.append(now), leading.set()),
        renew_s=30.0,  # a renewal period far longer than the test
        clock=lambda: datetime.now(UTC),
    )
    elector.start()
    try:
        # Three asks within 10 s, with a renewal period of 30 s.
        await asyncio.wait_for(api.asked_thrice.wait(), timeout=10)
        assert not elector.leading
        api.back = True
        await asyncio.wait_for(leading.wait(), timeout=10)
        assert elector.leading and changes == [True]
    finally:
        await elector.stop()
