"""The soak's figures, from what was recorded: pure functions, no I/O.

Inputs: each target Secret's token over time (as the watcher saw it arrive), what the fakes
issued (value, subject, expiry), the fakes' request log, and the faults as they happened.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

PROVIDER_KINDS = ("provider_down", "provider_slow", "provider_429", "provider_garbage")
PLANE_KINDS = ("apiserver_restart", "etcd_restart")
# Recovery's headline: faults that end at once and say nothing of waiting. A 429 says how
# long to wait (Retry-After); a slow provider's last requests fail up to the provider
# timeout after it recovers. Both are reported on their own (``outage_recovery_by_kind``).
HEADLINE_RECOVERY_KINDS = ("provider_down", "provider_garbage")
BUCKET_S = 10.0


@dataclass(frozen=True)
class IssuedToken:
    provider: str
    subject: str
    issued_at: float
    expires_at: float | None


@dataclass(frozen=True)
class Window:
    kind: str
    provider: str
    start: float
    end: float  # when the fake behaved again
    # Until when the fault still governs: a request sent to a slow provider fails up to the
    # provider timeout later; a 429's Retry-After asks for a wait past the end.
    effect_end: float


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))
    return round(ordered[index], 3)


def _overlap(a: float, b: float, c: float, d: float) -> float:
    return max(0.0, min(b, d) - max(a, c))


def _intervals(
    history: list[tuple[float, str | None]], start: float, end: float
) -> list[tuple[float, float, str | None]]:
    """The Secret's content as [from, to) pieces clipped to [start, end)."""
    pieces = []
    for i, (at, value) in enumerate(history):
        following = history[i + 1][0] if i + 1 < len(history) else end
        a, b = max(at, start), min(following, end)
        if b > a:
            pieces.append((a, b, value))
    return pieces


