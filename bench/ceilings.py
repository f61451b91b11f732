"""What the API server allows on this machine, whatever the operator: its Secret write
ceiling, and the same writes as a burst's made by a client that already knows them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubeclient import BenchApi
from measure import percentile


async def write_ceiling(api: BenchApi, writes: int) -> dict[str, Any]:
    """Secret creates, then patches of each, as fast as a tight client makes them."""
    await api.call("POST", "/api/v1/namespaces", {"metadata": {"name": "ceiling"}})
    count = writes // 2
    names = [f"s{i}" for i in range(count)]

    async def create(name: str) -> None:
        await api.call(
            "POST",
            "/api/v1/namespaces/ceiling/secrets",
            {"metadata": {"name": name}, "stringData": {"token": "x" * 64}},
        )

    async def patch(name: str) -> None:
        await api.call(
            "PATCH",
            f"/api/v1/namespaces/ceiling/secrets/{name}",
            {"metadata": {"annotations": {"a": "b"}}, "stringData": {"token": "y" * 64}},
        )

    began = time.time()
    await api.bulk(names, create, concurrency=64)
    await api.bulk(names, patch, concurrency=64)
    elapsed = time.time() - began
    await api.call("DELETE", "/api/v1/namespaces/ceiling")
    return {"ceiling_writes": count * 2, "ceiling_writes_per_s": round(count * 2 / elapsed, 1)}


def ready_status(moment: str) -> dict[str, Any]:
    """A Ready ProviderToken's status, as the operator writes it."""
    return {
        "status": {
            "provider": "oauth2",
            "observedGeneration": 1,
            "expiresAt": moment,
            "renewalTime": moment,
            "lastMintTime": moment,
            "failedAttempts": 0,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Minted",
                    "message": f"token valid until {moment}",
                    "lastTransitionTime": moment,
                    "observedGeneration": 1,
                }
            ],
        }
    }


async def same_writes(
    api: BenchApi, namespace: str, size: int, manifest: Callable[[int], dict[str, Any]]
) -> tuple[dict[str, Any], float]:
    """The bound for any operator: while ``size`` ProviderTokens (``manifest(i)``) are
    created in ``namespace`` as in the burst, a tight client that already knows what to
    write makes each one's two writes (its Secret, its status) as soon as its create
    returns. Nothing is minted, nothing is watched: only the API server's cost of these
    writes. Per token: from its create's return to its Secret write's return. Returns the
    ``same_writes_<size>_*`` figures and the writes per second."""
    base = f"/apis/tokensync.dev/v1alpha1/namespaces/{namespace}/providertokens"
    created: asyncio.Queue[int] = asyncio.Queue()
    returned = [0.0] * size  # when each create returned
    written = [0.0] * size  # when its Secret write returned

    async def create(index: int) -> None:
        await api.call("POST", base, manifest(index))
        returned[index] = time.time()
        created.put_nowait(index)

    async def write() -> None:
        while True:
            index = await created.get()
            await api.call(
                "POST",
                f"/api/v1/namespaces/{namespace}/secrets",
                {
                    "metadata": {
                        "name": f"t{index}-token",
                        "labels": {"tokensync.dev/role": "token"},
                    },
                    "stringData": {"token": "x" * 64},
                },
            )
            written[index] = time.time()
            moment = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            await api.call("PATCH", f"{base}/t{index}/status", ready_status(moment))
            created.task_done()

    writers = [asyncio.create_task(write()) for _ in range(48)]
    began = time.time()
    sent = await api.bulk(list(range(size)), create, concurrency=48)
    await created.join()
    elapsed = time.time() - began
    for writer in writers:
        writer.cancel()
    latencies = [w - r for w, r in zip(written, returned, strict=True)]
    # Counted as the burst counts the operator: from the create's request (the ratio's bound).
    from_sent = [w - s for w, s in zip(written, sent, strict=True)]
    prefix = f"same_writes_{size}"
    figures = {
        f"{prefix}_converge_s": round(elapsed, 2),
        f"{prefix}_p50_s": round(percentile(latencies, 0.5), 3),
        f"{prefix}_p99_s": round(percentile(latencies, 0.99), 3),
        f"{prefix}_p99_from_create_sent_s": round(percentile(from_sent, 0.99), 3),
    }
    return figures, round(2 * size / elapsed, 1)
