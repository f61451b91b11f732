"""The benchmark's own admin client: bulk creates, watches that record arrival times."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tokensync.devcluster.cluster import ControlPlane


class BenchApi:
    def __init__(self, plane: ControlPlane, connections: int = 64) -> None:
        pki = plane.workdir / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self.client = httpx.AsyncClient(
            base_url=plane.server,
            verify=context,
            timeout=httpx.Timeout(60.0, read=None),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        headers = {}
        if body is not None and method == "PATCH":
            headers["Content-Type"] = "application/merge-patch+json"
        response = await self.client.request(method, path, json=body, headers=headers, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None

    async def bulk(
        self, items: list[Any], work: Callable[[Any], Any], concurrency: int = 48
    ) -> list[float]:
        """Run ``work`` over ``items`` with bounded concurrency; returns each start time."""
        queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        for index, item in enumerate(items):
            queue.put_nowait((index, item))
        started = [0.0] * len(items)

        async def worker() -> None:
            while not queue.empty():
                index, item = queue.get_nowait()
                started[index] = time.time()
                await work(item)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return started

    async def watch(
        self, path: str, on_event: Callable[[float, str, dict[str, Any]], None], **params: str
    ) -> None:
        """Follow a watch forever (reconnecting), calling ``on_event(time, type, object)``."""
        version = ""
        while True:
            query = {"watch": "1", "allowWatchBookmarks": "true", **params}
            if version:
                query["resourceVersion"] = version
            try:
                async with self.client.stream("GET", path, params=query) as response:
                    async for line in response.aiter_lines():
                        if not line:
                            continue
                        event = json.loads(line)
                        obj = event.get("object", {})
                        version = obj.get("metadata", {}).get("resourceVersion", version)
                        if event.get("type") != "BOOKMARK":
                            on_event(time.time(), event.get("type", ""), obj)
            except (httpx.HTTPError, json.JSONDecodeError):
                await asyncio.sleep(0.2)


def metrics(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Parse one Prometheus metric family from the API server's /metrics text."""
    series: dict[tuple[tuple[str, str], ...], float] = {}
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        labels_text, value = line[len(name) + 1 :].rsplit("} ", 1)
        labels = []
        for part in labels_text.split('",'):
            key, _, raw = part.partition("=")
            labels.append((key.strip(), raw.strip('"')))
        series[tuple(sorted(labels))] = float(value)
    return series


def read_audit(path: Path) -> list[dict[str, Any]]:
    entries = []
    if not path.exists():
        return entries
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries
