"""A bound on the operator's requests in flight, with the most urgent served first.

When the API server is the bottleneck (a burst of new ProviderTokens), every request
tokensync sends competes for the same CPU. What workloads wait for is the token in its
Secret; the status write that follows costs the API server about three times as much
(docs/decisions/0004-scale.md) and can come a moment later; Events can wait longest.
Below the bound nothing waits and the order does not matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator
from enum import IntEnum


class Lane(IntEnum):
    """Lower is served first."""

    TOKEN = 0  # target and state Secrets, and the reads that lead to them
    STATUS = 1  # ProviderToken status
    EVENT = 2


class PriorityGate:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._limit = limit
        self._busy = 0
        self._waiting: list[tuple[Lane, int, asyncio.Future[None]]] = []
        self._sequence = itertools.count()

    @contextlib.asynccontextmanager
    async def slot(self, lane: Lane) -> AsyncIterator[None]:
        await self._acquire(lane)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, lane: Lane) -> None:
        # Below the limit nobody waits: a release hands its place to a waiter first.
        if self._busy < self._limit:
            self._busy += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (lane, next(self._sequence), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # Handed a place just as it was cancelled: pass the place on.
                self._release()
            else:
                future.cancel()  # skipped when its turn comes
            raise

    def _release(self) -> None:
        while self._waiting:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)  # the place moves to the waiter: busy stays
                return
        self._busy -= 1
