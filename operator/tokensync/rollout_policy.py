"""Which opted-in workloads to restart now, which later, which not at all. Pure.

The truth lives in the cluster, never in this process: each workload records, in its
``tokensync.dev/restarted-for`` annotation, which token of each Secret it was last
restarted for; each target Secret carries the HMAC of the token it holds. A workload
needs a restart when the two differ (docs/decisions/0010-rollouts.md). So a restore of
the same token, a template re-render or an operator restart changes nothing, and a crash
between a Secret write and the restart loses nothing: the next look finds the mismatch.

No I/O and no clock: the caller gathers the workloads and Secrets, passes ``now``,
a jitter source and the pacer's state, and carries out the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from tokensync import names
from tokensync.digest import DIGEST_PREFIX
from tokensync.model import format_time, parse_time
from tokensync.secret_bodies import token_digest

# (resource, kind): the workloads a rotation may restart, all in apps/v1.
WORKLOAD_KINDS = (
    ("deployments", "Deployment"),
    ("statefulsets", "StatefulSet"),
    ("daemonsets", "DaemonSet"),
)
PLURAL = {kind: plural for plural, kind in WORKLOAD_KINDS}
SELECTOR = f"{names.ROLLOUT_LABEL}={names.ROLLOUT_LABEL_VALUE}"
KUBECTL_RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"

# 16 hex characters (64 bits) of the token's keyed HMAC name a token on a workload: two
# tokens of one Secret share an id with odds of 2^-64, and without the operator's key the
# id says nothing about the token (nobody can test a guess against it).
TOKEN_ID_LENGTH = 16
# Operator-wide pacing: at most RESTART_BURST restarts at once, then RESTART_RATE_PER_S.
# 1,000 workloads whose tokens rotated together roll in about 8 minutes, at most ~120 of
# them mid-rollout at once (with minute-long rollouts); see 0010 for why.
RESTART_RATE_PER_S = 2.0
RESTART_BURST = 10
# Two restarts of one workload are at least this far apart whatever minInterval says
# (0s included): the same restartedAt twice would roll nothing.
MIN_INTERVAL_FLOOR = timedelta(seconds=1)
# restartedAt has whole seconds, as kubectl writes it: a restart stamped 10:00:41 happened
# before 10:00:42, and minInterval counts from there, so it is never cut short.
STAMP_RESOLUTION = timedelta(seconds=1)
# A token minted at most this long before its Secret was created is the Secret's first:
# the operator's clock stamps minted-at, the API server's stamps the creation.
CLOCK_SKEW = timedelta(seconds=5)


def token_id(digest_annotation: str | None) -> str | None:
    """The id a workload records for a Secret's token: a prefix of its keyed HMAC."""
    if not digest_annotation or not digest_annotation.startswith(DIGEST_PREFIX):
        return None
    mac = digest_annotation[len(DIGEST_PREFIX) :]
    return mac[:TOKEN_ID_LENGTH] if len(mac) >= TOKEN_ID_LENGTH else None


def named_secrets(annotation: str | None) -> tuple[str, ...]:
    """``a, b`` -> ("a", "b"): the Secrets whose rotation restarts a workload."""
    parts = (part.strip() for part in (annotation or "").split(","))
    return tuple(dict.fromkeys(part for part in parts if part))


def parse_record(text: str | None) -> dict[str, str]:
    """``secret=id,secret=id``; entries that do not parse are left out (then absent).

    Secret names never hold ``=`` or ``,`` (DNS subdomain names), so the plain list is
    unambiguous and reads well in ``kubectl describe``.
    """
    record: dict[str, str] = {}
    for part in (text or "").split(","):
        name, sep, value = part.strip().partition("=")
        if sep and name and value:
            record[name] = value
    return record


def format_record(record: Mapping[str, str]) -> str:
    return ",".join(f"{name}={record[name]}" for name in sorted(record))


@dataclass(frozen=True)
class SecretToken:
    """A target Secret as the policy needs it: which token it holds, since when, and the
    least interval its ProviderToken allows between two restarts of one workload."""

    name: str
    token_id: str
    minted_at: datetime | None
    min_interval: timedelta
    # The Secret's creation; looked up only when ``needs_creation_time`` says so.
    created_at: datetime | None = None


@dataclass(frozen=True)
class Workload:
    kind: str  # Deployment | StatefulSet | DaemonSet
    name: str
    secrets: tuple[str, ...]
    record: Mapping[str, str]
    created_at: datetime | None = None
    # Our pod-template restartedAt: the last restart for a token (minInterval counts from it).
    restarted_at: datetime | None = None
    # kubectl's restartedAt: a restart too, but not ours to pace.
    other_restart: datetime | None = None
    # Opaque to the policy: what the caller needs to act (the resourceVersion).
    version: str = field(default="", compare=False)

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def started(self) -> datetime | None:
        """The latest moment all its pods are known to have (re)started after."""
        known = [t for t in (self.created_at, self.restarted_at, self.other_restart) if t]
        return max(known) if known else None


