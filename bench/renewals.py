"""Renewals of a standing set of ProviderTokens: rounds observed as they come (the steady
phase at 5,000, the scale run) and an outage of the token endpoint longer than a token's
life, then its return."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from kubeclient import OPERATOR_USER, BenchApi, iter_audit
from measure import (
    Observer,
    Usage,
    expired_seconds,
    memory_mib,
    parse_time,
    percentile,
    request_counts,
    request_delta,
    settle,
)


@dataclass
class Subject:
    """Where the renewal phases look. ``pids``: the operator, kube-apiserver and etcd."""

    api: BenchApi
    observer: Observer
    fake_url: str
    audit_log: Path
    pids: dict[str, int]


def audit_counts(path: Path, began: float, ended: float) -> tuple[int, dict[str, int]]:
    """The operator's LIST/WATCH calls on Secrets without a label selector (whole log),
    and its completed requests between ``began`` and ``ended`` by verb and resource."""
    unfiltered = 0
    by_operator: dict[str, int] = defaultdict(int)
    for e in iter_audit(path):
        if e.get("user", {}).get("username") != OPERATOR_USER:
            continue
        ref = e.get("objectRef") or {}
        if (
            ref.get("resource") == "secrets"
            and e.get("verb") in ("list", "watch")
            and "labelSelector=" not in e.get("requestURI", "")
        ):
            unfiltered += 1
        if e.get("stage") != "ResponseComplete":
            continue
        received = parse_time(e.get("requestReceivedTimestamp")) or 0
        if not began <= received <= ended:
            continue
        name = f"{e['verb']} {ref.get('resource', '')}" + (
            f"/{ref['subresource']}" if ref.get("subresource") else ""
        )
        by_operator[name] += 1
    return unfiltered, dict(by_operator)


async def observe_rounds(
    s: Subject, namespace: str, size: int, rounds: int, expires_in: float
) -> tuple[dict[str, Any], list[float]]:
    """Watch ``rounds`` renewals of each of the ``size`` tokens of ``namespace`` (t0, t1,
    ...): their lateness against the renewalTime each status announced, the seconds any
    Secret held an expired token, the API requests and the CPU of the operator, the API
    server and etcd per renewal. Returns the figures (unprefixed) and the latenesses."""
    keys = [f"{namespace}/t{i}" for i in range(size)]
    await settle(s.api)
    async with httpx.AsyncClient() as client:
        await client.post(s.fake_url + "/reset")
    before = await request_counts(s.api)
    usage = Usage(s.pids)
    began = time.time()
    deadline = began + expires_in * (rounds + 1) + 120
    pending = set(keys)
    while True:
        # A renewal is done once its status is written too: the status write trails the
        # Secret's, by seconds in a herd of renewals.
        changes, announced = s.observer.secret_changes, s.observer.renewal_times
        pending = {
            k
            for k in pending
            if len(changes[f"{k}-token"]) < rounds + 1 or len(announced[k]) < rounds + 1
        }
        if not pending or time.time() >= deadline:
            break
        await asyncio.sleep(1)
    ended = time.time()
    after = await request_counts(s.api)
    cpu = usage.seconds()
    peak_rss = memory_mib(s.pids["operator"], "VmHWM")
    async with httpx.AsyncClient() as client:
        log = (await client.get(s.fake_url + "/stats")).json()
    # Lateness: each mint against the renewalTime the status announced before it.
    lateness: list[float] = []
    mints: dict[str, list[float]] = defaultdict(list)
    for at, index in log:
        mints[index].append(at)
    for key in keys:
        ns, name = key.split("/")
        announced = s.observer.renewal_times[key]
        for at in mints.get(f"{ns}-{name[1:]}", []):
            due = max((r for r in announced if r <= at + 5), default=None)
            if due is not None:
                lateness.append(at - due)
    renewals = len(lateness)
    expired = sum(expired_seconds(s.observer.secret_changes[f"{k}-token"], ended) for k in keys)
    requests = request_delta(before, after)
    writes = sum(v for k, v in requests.items() if not k.startswith(("WATCH", "LIST", "GET")))
    unfiltered, by_operator = audit_counts(s.audit_log, began, ended)

    def per_renewal(seconds: float) -> float | None:
        return round(seconds / renewals * 1000, 2) if renewals else None

    apiserver = cpu["kube-apiserver"]
    figures = {
        "tokens": size,
        "window_s": round(ended - began, 1),
        "expires_in": expires_in,
        "renewals": renewals,
        "renew_lateness_p50_s": round(percentile(lateness, 0.5), 3),
        "renew_lateness_p99_s": round(percentile(lateness, 0.99), 3),
        "renew_lateness_max_s": round(max(lateness), 3) if lateness else None,
        "expired_token_seconds": round(expired, 3),
        "api_requests_in_window": requests,
        "operator_requests_in_window_audit": by_operator,
        "writes_per_renewal": round(writes / renewals, 3) if renewals else None,
        "unfiltered_secret_list_watch_calls": unfiltered,
        # The same figure twice: the first-round name and issue 19's.
        "cpu_s_per_1000_renewals": per_renewal(cpu["operator"]),
        "cpu_ms_per_renewal": per_renewal(cpu["operator"]),
        "apiserver_cpu_ms_per_renewal": per_renewal(apiserver),
        "etcd_cpu_ms_per_renewal": per_renewal(cpu["etcd"]),
        "cpu_fraction_of_apiserver_per_renewal": round(cpu["operator"] / apiserver, 3)
        if apiserver
        else None,
        "peak_rss_mib": round(peak_rss, 1),
    }
    return figures, lateness


async def outage(
    s: Subject, namespace: str, size: int, outage_s: float, recovery_timeout_s: float
) -> tuple[dict[str, Any], list[float]]:
    """The token endpoint answers 503 (no Retry-After) for ``outage_s``, longer than a
    token lives, then serves again. Per token: seconds from the return to the first
    Secret change after it (a token minted after the return); a token that has none by
    ``recovery_timeout_s`` counts as the window's end."""
    secrets = [f"{namespace}/t{i}-token" for i in range(size)]
    async with httpx.AsyncClient() as client:
        await client.post(s.fake_url + "/outage", json={"down": True})
        down_at = time.time()
        await asyncio.sleep(outage_s)  # the outage itself
        refused = (await client.post(s.fake_url + "/outage", json={"down": False})).json()
        up_at = time.time()
    recovered: dict[str, float] = {}
    pending = set(secrets)
    deadline = up_at + recovery_timeout_s
    while True:
        for key in list(pending):
            fresh = [
                at
                for at, _, expires in s.observer.secret_changes[key]
                if at > up_at and (expires is None or expires > up_at)
            ]
            if fresh:
                recovered[key] = fresh[0] - up_at
                pending.discard(key)
        if not pending or time.time() >= deadline:
            break
        await asyncio.sleep(0.2)
    ended = time.time()
    recovery = list(recovered.values()) + [ended - up_at] * len(pending)
    expired = sum(
        expired_seconds(s.observer.secret_changes[key], ended, since=down_at) for key in secrets
    )
    down = up_at - down_at
    figures = {
        "outage_s": round(down, 1),
        "outage_tokens": size,
        "outage_recovered": len(recovered),
        "outage_recovery_p50_s": round(percentile(recovery, 0.5), 3),
        "outage_recovery_p99_s": round(percentile(recovery, 0.99), 3),
        "outage_recovery_max_s": round(max(recovery), 3) if recovery else None,
        "outage_refused_requests": refused["refused"],
        "outage_requests_per_s_while_down": round(refused["refused"] / down, 1),
        "outage_expired_token_seconds": round(expired, 1),
        "outage_recovery_window_s": round(ended - up_at, 1),
    }
    return figures, sorted(recovery)
