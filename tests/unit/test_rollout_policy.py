"""Rollout on rotation, the pure policy: one row per situation, then whole sequences with
a simulated clock (a burst of rotations, rotations faster than minInterval, a restore,
an operator restart)."""

from __future__ import annotations

import heapq
import itertools
import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from tokensync import names
from tokensync.rollout_policy import (
    MIN_INTERVAL_FLOOR,
    RESTART_BURST,
    RESTART_RATE_PER_S,
    STAMP_RESOLUTION,
    Action,
    Pacer,
    SecretToken,
    Verdict,
    Workload,
    assess,
    format_record,
    named_secrets,
    needs_creation_time,
    parse_record,
    plan,
    restart_patch,
    secret_token,
    token_id,
    workload_of,
)

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def no_jitter() -> float:
    return 0.0


def secret(
    name: str = "api-token",
    token: str = "a" * 16,
    minted: datetime | None = NOW - timedelta(minutes=5),
    interval: timedelta = MINUTE,
    created: datetime | None = None,
) -> SecretToken:
    return SecretToken(name, token, minted, interval, created)


def workload(
    name: str = "web",
    secrets: tuple[str, ...] = ("api-token",),
    record: dict[str, str] | None = None,
    created: datetime | None = NOW - timedelta(days=7),
    restarted: datetime | None = None,
    kind: str = "Deployment",
) -> Workload:
    return Workload(
        kind=kind,
        name=name,
        secrets=secrets,
        record=record or {},
        created_at=created,
        restarted_at=restarted,
    )


OLD, NEW = "0" * 16, "f" * 16