class Analysis:
    def __init__(
        self,
        *,
        samples: dict[str, list[tuple[float, str | None]]],
        owners: dict[str, tuple[str, str]],  # secret -> (provider, subject)
        issued: dict[str, IssuedToken],  # value -> who got it, until when
        faults: list[dict[str, Any]],
        requests: list[tuple[str, float, str, int, str]],
        start: float,
        end: float,
        provider_timeout_s: float,
    ) -> None:
        self.samples = samples
        self.owners = owners
        self.issued = issued
        self.faults = faults
        self.requests = requests
        self.start = start
        self.end = end
        self.windows: dict[str, list[Window]] = defaultdict(list)
        for fault in faults:
            if fault["kind"] in PROVIDER_KINDS and fault.get("end"):
                after = {
                    "provider_slow": provider_timeout_s,
                    "provider_429": float(fault.get("retry_after", 0)),
                }.get(fault["kind"], 0.0)
                self.windows[fault["target"]].append(
                    Window(
                        fault["kind"],
                        fault["target"],
                        fault["start"],
                        fault["end"],
                        fault["end"] + after,
                    )
                )
        # The API server or etcd stopped: nobody can write a Secret meanwhile.
        self.plane_down = sorted(
            (f["start"], f["end"]) for f in faults if f["kind"] in PLANE_KINDS and f.get("end")
        )
        self.tokens_per_provider: dict[str, int] = defaultdict(int)
        for provider, _ in owners.values():
            self.tokens_per_provider[provider] += 1

    # Expired-token seconds
    def expired(self, strict: bool = False) -> dict[str, Any]:
        """Expired-token seconds; ``strict``: fault windows end when the fake behaves again,
        else when the fault stops governing (``Window.effect_end``)."""
        up = down = compound = unknown_s = missing_s = 0.0
        compound_episodes: list[dict[str, Any]] = []
        unknown_samples = wrong_subject = 0
        buckets_up: dict[int, float] = defaultdict(float)
        buckets_down: dict[int, float] = defaultdict(float)
        episodes: list[dict[str, Any]] = []
        findings: list[dict[str, Any]] = []

        def spread(a: float, b: float, into: dict[int, float]) -> None:
            bucket = int((a - self.start) // BUCKET_S)
            while a < b:
                edge = min(b, self.start + (bucket + 1) * BUCKET_S)
                into[bucket] += edge - a
                a, bucket = edge, bucket + 1

        for secret, (provider, subject) in sorted(self.owners.items()):
            windows = [
                w if strict else Window(w.kind, w.provider, w.start, w.effect_end, w.effect_end)
                for w in self.windows.get(provider, [])
            ]
            for a, b, value in _intervals(self.samples.get(secret, []), self.start, self.end):
                if value is None:
                    missing_s += b - a
                    findings.append({"secret": secret, "what": "no token", "from": a, "to": b})
                    continue
                token = self.issued.get(value)
                if token is None or token.subject != subject or token.provider != provider:
                    unknown_s += b - a
                    if token is None:
                        unknown_samples += 1
                        what = "a value no fake issued"
                    else:
                        wrong_subject += 1
                        what = f"a value issued to {token.provider}/{token.subject}"
                    findings.append({"secret": secret, "what": what, "from": a, "to": b})
                    continue
                if token.expires_at is None or token.expires_at >= b:
                    continue
                e0 = max(a, token.expires_at)
                excused = any(w.start <= token.expires_at <= w.end for w in windows)
                if not excused and self._no_chance(windows, token.expires_at):
                    # The provider failed until the control plane stopped, and it was
                    # still stopped at the expiry: no moment to mint and write.
                    compound += b - e0
                    spread(e0, b, buckets_down)
                    compound_episodes.append(
                        {
                            "secret": secret,
                            "provider": provider,
                            "expired_at": round(token.expires_at, 3),
                            "replaced_at": round(b, 3),
                            "faults_around": self.faults_around(token.expires_at - 120, b),
                        }
                    )
                    continue
                in_fault = sum(_overlap(e0, b, w.start, w.end) for w in windows)
                d = (b - e0) if excused else in_fault
                down += d
                up += (b - e0) - d
                if excused:
                    spread(e0, b, buckets_down)
                else:
                    # Piecewise: the parts inside fault windows are excused, the rest not.
                    cursor = e0
                    for w in sorted(windows, key=lambda w: w.start):
                        if w.end <= cursor or w.start >= b:
                            continue
                        if w.start > cursor:
                            spread(cursor, w.start, buckets_up)
                        spread(max(cursor, w.start), min(b, w.end), buckets_down)
                        cursor = min(b, w.end)
                    if cursor < b:
                        spread(cursor, b, buckets_up)
                if (b - e0) - d > 0:
                    episodes.append(
                        {
                            "secret": secret,
                            "provider": provider,
                            "expired_at": round(token.expires_at, 3),
                            "replaced_at": round(b, 3),
                            "seconds_provider_up": round((b - e0) - d, 3),
                            "token_issued_at": round(token.issued_at, 3),
                            "faults_around": self.faults_around(token.expires_at - 120, b),
                        }
                    )
        return {
            "up": round(up, 3),
            "down": round(down, 3),
            "compound": round(compound, 3),
            "episodes_compound": compound_episodes,
            "unknown_value_samples": unknown_samples,
            "wrong_subject_samples": wrong_subject,
            "unknown_value_seconds": round(unknown_s, 3),
            "missing_token_seconds": round(missing_s, 3),
            "episodes_provider_up": episodes,
            "value_findings": findings,
            "buckets_up": dict(buckets_up),
            "buckets_down": dict(buckets_down),
        }

    def _no_chance(self, windows: list[Window], expired_at: float) -> bool:
        """Whether every moment from the end of a fault of this provider until the expiry
        had the control plane stopped (a compound fault: no write was possible)."""
        for window in windows:
            if not window.start <= expired_at or window.end > expired_at:
                continue
            cursor = window.end
            for start, end in self.plane_down:
                if start <= cursor < end:
                    cursor = end
            if cursor >= expired_at:
                return True
        return False

    def faults_around(self, a: float, b: float) -> list[str]:
        return [
            f"{f['kind']}:{f['target']}@{round(f['start'] - self.start, 1)}s"
            for f in self.faults
            if f.get("end") and f["start"] <= b and f["end"] >= a
        ]

    # Recovery after provider faults
    def recovery(self) -> dict[str, Any]:
        by_kind: dict[str, list[float]] = defaultdict(list)
        unrecovered: list[dict[str, Any]] = []
        for provider, windows in self.windows.items():
            secrets = [s for s, (p, _) in self.owners.items() if p == provider]
            for window in windows:
                for secret in secrets:
                    history = self.samples.get(secret, [])
                    for i, (at, value) in enumerate(history):
                        token = self.issued.get(value or "")
                        if token is None or token.expires_at is None:
                            continue
                        if not window.start <= token.expires_at <= window.effect_end:
                            continue
                        following = history[i + 1][0] if i + 1 < len(history) else math.inf
                        if not at <= token.expires_at < following:
                            continue  # replaced before it expired
                        fresh = self._fresh_after(history, i + 1)
                        if fresh is None:
                            unrecovered.append(
                                {"secret": secret, "kind": window.kind, "fault_end": window.end}
                            )
                        else:
                            by_kind[window.kind].append(max(0.0, fresh - window.end))
        headline = [v for k in HEADLINE_RECOVERY_KINDS for v in by_kind.get(k, [])]
        return {
            "outage_recovery_p50_s": percentile(headline, 0.5),
            "outage_recovery_p99_s": percentile(headline, 0.99),
            "outage_recovery_max_s": round(max(headline), 3) if headline else None,
            "outage_recovery_tokens": len(headline),
            "outage_recovery_unrecovered": len(unrecovered),
            "outage_recovery_unrecovered_detail": unrecovered[:50],
            "outage_recovery_by_kind": {
                kind: {
                    "tokens": len(values),
                    "p50_s": percentile(values, 0.5),
                    "p99_s": percentile(values, 0.99),
                    "max_s": round(max(values), 3),
                }
                for kind, values in sorted(by_kind.items())
                if values
            },
        }

    def _fresh_after(self, history: list[tuple[float, str | None]], index: int) -> float | None:
        for at, value in history[index:]:
            token = self.issued.get(value or "")
            if token is not None and (token.expires_at is None or token.expires_at > at):
                return at
        return None

    # Provider requests during faults
    def requests_in_faults(self) -> dict[str, Any]:
        counts: dict[tuple[str, str], int] = defaultdict(int)  # (kind, provider) -> requests
        token_minutes: dict[tuple[str, str], float] = defaultdict(float)
        per_subject: dict[str, int] = defaultdict(int)
        fault_minutes: dict[str, float] = defaultdict(float)
        ordered = sorted(self.requests, key=lambda r: r[1])
        times = [r[1] for r in ordered]
        per_fault: list[dict[str, Any]] = []
        for provider, windows in self.windows.items():
            for w in windows:
                minutes = (w.end - w.start) / 60
                fault_minutes[provider] += minutes
                token_minutes[(w.kind, provider)] += self.tokens_per_provider[provider] * minutes
                lo, hi = bisect.bisect_left(times, w.start), bisect.bisect_right(times, w.end)
                asked: dict[str, list[float]] = defaultdict(list)
                for name, at, subject, _, _ in ordered[lo:hi]:
                    if name == provider:
                        counts[(w.kind, provider)] += 1
                        per_subject[f"{provider}/{subject}"] += 1
                        asked[subject].append(at)
                gaps = [b - a for ats in asked.values() for a, b in itertools.pairwise(ats)]
                per_fault.append(
                    {
                        "kind": w.kind,
                        "provider": provider,
                        "start_s": round(w.start - self.start, 1),
                        "seconds": round(w.end - w.start, 1),
                        "requests": sum(len(a) for a in asked.values()),
                        "tokens_asking": len(asked),
                        "tokens_of_provider": self.tokens_per_provider[provider],
                        "gap_between_requests_p50_s": percentile(gaps, 0.5),
                        "gap_between_requests_min_s": round(min(gaps), 3) if gaps else None,
                    }
                )
        total = sum(counts.values())
        total_minutes = sum(token_minutes.values())
        per_token = [
            per_subject.get(f"{p}/{s}", 0) / fault_minutes[p]
            for p, s in self.owners.values()
            if fault_minutes.get(p)
        ]

        def rate(keys: list[tuple[str, str]]) -> float | None:
            minutes = sum(token_minutes[k] for k in keys)
            return round(sum(counts[k] for k in keys) / minutes, 3) if minutes else None

        kinds = sorted({k for k, _ in token_minutes})
        providers = sorted({p for _, p in token_minutes})
        return {
            "provider_requests_per_token_per_outage_minute": (
                round(total / total_minutes, 3) if total_minutes else None
            ),
            "provider_requests_per_token_per_outage_minute_max_token": (
                round(max(per_token), 3) if per_token else None
            ),
            "provider_requests_in_faults": total,
            "provider_requests_per_fault": sorted(per_fault, key=lambda f: f["start_s"]),
            "provider_requests_per_token_per_outage_minute_by_kind": {
                k: rate([(k, p) for p in providers]) for k in kinds
            },
            "provider_requests_per_token_per_outage_minute_by_provider": {
                p: rate([(k, p) for k in kinds]) for p in providers
            },
        }

    # The end
    def lost(
        self, final: dict[str, str | None], ready: dict[str, tuple[bool, str]], at: float
    ) -> tuple[int, list[dict[str, Any]]]:
        lost = []
        for secret, (provider, subject) in sorted(self.owners.items()):
            name = secret.removesuffix("-token")
            value = final.get(secret)
            token = self.issued.get(value or "")
            why = ""
            if value is None:
                why = "no token in the Secret"
            elif token is None or token.subject != subject:
                why = "a value not issued to this token's subject"
            elif token.expires_at is not None and token.expires_at <= at:
                why = "an expired token"
            elif not ready.get(name, (False, ""))[0]:
                why = f"not Ready ({ready.get(name, (False, 'no status'))[1]})"
            if why:
                lost.append({"providertoken": name, "provider": provider, "why": why})
        return len(lost), lost

    def buckets(self, expired: dict[str, Any]) -> list[tuple[float, float, float]]:
        """(seconds since start, expired-token seconds with provider up, provider down)."""
        count = int((self.end - self.start) // BUCKET_S) + 1
        return [
            (
                i * BUCKET_S,
                round(expired["buckets_up"].get(i, 0.0), 3),
                round(expired["buckets_down"].get(i, 0.0), 3),
            )
            for i in range(count)
        ]
