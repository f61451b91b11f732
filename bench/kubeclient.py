"""The benchmark's own admin client: bulk creates, watches that record arrival times."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from tokensync_dev.devcluster.cluster import ControlPlane

# The operator's identity, and an audit policy that records its requests only.
OPERATOR_USER = "system:serviceaccount:tokensync-system:tokensync"


def audit_policy(users: Sequence[str]) -> str:
    """An audit policy that records the requests of ``users`` only."""
    return f"""apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    users: [{", ".join(json.dumps(user) for user in users)}]
  - level: None
"""


AUDIT_POLICY = audit_policy([OPERATOR_USER])


def audit_args(
    workdir: Path, max_size_mb: int, users: Sequence[str] = (OPERATOR_USER,)
) -> tuple[list[str], Path]:
    """kube-apiserver flags that record the requests of ``users`` (the operator's:
    AUDIT_POLICY) in ``workdir/audit.log``, and that log's path."""
    policy = workdir / "audit-policy.yaml"
    policy.write_text(audit_policy(users))
    log = workdir / "audit.log"
    flags = [
        f"--audit-policy-file={policy}",
        f"--audit-log-path={log}",
        "--audit-log-format=json",
        f"--audit-log-maxsize={max_size_mb}",
        "--audit-log-mode=batch",
    ]
    return flags, log


class BenchApi:
    """aiohttp, like the operator's own writes: the tightest client we have in Python."""

    def __init__(self, plane: ControlPlane, connections: int = 64) -> None:
        pki = plane.workdir / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self.base = plane.server
        self.client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=connections),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        )

    async def close(self) -> None:
        await self.client.close()

    async def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        headers = {"Content-Type": "application/json"}
        if method == "PATCH":
            headers["Content-Type"] = "application/merge-patch+json"
        data = json.dumps(body) if body is not None else None
        async with self.client.request(
            method, self.base + path, data=data, headers=headers, **kwargs
        ) as response:
            text = await response.read()
            if response.status >= 400:
                raise RuntimeError(f"{method} {path}: {response.status} {text[:300]!r}")
            return json.loads(text) if text else None

    async def text(self, path: str) -> str:
        async with self.client.get(self.base + path) as response:
            return await response.text()

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
                async with self.client.get(self.base + path, params=query) as response:
                    async for line in response.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj = event.get("object", {})
                        version = obj.get("metadata", {}).get("resourceVersion", version)
                        if event.get("type") != "BOOKMARK":
                            on_event(time.time(), event.get("type", ""), obj)
            except (aiohttp.ClientError, json.JSONDecodeError):
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


def iter_audit(path: Path) -> Iterator[dict[str, Any]]:
    """The audit log's entries one at a time (it grows to hundreds of MiB at 20,000)."""
    if not path.exists():
        return
    with path.open(errors="replace") as lines:
        for line in lines:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def read_audit(path: Path) -> list[dict[str, Any]]:
    return list(iter_audit(path))