@pytest.mark.parametrize(
    ("row", "subject", "secrets", "action", "why"),
    [
        (
            "record matches: nothing (a restore, a re-render, an operator restart)",
            workload(record={"api-token": NEW}),
            [secret(token=NEW)],
            Action.NOTHING,
            "restarted for the current tokens",
        ),
        (
            "record differs: restart",
            workload(record={"api-token": OLD}),
            [secret(token=NEW)],
            Action.RESTART,
            "new token in api-token",
        ),
        (
            "record differs, restarted 20 s ago, minInterval 1m: defer",
            workload(record={"api-token": OLD}, restarted=NOW - timedelta(seconds=20)),
            [secret(token=NEW)],
            Action.DEFER,
            "restarted 20s ago; minInterval 1m",
        ),
        (
            "record differs, restarted 2 min ago, minInterval 1m: restart",
            workload(record={"api-token": OLD}, restarted=NOW - 2 * MINUTE),
            [secret(token=NEW)],
            Action.RESTART,
            "new token",
        ),
        (
            "no record, workload created after the token was minted: adopt",
            workload(created=NOW - MINUTE),
            [secret(token=NEW, minted=NOW - 5 * MINUTE)],
            Action.RECORD,
            "already runs the current token of api-token",
        ),
        (
            "no record, token minted after the workload, the Secret's first token: adopt",
            workload(created=NOW - 10 * MINUTE),
            [secret(minted=NOW - 5 * MINUTE, created=NOW - 5 * MINUTE + timedelta(seconds=1))],
            Action.RECORD,
            "already runs",
        ),
        (
            "no record, token minted after the workload and after the Secret: restart",
            workload(created=NOW - 10 * MINUTE),
            [secret(minted=NOW - 2 * MINUTE, created=NOW - 30 * MINUTE)],
            Action.RESTART,
            "new token",
        ),
        (
            "no record, kubectl restarted it after the mint: adopt",
            replace(workload(created=NOW - 10 * MINUTE), other_restart=NOW - MINUTE),
            [secret(minted=NOW - 2 * MINUTE, created=NOW - 30 * MINUTE)],
            Action.RECORD,
            "already runs",
        ),
        (
            "names no Secret tokensync knows (a credentials Secret, a typo): nothing",
            workload(secrets=("elsewhere",)),
            [secret()],
            Action.NOTHING,
            "names no tokensync Secret",
        ),
        (
            "two Secrets, one changed: restart for that one only",
            workload(secrets=("a", "b"), record={"a": OLD, "b": NEW}),
            [secret("a", NEW), secret("b", NEW)],
            Action.RESTART,
            "new token in a",
        ),
        (
            "two Secrets changed: the longer minInterval applies",
            workload(
                secrets=("a", "b"),
                record={"a": OLD, "b": OLD},
                restarted=NOW - 5 * MINUTE,
            ),
            [secret("a", NEW, interval=MINUTE), secret("b", NEW, interval=10 * MINUTE)],
            Action.DEFER,
            "minInterval 10m",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v else "",
)
def test_one_workload(
    row: str, subject: Workload, secrets: list[SecretToken], action: Action, why: str
) -> None:
    verdict = assess(subject, {s.name: s for s in secrets}, NOW)
    assert verdict.action is action, (row, verdict)
    assert why in verdict.why, (row, verdict.why)


def test_a_deferred_restart_is_due_when_the_interval_has_passed() -> None:
    # Stamped 09:59:40 (whole seconds, as kubectl writes it): the restart happened before
    # 09:59:41, and the minute counts from there, never cut short by the rounding.
    subject = workload(record={"api-token": OLD}, restarted=NOW - timedelta(seconds=20))
    verdict = assess(subject, {"api-token": secret(token=NEW)}, NOW)
    assert verdict.at == NOW + timedelta(seconds=41)
    assert verdict.changed == ("api-token",)
    later = assess(subject, {"api-token": secret(token=NEW)}, NOW + timedelta(seconds=41))
    assert later.action is Action.RESTART


def test_a_zero_min_interval_still_keeps_restarts_apart() -> None:
    subject = workload(record={"api-token": OLD}, restarted=NOW)
    verdict = assess(subject, {"api-token": secret(token=NEW, interval=timedelta(0))}, NOW)
    assert verdict.action is Action.DEFER
    assert verdict.at == NOW + STAMP_RESOLUTION + MIN_INTERVAL_FLOOR


def test_the_record_keeps_unknown_secrets_and_drops_ones_no_longer_named() -> None:
    subject = workload(secrets=("a", "b"), record={"a": OLD, "b": "b" * 16, "gone": "c" * 16})
    verdict = assess(subject, {"a": secret("a", NEW)}, NOW)
    assert verdict.record == {"a": NEW, "b": "b" * 16}


def test_the_creation_time_is_asked_for_only_when_it_decides() -> None:
    young = workload(created=NOW - MINUTE)
    old = workload(created=NOW - 10 * MINUTE)
    recorded = workload(created=NOW - 10 * MINUTE, record={"api-token": OLD})
    token = secret(minted=NOW - 5 * MINUTE)
    assert not needs_creation_time(young, token)
    assert needs_creation_time(old, token)
    assert not needs_creation_time(recorded, token)


def test_token_ids_records_and_names_parse_and_print() -> None:
    assert token_id("hmac-sha256:" + "0123456789abcdef" * 4) == "0123456789abcdef"
    assert token_id("sha256:abc") is None and token_id(None) is None
    assert token_id("hmac-sha256:short") is None
    assert named_secrets(" a, b ,,a") == ("a", "b")
    assert named_secrets(None) == ()
    record = {"b": "2" * 16, "a": "1" * 16}
    assert format_record(record) == f"a={'1' * 16},b={'2' * 16}"
    assert parse_record(format_record(record)) == record
    assert parse_record("garbage,=x,y=,ok=1") == {"ok": "1"}


def test_a_workload_and_a_secret_read_from_their_bodies() -> None:
    body = {
        "metadata": {
            "name": "web",
            "resourceVersion": "42",
            "creationTimestamp": "2026-11-20T10:00:00Z",
            "annotations": {
                names.ROLLOUT_ANNOTATION: "api-token",
                names.RESTARTED_FOR_ANNOTATION: f"api-token={OLD}",
            },
        },
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {
                        names.RESTARTED_AT_ANNOTATION: "2026-11-23T09:00:00Z",
                        "kubectl.kubernetes.io/restartedAt": "2026-11-22T09:00:00+01:00",
                    }
                }
            }
        },
    }
    parsed = workload_of("StatefulSet", body)
    assert parsed.ref == "StatefulSet/web" and parsed.version == "42"
    assert parsed.secrets == ("api-token",) and parsed.record == {"api-token": OLD}
    assert parsed.restarted_at == NOW - timedelta(hours=1)
    assert parsed.started == NOW - timedelta(hours=1)
    target = {
        "metadata": {
            "name": "api-token",
            "labels": {names.ROLE_LABEL: names.ROLE_TOKEN},
            "annotations": {
                names.TOKEN_DIGEST_ANNOTATION: "hmac-sha256:" + "ab" * 32,
                names.MINTED_ANNOTATION: "2026-11-23T09:55:00Z",
            },
        }
    }
    found = secret_token(target, MINUTE)
    assert found == SecretToken("api-token", "ab" * 8, NOW - 5 * MINUTE, MINUTE)
    credentials = {"metadata": {"labels": {names.ROLE_LABEL: names.ROLE_CREDENTIALS}}}
    assert secret_token(credentials, MINUTE) is None