def workload_of(kind: str, body: Mapping[str, Any]) -> Workload:
    """A listed Deployment, StatefulSet or DaemonSet as the policy reads it."""
    metadata = body.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    template = ((body.get("spec") or {}).get("template") or {}).get("metadata") or {}
    restarts = template.get("annotations") or {}
    return Workload(
        kind=kind,
        name=metadata.get("name", ""),
        secrets=named_secrets(annotations.get(names.ROLLOUT_ANNOTATION)),
        record=parse_record(annotations.get(names.RESTARTED_FOR_ANNOTATION)),
        created_at=parse_time(metadata.get("creationTimestamp")),
        restarted_at=parse_time(restarts.get(names.RESTARTED_AT_ANNOTATION)),
        other_restart=parse_time(restarts.get(KUBECTL_RESTARTED_AT)),
        version=str(metadata.get("resourceVersion", "")),
    )


def secret_token(secret: Mapping[str, Any], min_interval: timedelta) -> SecretToken | None:
    """A target Secret tokensync wrote, as the policy reads it; None for any other."""
    metadata = secret.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    if (metadata.get("labels") or {}).get(names.ROLE_LABEL) != names.ROLE_TOKEN:
        return None
    current = token_id(token_digest(secret))
    if current is None:
        return None
    return SecretToken(
        name=metadata.get("name", ""),
        token_id=current,
        minted_at=parse_time(annotations.get(names.MINTED_ANNOTATION)),
        min_interval=min_interval,
    )


class Action(StrEnum):
    RESTART = "restart"
    RECORD = "record"  # write the record, no restart (adopting a token its pods read)
    DEFER = "defer"
    NOTHING = "nothing"


@dataclass(frozen=True)
class Verdict:
    workload: Workload
    action: Action
    why: str
    # RESTART and DEFER: the Secrets whose new token the restart is for.
    changed: tuple[str, ...] = ()
    # RESTART and RECORD: the whole restarted-for annotation to write.
    record: Mapping[str, str] = field(default_factory=dict)
    # DEFER: when to look again.
    at: datetime | None = None


@dataclass(frozen=True)
class Pacer:
    """Operator-wide pacing of restarts, as a GCRA (a token bucket kept as one time).

    ``tat`` is when the next restart would be on schedule at ``rate_per_s``; a restart may
    start while that is at most ``burst - 1`` places ahead of now. One that may not is
    given the next place and keeps it (``booked``): when its namespace is looked at again
    at that time it restarts without asking again, so a thousand waiting workloads each
    come back once, in order, instead of all asking every second.
    """

    rate_per_s: float = RESTART_RATE_PER_S
    burst: int = RESTART_BURST
    tat: datetime | None = None
    booked: Mapping[tuple[str, str], datetime] = field(default_factory=dict)

    @property
    def place(self) -> timedelta:
        return timedelta(seconds=1 / self.rate_per_s)

    def take(self, key: tuple[str, str], now: datetime, jitter: float) -> tuple[Pacer, datetime]:
        """When the restart of ``key`` (namespace, Kind/name) may start: ``now`` or later."""
        held = self.booked.get(key)
        if held is not None:
            return (self.release(key), now) if held <= now else (self, held)
        tat = max(self.tat or now, now)
        allowed = tat - self.place * (self.burst - 1)
        if allowed <= now:
            return replace(self, tat=tat + self.place), now
        # Within its place, jittered: restarts do not line up on the places' edges.
        at = allowed + self.place * min(max(jitter, 0.0), 1.0)
        return replace(self, tat=tat + self.place, booked={**self.booked, key: at}), at

    def release(self, *keys: tuple[str, str]) -> Pacer:
        if not any(key in self.booked for key in keys):
            return self
        return replace(self, booked={k: v for k, v in self.booked.items() if k not in keys})


@dataclass(frozen=True)
class Plan:
    verdicts: tuple[Verdict, ...]
    pacer: Pacer

    def of(self, action: Action) -> list[Verdict]:
        return [v for v in self.verdicts if v.action is action]

    @property
    def next_look(self) -> datetime | None:
        """The earliest deferred restart: when the caller must look again."""
        times = [v.at for v in self.verdicts if v.action is Action.DEFER and v.at]
        return min(times) if times else None


