"""Shared mints: one provider call for many holders, never the same token back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from tokensync.providers.base import InvalidCredentials, Token
from tokensync.sharing import SharedMints
from tokensync.timing import RefreshPolicy

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
POLICY = RefreshPolicy()


class Provider:
    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def mint(self) -> Token:
        self.calls += 1
        await self.release.wait()
        minted = NOW + timedelta(seconds=self.calls)
        return Token(
            value=f"t{self.calls}", expires_at=minted + timedelta(hours=1), minted_at=minted
        )


async def test_concurrent_holders_wait_for_one_mint() -> None:
    shared, provider = SharedMints(), Provider()
    waiting = [asyncio.create_task(shared.mint("k", POLICY, NOW, provider.mint)) for _ in range(50)]
    await asyncio.sleep(0)
    provider.release.set()
    tokens = await asyncio.gather(*waiting)
    assert provider.calls == 1
    assert {t.value for t in tokens} == {"t1"}


async def test_a_recent_token_is_handed_out_again() -> None:
    shared, provider = SharedMints(), Provider()
    provider.release.set()
    first = await shared.mint("k", POLICY, NOW, provider.mint)
    again = await shared.mint("k", POLICY, NOW + timedelta(minutes=10), provider.mint)
    assert again is first and provider.calls == 1


async def test_a_renewing_holder_never_gets_its_own_token_back() -> None:
    """The loop the benchmark found: jitter made a holder due before the shared token was."""
    shared, provider = SharedMints(), Provider()
    provider.release.set()
    first = await shared.mint("k", POLICY, NOW, provider.mint)
    renewed = await shared.mint(
        "k",
        POLICY,
        NOW + timedelta(minutes=39),
        provider.mint,
        newer_than=first.minted_at.replace(microsecond=0),
    )
    assert renewed.value == "t2" and provider.calls == 2


async def test_renew_request_forces_a_new_mint() -> None:
    shared, provider = SharedMints(), Provider()
    provider.release.set()
    await shared.mint("k", POLICY, NOW, provider.mint)
    forced = await shared.mint("k", POLICY, NOW, provider.mint, force=True)
    assert forced.value == "t2"


async def test_a_failure_reaches_every_waiter_and_is_not_cached() -> None:
    shared = SharedMints()
    gate = asyncio.Event()
    calls = 0

    async def failing() -> Token:
        nonlocal calls
        calls += 1
        await gate.wait()
        raise InvalidCredentials("no")

    waiting = [asyncio.create_task(shared.mint("k", POLICY, NOW, failing)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, InvalidCredentials) for r in results) and calls == 1
    with pytest.raises(InvalidCredentials):
        await shared.mint("k", POLICY, NOW, failing)
    assert calls == 2