def test_one_merge_patch_restarts_and_records() -> None:
    subject = replace(workload(record={"api-token": OLD}), version="7")
    verdict = assess(subject, {"api-token": secret(token=NEW)}, NOW)
    assert restart_patch(verdict, NOW) == {
        "metadata": {
            "resourceVersion": "7",
            "annotations": {names.RESTARTED_FOR_ANNOTATION: f"api-token={NEW}"},
        },
        "spec": {
            "template": {
                "metadata": {"annotations": {names.RESTARTED_AT_ANNOTATION: "2026-11-23T10:00:00Z"}}
            }
        },
    }
    adopt = assess(workload(created=NOW), {"api-token": secret(token=NEW)}, NOW)
    assert "spec" not in restart_patch(adopt, NOW)  # a record alone rolls nothing


# Whole sequences: a small simulation of the sweeper's loop over the pure policy. Each
# namespace is looked at when marked (a rotation, after the 2 s window) or when a
# deferred restart falls due; a restart sets restartedAt and the record, as the patch does.


@dataclass
class Cluster:
    secrets: dict[str, dict[str, SecretToken]] = field(default_factory=dict)  # ns -> name
    workloads: dict[str, list[Workload]] = field(default_factory=dict)
    restarts: list[tuple[datetime, str, str]] = field(default_factory=list)
    looks: int = 0

    def rotate(self, namespace: str, name: str, token: str, at: datetime) -> None:
        self.secrets[namespace][name] = replace(
            self.secrets[namespace][name], token_id=token, minted_at=at
        )


@dataclass
class Simulation:
    cluster: Cluster
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    pacer: Pacer = field(default_factory=Pacer)
    queue: list[tuple[datetime, int, str]] = field(default_factory=list)
    due: dict[str, datetime] = field(default_factory=dict)
    sequence: Iterator[int] = field(default_factory=lambda: iter(range(10**9)))

    def mark(self, namespace: str, at: datetime) -> None:
        if namespace not in self.due or at < self.due[namespace]:
            self.due[namespace] = at
            heapq.heappush(self.queue, (at, next(self.sequence), namespace))

    def run_until(self, end: datetime) -> None:
        while self.queue and self.queue[0][0] <= end:
            at, _, namespace = heapq.heappop(self.queue)
            if self.due.get(namespace) != at:
                continue
            del self.due[namespace]
            self.look(namespace, at)

    def look(self, namespace: str, now: datetime) -> None:
        self.cluster.looks += 1
        decided = plan(
            namespace,
            self.cluster.workloads[namespace],
            self.cluster.secrets[namespace],
            self.pacer,
            now,
            self.rng.random,
        )
        self.pacer = decided.pacer
        by_name = {w.name: i for i, w in enumerate(self.cluster.workloads[namespace])}
        for verdict in decided.verdicts:
            self.apply(namespace, by_name[verdict.workload.name], verdict, now)
        if decided.next_look is not None:
            self.mark(namespace, decided.next_look)

    def apply(self, namespace: str, index: int, verdict: Verdict, now: datetime) -> None:
        workloads = self.cluster.workloads[namespace]
        if verdict.action is Action.RESTART:
            # restartedAt as the patch writes it: whole seconds.
            stamp = now.replace(microsecond=0)
            workloads[index] = replace(workloads[index], record=verdict.record, restarted_at=stamp)
            self.cluster.restarts.append((now, namespace, workloads[index].name))
        elif verdict.action is Action.RECORD:
            workloads[index] = replace(workloads[index], record=verdict.record)


def opted_in_cluster(namespaces: int, per_namespace: int, interval: timedelta) -> Cluster:
    cluster = Cluster()
    for n in range(namespaces):
        namespace = f"ns-{n}"
        cluster.secrets[namespace] = {"t": secret("t", OLD, NOW - timedelta(hours=1), interval)}
        cluster.workloads[namespace] = [
            workload(f"w-{i}", ("t",), {"t": OLD}, restarted=NOW - timedelta(hours=1))
            for i in range(per_namespace)
        ]
    return cluster


def test_a_burst_of_1000_rotations_is_spread_never_faster_than_the_pacing() -> None:
    """1,000 tokens rotate in the same second (overdue ones minted right after a start):
    every workload restarts exactly once, never more than the bucket allows."""
    cluster = opted_in_cluster(namespaces=1000, per_namespace=1, interval=MINUTE)
    simulation = Simulation(cluster)
    for n in range(1000):
        cluster.rotate(f"ns-{n}", "t", NEW, NOW)
        simulation.mark(f"ns-{n}", NOW + timedelta(seconds=2))
    simulation.run_until(NOW + timedelta(hours=1))

    times = sorted(at for at, _, _ in cluster.restarts)
    assert len(times) == 1000
    assert len({(ns, name) for _, ns, name in cluster.restarts}) == 1000
    # Token bucket: in any span of T seconds at most burst + rate * T restarts.
    for i, start in enumerate(times):
        for span_s in (1, 10, 60):
            end = start + timedelta(seconds=span_s)
            count = sum(1 for t in times[i:] if t < end)
            assert count <= RESTART_BURST + RESTART_RATE_PER_S * span_s
    took = (times[-1] - times[0]).total_seconds()
    expected = (1000 - RESTART_BURST) / RESTART_RATE_PER_S
    assert expected * 0.95 <= took <= expected * 1.1, took
    # Looked at about once per deferral: the jitter keeps namespaces from colliding much.
    assert cluster.looks < 4000


def test_rotations_faster_than_min_interval_restart_once_per_interval_never_dropped() -> None:
    interval = timedelta(minutes=10)
    cluster = opted_in_cluster(namespaces=1, per_namespace=3, interval=interval)
    simulation = Simulation(cluster)
    rotations = [NOW + timedelta(minutes=m) for m in range(0, 35, 3)]  # every 3 min
    for index, at in enumerate(rotations):
        simulation.run_until(at)
        cluster.rotate("ns-0", "t", f"{index:016x}", at)
        simulation.mark("ns-0", at + timedelta(seconds=2))
    simulation.run_until(NOW + timedelta(hours=2))

    per_workload: dict[str, list[datetime]] = defaultdict(list)
    for at, _, name in cluster.restarts:
        per_workload[name].append(at)
    last_token = f"{len(rotations) - 1:016x}"
    for name, times in per_workload.items():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(gap >= interval for gap in gaps), (name, gaps)
        # One restart per interval while rotations keep coming, then one for the last.
        assert len(times) == 4, (name, times)
        assert times[-1] >= rotations[-1]
    assert all(w.record == {"t": last_token} for w in cluster.workloads["ns-0"])