def restart_patch(verdict: Verdict, now: datetime) -> dict[str, Any]:
    """One merge patch: the record, and for a restart the pod template's restartedAt
    (changing it is what rolls the pods, as ``kubectl rollout restart`` does). The
    resourceVersion makes it conditional: a workload changed since the list gets a 409."""
    patch: dict[str, Any] = {
        "metadata": {
            "resourceVersion": verdict.workload.version,
            "annotations": {names.RESTARTED_FOR_ANNOTATION: format_record(verdict.record)},
        }
    }
    if verdict.action is Action.RESTART:
        annotations = {names.RESTARTED_AT_ANNOTATION: format_time(now)}
        patch["spec"] = {"template": {"metadata": {"annotations": annotations}}}
    return patch


def _adoptable(workload: Workload, secret: SecretToken) -> bool:
    """A record absent for ``secret``: may the workload be taken to hold its token?

    Yes when its pods cannot have read an older one: the token was minted before the
    workload (re)started, or it is the Secret's first token (pods started before the
    Secret existed waited for it). Otherwise the pods may hold an older token: restart.
    """
    if secret.minted_at is None:
        return False
    started = workload.started
    if started is not None and secret.minted_at <= started:
        return True
    return secret.created_at is not None and secret.minted_at <= secret.created_at + CLOCK_SKEW


def needs_creation_time(workload: Workload, secret: SecretToken) -> bool:
    """Whether deciding needs the Secret's creation time (one read, only at opt-in)."""
    if secret.name in workload.record or secret.minted_at is None:
        return False
    started = workload.started
    return started is None or secret.minted_at > started


def assess(workload: Workload, secrets: Mapping[str, SecretToken], now: datetime) -> Verdict:
    """One workload on its own: restart, record, defer for minInterval, or nothing.

    Pacing comes after (``plan``): RESTART here means "due now".
    """
    known = [secrets[name] for name in workload.secrets if name in secrets]
    if not known:
        return Verdict(workload, Action.NOTHING, "names no tokensync Secret known here")
    # Entries for Secrets no longer named are dropped; those not known now are kept.
    record = {n: v for n, v in workload.record.items() if n in workload.secrets}
    changed: list[SecretToken] = []
    adopted: list[str] = []
    for secret in known:
        held = workload.record.get(secret.name)
        if held == secret.token_id:
            continue
        if held is None and _adoptable(workload, secret):
            adopted.append(secret.name)
        else:
            changed.append(secret)
        record[secret.name] = secret.token_id
    if not changed:
        if adopted:
            why = f"already runs the current token of {', '.join(adopted)}"
            return Verdict(workload, Action.RECORD, why, record=record)
        return Verdict(workload, Action.NOTHING, "restarted for the current tokens")
    rotated = tuple(s.name for s in changed)
    interval = max(max(s.min_interval for s in changed), MIN_INTERVAL_FLOOR)
    last = workload.restarted_at
    due = last + STAMP_RESOLUTION + interval if last is not None else None
    if last is not None and due is not None and due > now:
        why = f"restarted {_ago(now - last)} ago; minInterval {span(interval)}"
        return Verdict(workload, Action.DEFER, why, rotated, record, at=due)
    return Verdict(workload, Action.RESTART, f"new token in {', '.join(rotated)}", rotated, record)


def plan(
    namespace: str,
    workloads: Iterable[Workload],
    secrets: Mapping[str, SecretToken],
    pacer: Pacer,
    now: datetime,
    jitter: Callable[[], float],
) -> Plan:
    """Every opted-in workload of one namespace, with the operator-wide pacing applied:
    restarts due now start if the pacer allows, longest waiting first; the others are
    deferred to the place the pacer keeps for them."""
    verdicts = [assess(w, secrets, now) for w in workloads]
    due = sorted(
        (i for i, v in enumerate(verdicts) if v.action is Action.RESTART),
        key=lambda i: (verdicts[i].workload.restarted_at or now, verdicts[i].workload.ref),
    )
    for index in due:
        pacer, at = pacer.take((namespace, verdicts[index].workload.ref), now, jitter())
        if at > now:
            why = f"{verdicts[index].why}; paced (at most {pacer.rate_per_s:g} restarts/s)"
            verdicts[index] = replace(verdicts[index], action=Action.DEFER, at=at, why=why)
    # A place kept for a workload that needs no restart now (or is gone) is given up.
    kept = {(namespace, verdicts[i].workload.ref) for i in due}
    stale = [key for key in pacer.booked if key[0] == namespace and key not in kept]
    return Plan(tuple(verdicts), pacer.release(*stale))


def span(delta: timedelta) -> str:
    """``90s``, ``10m``, ``1h``: as spec.rollout.minInterval is written."""
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0 and seconds:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0 and seconds:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def _ago(delta: timedelta) -> str:
    return span(timedelta(seconds=max(int(delta.total_seconds()), 0)))
