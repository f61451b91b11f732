"""The gate on the operator's API requests: a bound, and the token's Secret first."""

from __future__ import annotations

import asyncio

import pytest

from tokensync.priority import Lane, PriorityGate


async def test_below_the_limit_nothing_waits() -> None:
    gate = PriorityGate(2)
    async with gate.slot(Lane.EVENT), gate.slot(Lane.STATUS):
        pass


async def test_a_freed_place_goes_to_the_most_urgent_waiter_then_in_arrival_order() -> None:
    gate = PriorityGate(1)
    served: list[str] = []
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.slot(Lane.TOKEN):
            await release.wait()

    async def use(lane: Lane, name: str) -> None:
        async with gate.slot(lane):
            served.append(name)

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiters = [
        asyncio.create_task(use(Lane.EVENT, "event")),
        asyncio.create_task(use(Lane.STATUS, "status-1")),
        asyncio.create_task(use(Lane.TOKEN, "secret-1")),
        asyncio.create_task(use(Lane.STATUS, "status-2")),
        asyncio.create_task(use(Lane.TOKEN, "secret-2")),
    ]
    await asyncio.sleep(0.01)
    assert served == []  # all wait behind the holder
    release.set()
    await asyncio.gather(holder, *waiters)
    assert served == ["secret-1", "secret-2", "status-1", "status-2", "event"]


async def test_a_cancelled_waiter_gives_up_its_turn_and_the_bound_holds() -> None:
    gate = PriorityGate(1)
    release = asyncio.Event()
    inside = 0
    most_inside = 0

    async def hold() -> None:
        async with gate.slot(Lane.TOKEN):
            await release.wait()

    async def use() -> None:
        nonlocal inside, most_inside
        async with gate.slot(Lane.STATUS):
            inside += 1
            most_inside = max(most_inside, inside)
            await asyncio.sleep(0.001)
            inside -= 1

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    cancelled = asyncio.create_task(use())
    others = [asyncio.create_task(use()) for _ in range(3)]
    await asyncio.sleep(0.01)
    cancelled.cancel()
    release.set()
    await asyncio.gather(holder, *others)
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert most_inside == 1
    async with gate.slot(Lane.TOKEN):  # every place came back
        pass


def test_the_limit_is_at_least_one() -> None:
    with pytest.raises(ValueError):
        PriorityGate(0)
