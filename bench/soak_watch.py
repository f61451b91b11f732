"""The soak's watcher: what a kubelet would see of each target Secret, and every status.

A reflector like the kubelet's watch-based Secret manager: LIST, then WATCH from the
list's resourceVersion; on a broken watch resume from the last version seen, and LIST
again when the API server says that version is gone (410) or the watch cannot resume.
Each change of a Secret's token is recorded with the time it arrived here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from kubeclient import BenchApi


@dataclass
class Recorder:
    token_key: str = "token"
    # secret name -> [(arrival time, token value or None when absent/deleted)]
    samples: dict[str, list[tuple[float, str | None]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    # providertoken name -> [(arrival time, ready, reason)]
    readiness: dict[str, list[tuple[float, bool, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    statuses: set[str] = field(default_factory=set)  # every distinct status, as JSON
    events_seen: int = 0
    relists: int = 0
    watch_breaks: int = 0

    def on_secret(self, at: float, kind: str, obj: dict[str, Any]) -> None:
        self.events_seen += 1
        name = obj["metadata"]["name"]
        value: str | None = None
        if kind != "DELETED":
            raw = (obj.get("data") or {}).get(self.token_key)
            value = base64.b64decode(raw).decode(errors="replace") if raw else None
        history = self.samples[name]
        if not history or history[-1][1] != value:
            history.append((at, value))

    def on_token(self, at: float, kind: str, obj: dict[str, Any]) -> None:
        self.events_seen += 1
        name = obj["metadata"]["name"]
        status = obj.get("status") or {}
        if status:
            self.statuses.add(json.dumps(status, sort_keys=True))
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        state = (
            kind != "DELETED" and ready is not None and ready.get("status") == "True",
            str((ready or {}).get("reason", "")),
        )
        history = self.readiness[name]
        if not history or history[-1][1:] != state:
            history.append((at, *state))

    def ready_count(self) -> int:
        return sum(1 for h in self.readiness.values() if h and h[-1][1])

    def holding_count(self) -> int:
        return sum(1 for h in self.samples.values() if h and h[-1][1])


async def reflect(
    api: BenchApi,
    path: str,
    on_event: Any,
    recorder: Recorder,
    **params: str,
) -> None:
    """LIST + WATCH ``path`` forever, calling ``on_event(time, type, object)``."""
    version = ""
    while True:
        try:
            if not version:
                listed = await api.call("GET", path, **({"params": params} if params else {}))
                now = time.time()
                recorder.relists += 1
                for item in listed.get("items", []):
                    on_event(now, "ADDED", item)
                version = listed["metadata"]["resourceVersion"]
            query = {
                "watch": "1",
                "allowWatchBookmarks": "true",
                "resourceVersion": version,
                "timeoutSeconds": "600",
                **params,
            }
            async with api.client.get(api.base + path, params=query) as response:
                if response.status == 410:
                    version = ""
                    continue
                if response.status >= 400:
                    raise aiohttp.ClientError(f"watch {path}: {response.status}")
                async for line in response.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event.get("object", {})
                    kind = event.get("type", "")
                    if kind == "ERROR":
                        version = ""  # 410 Gone in the stream: list again
                        break
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if kind != "BOOKMARK":
                        on_event(time.time(), kind, obj)
        except (TimeoutError, aiohttp.ClientError, RuntimeError, json.JSONDecodeError):
            recorder.watch_breaks += 1
            await asyncio.sleep(0.5)
