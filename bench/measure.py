"""What the benchmark reads: processes' CPU and memory, the API server's request counts,
and what its watches saw of each target Secret and ProviderToken."""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from kubeclient import BenchApi, metrics

Counts = dict[tuple[tuple[str, str], ...], float]


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def process_cpu() -> dict[str, float]:
    """CPU seconds so far of each process on the machine, summed by command name."""
    usage: dict[str, float] = defaultdict(float)
    ticks = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        name = Path(cmdline[0].decode(errors="replace")).name if cmdline[0] else "?"
        if name.startswith("python") and len(cmdline) > 1:
            script = b" ".join(cmdline[1:4]).decode(errors="replace")
            name = (
                "operator"
                if "tokensync run" in script
                else (
                    "token-endpoint"
                    if "fake_endpoint" in script
                    else "bench"
                    if "run.py" in script
                    else name
                )
            )
        usage[name] += (int(fields[11]) + int(fields[12])) / ticks
    return usage


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mib(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of /proc/<pid>/status in MiB: VmRSS (now) or VmHWM (peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


async def stable_rss(pid: int, timeout_s: float = 60.0) -> tuple[float, bool]:
    """VmRSS once two reads 2 s apart differ by less than 1% (or at the deadline), and
    whether it was stable."""
    deadline = time.time() + timeout_s
    previous = memory_mib(pid)
    while time.time() < deadline:
        await asyncio.sleep(2)
        current = memory_mib(pid)
        if abs(current - previous) < 0.01 * previous:
            return current, True
        previous = current
    return previous, False


class Usage:
    """CPU seconds of named processes (by pid) from its creation until ``seconds()``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def seconds(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) - self.start[name] for name, pid in self.pids.items()}


async def request_counts(api: BenchApi) -> Counts:
    """The API server's apiserver_request_total, by label set."""
    return metrics(await api.text("/metrics"), "apiserver_request_total")


def request_delta(before: Counts, after: Counts) -> dict[str, float]:
    """Requests on Secrets, ProviderTokens and Events between two scrapes, by verb."""
    counted: dict[str, float] = defaultdict(float)
    for labels, value in after.items():
        change = value - before.get(labels, 0.0)
        if change <= 0:
            continue
        label = dict(labels)
        if label.get("resource") not in ("secrets", "providertokens", "events"):
            continue
        name = f"{label['verb']} {label['resource']}"
        if label.get("subresource"):
            name += f"/{label['subresource']}"
        counted[name] += change
    return dict(counted)


async def settle(api: BenchApi) -> None:
    """Wait until the operator's background Events (of a burst, an outage) are all posted."""
    previous = -1.0
    while True:
        posted = sum(
            v
            for labels, v in (await request_counts(api)).items()
            if dict(labels).get("resource") == "events" and dict(labels).get("verb") == "POST"
        )
        if posted == previous:
            return
        previous = posted
        await asyncio.sleep(3)


Change = tuple[float, str, float | None]  # (seen at, token digest, token expires at)


def expired_seconds(changes: list[Change], end: float, since: float = 0.0) -> float:
    """Seconds between ``since`` and ``end`` in which a Secret held an expired token: from
    each token's expiry to the next write (or ``end``)."""
    held = 0.0
    following = [at for at, _, _ in changes[1:]] + [end]
    for (_, _, expires), replaced in zip(changes, following, strict=True):
        if expires is not None:
            held += max(0.0, min(replaced, end) - max(expires, since))
    return held


class Observer:
    """What the watches saw: when each target Secret changed, and each status."""

    def __init__(self) -> None:
        self.secret_changes: dict[str, list[Change]] = defaultdict(list)
        self.renewal_times: dict[str, list[float]] = defaultdict(list)
        self.ready_at: dict[str, float] = {}

    def on_secret(self, at: float, kind: str, obj: dict[str, Any]) -> None:
        if kind == "DELETED":
            return
        meta = obj["metadata"]
        annotations = meta.get("annotations") or {}
        digest = annotations.get("tokensync.dev/token-digest", "")
        key = f"{meta['namespace']}/{meta['name']}"
        changes = self.secret_changes[key]
        if not changes or changes[-1][1] != digest:
            changes.append((at, digest, parse_time(annotations.get("tokensync.dev/expires-at"))))

    def on_token(self, at: float, kind: str, obj: dict[str, Any]) -> None:
        if kind == "DELETED":
            return
        meta = obj["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        status = obj.get("status") or {}
        renewal = parse_time(status.get("renewalTime"))
        times = self.renewal_times[key]
        if renewal is not None and (not times or times[-1] != renewal):
            times.append(renewal)
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        if ready and key not in self.ready_at:
            self.ready_at[key] = at
