"""One timer and a bounded pool of workers for every ProviderToken.

Each key is due at one time at most; scheduling it again moves it. A key is never
processed by two workers at once: one that becomes due while it runs is run again
right after. Thousands of tokens cost one sleeping task, not one task each.

A handler may hand back a follow-up (an awaitable): the worker is free for the next key
at once, and the key stays busy until the follow-up is done. tokensync writes a
token's status that way, so a status write waiting behind other tokens' Secret writes
does not hold a worker (docs/decisions/0004-scale.md). Follow-ups wait in a queue for one
of a bounded pool of finishers, not as a task each: in a burst thousands of status
writes wait, and a task each (its chain of coroutine frames) left the operator's memory
fragmented long after (docs/decisions/0012).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable, Hashable
from datetime import datetime
from typing import Generic, TypeVar

from tokensync.clock import Clock

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

logger = logging.getLogger(__name__)

# Sleep in slices no longer than this, so a wall-clock jump is noticed soon enough.
_MAX_SLEEP_S = 5.0


class WorkQueue(Generic[K]):
    def __init__(
        self,
        handler: Callable[[K], Awaitable[Awaitable[None] | None]],
        *,
        workers: int,
        clock: Clock,
        finishers: int = 1,
    ) -> None:
        self._handler = handler
        self._workers = workers
        self._clock = clock
        self._due: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._sequence = itertools.count()
        self._ready: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._running: set[K] = set()
        self._rerun: set[K] = set()
        self._wakeup = asyncio.Event()
        self._active = asyncio.Event()
        self._active.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._finishers = finishers
        self._follow_ups: asyncio.Queue[tuple[K, Awaitable[None]]] = asyncio.Queue()

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._timer(), name="workqueue-timer"))
        for index in range(self._workers):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"workqueue-{index}"))
        for index in range(self._finishers):
            self._tasks.append(asyncio.create_task(self._finisher(), name=f"finisher-{index}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        while not self._follow_ups.empty():
            key, follow_up = self._follow_ups.get_nowait()
            _discard(follow_up)
            self._done(key)

    def pause(self) -> None:
        """Stop taking keys (a standby replica); timers keep running, keys keep queueing."""
        self._active.clear()

    def resume(self) -> None:
        self._active.set()

    def running(self) -> bool:
        """All timer and worker tasks are alive (none crashed or finished)."""
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    def __len__(self) -> int:
        return len(self._due)

    def busy(self, key: K) -> bool:
        """``key`` has work not done yet: waiting for a worker (a paused queue holds it
        there), being processed (its follow-up included), or to run again after. Read
        only; a key whose timer has not fired yet is not busy."""
        return key in self._queued or key in self._running or key in self._rerun

    def enqueue(self, key: K) -> None:
        """Process ``key`` as soon as a worker is free."""
        self._due.pop(key, None)
        self._make_ready(key)

    def schedule(self, key: K, at: datetime | None) -> None:
        """Process ``key`` at time ``at`` of the clock; ``None`` forgets its timer."""
        if at is None:
            self._due.pop(key, None)
            return
        if at <= self._clock():
            self.enqueue(key)
            return
        due = at.timestamp()
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._sequence), key))
        if self._heap[0][2] == key:
            self._wakeup.set()

    def forget(self, key: K) -> None:
        self._due.pop(key, None)
        self._rerun.discard(key)

    def _make_ready(self, key: K) -> None:
        if key in self._running:
            self._rerun.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.put_nowait(key)

    async def _timer(self) -> None:
        while True:
            now = self._clock().timestamp()
            while self._heap and self._heap[0][0] <= now:
                at, _, key = heapq.heappop(self._heap)
                if self._due.get(key) == at:
                    del self._due[key]
                    self._make_ready(key)
            delay = self._heap[0][0] - now if self._heap else _MAX_SLEEP_S
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=min(delay, _MAX_SLEEP_S))

    async def _worker(self) -> None:
        while True:
            await self._active.wait()
            key = await self._ready.get()
            if not self._active.is_set():
                # Paused while waiting for a key: put it back for whoever resumes.
                self._ready.put_nowait(key)
                await self._active.wait()
                continue
            self._queued.discard(key)
            self._running.add(key)
            try:
                follow_up = await self._guarded(key, self._handler(key))
            except asyncio.CancelledError:
                self._done(key)
                raise
            if follow_up is None:
                self._done(key)
            else:
                self._follow_ups.put_nowait((key, follow_up))

    async def _finisher(self) -> None:
        while True:
            key, follow_up = await self._follow_ups.get()
            try:
                await self._guarded(key, follow_up)
            finally:
                self._done(key)

    async def _guarded(self, key: K, step: Awaitable[T]) -> T | None:
        try:
            return await step
        except Exception as error:
            # The handler reports its own failures; this only keeps the worker alive.
            # The type only: an exception's text may quote a secret.
            logger.error("unexpected %s while processing %s", type(error).__name__, key)
            return None

    def _done(self, key: K) -> None:
        self._running.discard(key)
        if key in self._rerun:
            self._rerun.discard(key)
            self._make_ready(key)


def _discard(follow_up: Awaitable[None]) -> None:
    """A follow-up never started: close it (a coroutine) or cancel it (a future)."""
    if inspect.iscoroutine(follow_up):
        follow_up.close()
    elif isinstance(follow_up, asyncio.Future):
        follow_up.cancel()