def test_a_restore_or_an_operator_restart_restarts_nothing() -> None:
    cluster = opted_in_cluster(namespaces=3, per_namespace=4, interval=MINUTE)
    simulation = Simulation(cluster)
    for namespace in cluster.secrets:
        cluster.rotate(namespace, "t", NEW, NOW)
        simulation.mark(namespace, NOW + timedelta(seconds=2))
    simulation.run_until(NOW + timedelta(minutes=5))
    assert len(cluster.restarts) == 12
    looks = cluster.looks

    # A restore writes the same token back (same HMAC, so the same id), and a re-render
    # of a template changes no token: the records match, whoever looks.
    for namespace in cluster.secrets:
        cluster.rotate(namespace, "t", NEW, NOW)
        simulation.mark(namespace, NOW + timedelta(minutes=5, seconds=2))
    simulation.run_until(NOW + timedelta(minutes=6))
    assert len(cluster.restarts) == 12
    # A new operator process starts with a fresh pacer and no memory, and looks at every
    # namespace at once: the records already match.
    restarted = Simulation(cluster)
    for namespace in cluster.secrets:
        restarted.mark(namespace, NOW + timedelta(minutes=7))
    restarted.run_until(NOW + timedelta(hours=1))
    assert len(cluster.restarts) == 12
    assert cluster.looks == looks + 6  # one look each, nothing deferred


def test_a_crash_between_the_secret_write_and_the_restart_loses_nothing() -> None:
    """The rotation's mark died with the process; the next one's first look finds it."""
    cluster = opted_in_cluster(namespaces=1, per_namespace=2, interval=MINUTE)
    cluster.rotate("ns-0", "t", NEW, NOW)
    after_restart = Simulation(cluster)
    after_restart.mark("ns-0", NOW + timedelta(seconds=30))
    after_restart.run_until(NOW + timedelta(minutes=5))
    assert len(cluster.restarts) == 2


def test_a_freshly_labelled_workload_is_not_restarted_for_being_labelled() -> None:
    cluster = opted_in_cluster(namespaces=1, per_namespace=0, interval=MINUTE)
    cluster.rotate("ns-0", "t", NEW, NOW - timedelta(minutes=5))
    cluster.workloads["ns-0"].append(workload("new", ("t",), created=NOW - MINUTE))
    simulation = Simulation(cluster)
    simulation.mark("ns-0", NOW)
    simulation.run_until(NOW + timedelta(minutes=5))
    assert cluster.restarts == []
    assert cluster.workloads["ns-0"][0].record == {"t": NEW}
    # The next real rotation restarts it.
    cluster.rotate("ns-0", "t", OLD, NOW + timedelta(minutes=6))
    simulation.mark("ns-0", NOW + timedelta(minutes=6))
    simulation.run_until(NOW + timedelta(minutes=10))
    assert [name for _, _, name in cluster.restarts] == ["new"]


def test_the_pacer_lets_a_burst_through_then_keeps_places_in_order() -> None:
    pacer = Pacer(rate_per_s=2.0, burst=3)
    times = []
    for n in range(6):
        pacer, at = pacer.take(("ns", f"Deployment/w-{n}"), NOW, 0.0)
        times.append(at)
    half = timedelta(seconds=0.5)
    assert times == [NOW, NOW, NOW, NOW + half, NOW + 2 * half, NOW + 3 * half]
    # Asked again before its place: the same place. At it: now, and the place is used.
    assert pacer.take(("ns", "Deployment/w-4"), NOW + half, 0.0)[1] == NOW + 2 * half
    pacer, at = pacer.take(("ns", "Deployment/w-4"), NOW + 2 * half, 0.0)
    assert at == NOW + 2 * half and ("ns", "Deployment/w-4") not in pacer.booked
    # After a quiet minute the whole burst is there again.
    later = NOW + MINUTE
    starts = []
    for n in range(3):
        pacer, at = pacer.take(("ns", f"x-{n}"), later, 0.0)
        starts.append(at)
    assert starts == [later] * 3


def test_a_place_kept_for_a_workload_that_no_longer_needs_one_is_given_up() -> None:
    pacer = Pacer(rate_per_s=1.0, burst=1)
    pacer, _ = pacer.take(("ns", "Deployment/a"), NOW, 0.0)
    pacer, at = pacer.take(("ns", "Deployment/web"), NOW, 0.0)
    assert at > NOW and ("ns", "Deployment/web") in pacer.booked
    # Restored meanwhile: the record matches again, nothing to restart.
    decided = plan(
        "ns",
        [workload(record={"api-token": NEW})],
        {"api-token": secret(token=NEW)},
        pacer,
        NOW,
        no_jitter,
    )
    assert decided.of(Action.NOTHING) and not decided.pacer.booked
