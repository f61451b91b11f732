"""The work queue: one timer, bounded workers, one run per key at a time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from tokensync.clock import system_clock
from tokensync.workqueue import WorkQueue


def after(seconds: float) -> datetime:
    return system_clock() + timedelta(seconds=seconds)


class Recorder:
    def __init__(self) -> None:
        self.runs: list[tuple[str, float]] = []
        self.active: set[str] = set()
        self.overlap = False
        self.changed = asyncio.Condition()
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def handle(self, key: str) -> None:
        if key in self.active:
            self.overlap = True
        self.active.add(key)
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        self.active.discard(key)
        async with self.changed:
            self.runs.append((key, time.time()))
            self.changed.notify_all()

    async def until(self, count: int, timeout_s: float = 5.0) -> None:
        async with self.changed:
            await asyncio.wait_for(
                self.changed.wait_for(lambda: len(self.runs) >= count), timeout_s
            )


async def test_enqueued_key_runs() -> None:
    recorder = Recorder()
    queue: WorkQueue[str] = WorkQueue(recorder.handle, workers=2, clock=system_clock)
    queue.start()
    queue.enqueue("a")
    await recorder.until(1)
    await queue.stop()
    assert [k for k, _ in recorder.runs] == ["a"]


async def test_scheduled_key_runs_at_its_time_not_before() -> None:
    recorder = Recorder()
    queue: WorkQueue[str] = WorkQueue(recorder.handle, workers=2, clock=system_clock)
    queue.start()
    due = after(0.2)
    queue.schedule("a", due)
    assert len(queue) == 1
    await recorder.until(1)
    await queue.stop()
    assert recorder.runs[0][1] >= due.timestamp()
    assert recorder.runs[0][1] - due.timestamp() < 0.5


async def test_rescheduling_moves_the_due_time() -> None:
    recorder = Recorder()
    queue: WorkQueue[str] = WorkQueue(recorder.handle, workers=1, clock=system_clock)
    queue.start()
    queue.schedule("a", after(3600))
    queue.schedule("a", after(0.05))
    await recorder.until(1)
    await queue.stop()
    assert len(queue) == 0


async def test_forget_cancels_the_timer() -> None:
    recorder = Recorder()
    queue: WorkQueue[str] = WorkQueue(recorder.handle, workers=1, clock=system_clock)
    queue.start()
    queue.schedule("gone", after(0.05))
    queue.forget("gone")
    queue.schedule("kept", after(0.1))
    await recorder.until(1)
    await queue.stop()
    assert [k for k, _ in recorder.runs] == ["kept"]


async def test_a_key_never_runs_twice_at_once_and_reruns_after() -> None:
    recorder = Recorder()
    recorder.gate = asyncio.Event()
    queue: WorkQueue[str] = WorkQueue(recorder.handle, workers=4, clock=system_clock)
    queue.start()
    queue.enqueue("a")
    await asyncio.wait_for(recorder.started.wait(), 5)
    queue.enqueue("a")
    queue.enqueue("a")
    recorder.gate.set()
    await recorder.until(2)
    await queue.stop()
    assert not recorder.overlap
    assert [k for k, _ in recorder.runs] == ["a", "a"]


async def test_a_failing_handler_does_not_stop_the_workers() -> None:
    calls: list[str] = []
    done = asyncio.Event()

    async def handle(key: str) -> None:
        calls.append(key)
        if key == "bad":
            raise RuntimeError("boom")
        done.set()

    queue: WorkQueue[str] = WorkQueue(handle, workers=1, clock=system_clock)
    queue.start()
    queue.enqueue("bad")
    queue.enqueue("good")
    await asyncio.wait_for(done.wait(), 5)
    await queue.stop()
    assert calls == ["bad", "good"]


async def test_follow_up_frees_the_worker_but_keeps_the_key_busy() -> None:
    """A status write waiting its turn must not hold a worker, nor let its key run twice."""
    follow_up_may_end = asyncio.Event()
    runs: list[str] = []
    follow_ups_done: list[str] = []

    async def follow_up(key: str) -> None:
        await follow_up_may_end.wait()
        follow_ups_done.append(key)

    async def handle(key: str) -> asyncio.Future[None] | None:
        runs.append(key)
        if key == "a" and runs.count("a") == 1:
            return asyncio.ensure_future(follow_up(key))
        return None

    queue: WorkQueue[str] = WorkQueue(handle, workers=1, clock=system_clock)
    queue.start()
    queue.enqueue("a")
    await _until(lambda: runs == ["a"])
    queue.enqueue("b")  # the only worker is free although a's follow-up waits
    await _until(lambda: runs == ["a", "b"])
    queue.enqueue("a")  # busy until its follow-up ends: run again after, not now
    await asyncio.sleep(0.05)
    assert runs == ["a", "b"]
    follow_up_may_end.set()
    await _until(lambda: runs == ["a", "b", "a"])
    assert follow_ups_done == ["a"]
    await queue.stop()


async def test_a_failing_follow_up_does_not_leave_its_key_busy() -> None:
    runs: list[str] = []

    async def broken() -> None:
        raise RuntimeError("boom")

    async def handle(key: str) -> asyncio.Future[None] | None:
        runs.append(key)
        return asyncio.ensure_future(broken()) if len(runs) == 1 else None

    queue: WorkQueue[str] = WorkQueue(handle, workers=1, clock=system_clock)
    queue.start()
    queue.enqueue("a")
    await _until(lambda: runs == ["a"])
    queue.enqueue("a")  # runs once the failed follow-up has let go of the key
    await _until(lambda: runs == ["a", "a"])
    await queue.stop()


async def test_follow_ups_wait_for_a_bounded_pool_of_finishers() -> None:
    """A burst's thousands of waiting status writes are queued, not a task each: no more
    than ``finishers`` run at once, every one runs, and each key is free after its own."""
    release = asyncio.Event()
    started: list[str] = []
    finished: list[str] = []

    async def follow_up(key: str) -> None:
        started.append(key)
        await release.wait()
        finished.append(key)

    handled: list[str] = []

    async def handle(key: str) -> object:
        handled.append(key)
        return follow_up(key)

    queue: WorkQueue[str] = WorkQueue(handle, workers=2, clock=system_clock, finishers=3)
    queue.start()
    keys = [f"k{i}" for i in range(10)]
    for key in keys:
        queue.enqueue(key)
    # Every key handled, and the finishers have taken what they can: the other seven
    # follow-ups wait for one of the three.
    await _until(lambda: len(handled) == 10 and len(started) == 3)
    assert len(started) == 3
    assert all(queue.busy(key) for key in keys)
    release.set()
    await _until(lambda: sorted(finished) == sorted(keys))
    await _until(lambda: not any(queue.busy(key) for key in keys))
    await queue.stop()


async def test_stop_closes_follow_ups_that_never_started() -> None:
    started: list[str] = []
    never = asyncio.Event()

    async def follow_up(key: str) -> None:
        started.append(key)
        await never.wait()

    coroutines: list[object] = []

    async def handle(key: str) -> object:
        coroutine = follow_up(key)
        coroutines.append(coroutine)
        return coroutine

    queue: WorkQueue[str] = WorkQueue(handle, workers=1, clock=system_clock, finishers=1)
    queue.start()
    for key in ("a", "b", "c"):
        queue.enqueue(key)
    await _until(lambda: len(coroutines) == 3 and started == ["a"])
    await queue.stop()
    # b and c were closed, not left for the garbage collector to warn about, and freed.
    assert all(c.cr_frame is None for c in coroutines)  # type: ignore[attr-defined]
    assert not any(queue.busy(key) for key in ("a", "b", "c"))


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)
