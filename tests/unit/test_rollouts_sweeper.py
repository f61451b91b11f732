"""The rollout sweeper's I/O side against a fake API: what it lists and patches, the
Events it posts, the 403 it remembers, and that a standby makes no call."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from support.waiting import async_wait_for
from tokensync import cli, names
from tokensync.events import EventRecorder
from tokensync.kube import ApiError, Conflict
from tokensync.rollouts import RolloutSweeper, Timing
from tokensync.secret_cache import SecretCache
from tokensync.token_cache import TokenCache

NS = "team-a"
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
DIGEST = "hmac-sha256:" + "1" * 64
NEW_DIGEST = "hmac-sha256:" + "2" * 64


class FakeApi:
    def __init__(self) -> None:
        self.workloads: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.calls: list[tuple[str, ...]] = []
        self.patches: list[tuple[str, str, Mapping[str, Any]]] = []
        self.refuse: dict[str, ApiError] = {}  # verb -> error
        self.secret_created = "2026-11-23T09:00:00Z"

    async def list_workloads(
        self, kind_plural: str, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        self.calls.append(("list", kind_plural, namespace, label_selector))
        if "list" in self.refuse:
            raise self.refuse["list"]
        return self.workloads.get((kind_plural, namespace), [])

    async def patch_workload(
        self, kind_plural: str, namespace: str, name: str, merge_patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        self.calls.append(("patch", kind_plural, namespace, name))
        if "patch" in self.refuse:
            raise self.refuse.pop("patch")
        self.patches.append((kind_plural, name, merge_patch))
        return {}

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", "secrets", namespace, name))
        return {"metadata": {"name": name, "creationTimestamp": self.secret_created}}

    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        self.calls.append(("event", body["reason"], namespace, body["note"]))


class Clock:
    """Stands still at ``now`` (tests that call ``sweep``), or runs (tests of the loop)."""

    def __init__(self) -> None:
        self.now: datetime = NOW
        self.running = False

    def __call__(self) -> datetime:
        return datetime.now(UTC) if self.running else self.now


def deployment(name: str, secrets: str, record: str | None = None) -> dict[str, Any]:
    annotations = {names.ROLLOUT_ANNOTATION: secrets}
    if record:
        annotations[names.RESTARTED_FOR_ANNOTATION] = record
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "resourceVersion": "5",
            "creationTimestamp": "2026-11-01T00:00:00Z",
            "labels": {names.ROLLOUT_LABEL: names.ROLLOUT_LABEL_VALUE},
            "annotations": annotations,
        },
        "spec": {"template": {"metadata": {}}},
    }


def provider_token(name: str, min_interval: str | None = None, version: int = 1) -> Any:
    spec: dict[str, Any] = {
        "provider": {"oauth2": {"tokenUrl": "https://idp.example/token"}},
        "credentialsRef": {"name": "creds"},
        "target": {"name": f"{name}-token"},
    }
    if min_interval:
        spec["rollout"] = {"minInterval": min_interval}
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "resourceVersion": str(version),
        },
        "spec": spec,
    }


def target(owner: str, digest: str = DIGEST, minted: str = "2026-11-23T09:30:00Z") -> Any:
    return {
        "metadata": {
            "name": f"{owner}-token",
            "namespace": NS,
            "resourceVersion": "1",
            "labels": {names.ROLE_LABEL: names.ROLE_TOKEN},
            "annotations": {names.TOKEN_DIGEST_ANNOTATION: digest, names.MINTED_ANNOTATION: minted},
            "ownerReferences": [
                {"kind": "ProviderToken", "name": owner, "uid": f"uid-{owner}", "controller": True}
            ],
        }
    }


class World:
    def __init__(self) -> None:
        self.api = FakeApi()
        self.clock = Clock()
        self.secrets = SecretCache(self.api)  # type: ignore[arg-type]  # labelled() only
        self.tokens = TokenCache()
        self.events = EventRecorder(self.api, clock=self.clock)
        self.timing = Timing(window=timedelta(milliseconds=20))
        self.sweeper = RolloutSweeper(
            self.api,
            secrets=self.secrets,
            tokens=self.tokens,
            events=self.events,
            clock=self.clock,
            jitter=lambda: 0.0,
            timing=self.timing,
        )
        self.tokens.observe(provider_token("api"))
        self.secrets.observe(None, target("api"))

    def rotate(self, owner: str = "api", digest: str = NEW_DIGEST) -> None:
        body = target(owner, digest, minted="2026-11-23T10:00:00Z")
        body["metadata"]["resourceVersion"] = "2"
        self.secrets.observe("MODIFIED", body)

    def events_of(self, reason: str) -> list[tuple[str, ...]]:
        return [c for c in self.api.calls if c[0] == "event" and c[1] == reason]


@pytest.fixture
def world() -> World:
    return World()


async def test_a_rotation_restarts_opted_in_workloads_with_one_patch_each(world: World) -> None:
    old = f"api-token={'1' * 16}"
    world.api.workloads[("deployments", NS)] = [deployment("web", "api-token", old)]
    world.api.workloads[("statefulsets", NS)] = [deployment("db", "api-token, other", old)]
    world.rotate()
    await world.sweeper.sweep(NS)

    lists = [c for c in world.api.calls if c[0] == "list"]
    selector = "tokensync.dev/restart-on-rotation=true"
    assert lists == [
        ("list", plural, NS, selector) for plural in ("deployments", "statefulsets", "daemonsets")
    ]
    assert [(p, n) for p, n, _ in world.api.patches] == [
        ("deployments", "web"),
        ("statefulsets", "db"),
    ]
    patch = world.api.patches[0][2]
    assert patch["metadata"] == {
        "resourceVersion": "5",
        "annotations": {names.RESTARTED_FOR_ANNOTATION: f"api-token={'2' * 16}"},
    }
    assert patch["spec"]["template"]["metadata"]["annotations"] == {
        names.RESTARTED_AT_ANNOTATION: "2026-11-23T10:00:00Z"
    }
    [event] = world.events_of("RolloutRestarted")
    assert event[3] == (
        "restarted Deployment/web, StatefulSet/db for the new token in Secret api-token"
    )


async def test_records_that_match_mean_no_call_but_the_lists(world: World) -> None:
    record = f"api-token={'1' * 16}"
    world.api.workloads[("deployments", NS)] = [deployment("web", "api-token", record)]
    await world.sweeper.sweep(NS)
    assert world.api.patches == []
    assert {c[0] for c in world.api.calls} == {"list"}


async def test_a_workload_labelled_after_its_token_was_written_is_recorded_not_restarted(
    world: World,
) -> None:
    fresh = deployment("web", "api-token")
    fresh["metadata"]["creationTimestamp"] = "2026-11-23T09:45:00Z"  # after the mint
    world.api.workloads[("deployments", NS)] = [fresh]
    await world.sweeper.sweep(NS)
    [(_, _, patch)] = world.api.patches
    assert "spec" not in patch
    assert world.events_of("RolloutRestarted") == []


async def test_the_secrets_first_token_is_adopted_after_one_read_of_its_age(
    world: World,
) -> None:
    # Created before the Secret existed (applied together, the mint came after): its pods
    # waited for the Secret and read its first token.
    world.api.workloads[("deployments", NS)] = [deployment("web", "api-token")]
    world.api.secret_created = "2026-11-23T09:30:01Z"
    await world.sweeper.sweep(NS)
    assert ("get", "secrets", NS, "api-token") in world.api.calls
    [(_, _, patch)] = world.api.patches
    assert "spec" not in patch
    # A Secret older than its token: a rotation the pods may have missed.
    world.api.patches.clear()
    world.api.secret_created = "2026-11-01T00:00:00Z"
    await world.sweeper.sweep(NS)
    [(_, _, patch)] = world.api.patches
    assert "spec" in patch


async def test_a_namespace_without_the_role_is_told_once_and_not_hammered(world: World) -> None:
    world.api.refuse["list"] = ApiError(403, "Forbidden", 'cannot list resource "deployments"')
    world.tokens.observe(provider_token("api", min_interval="5m", version=2))
    world.tokens.observe(provider_token("second", min_interval="1m"))
    world.tokens.observe(provider_token("quiet"))  # asks for no rollouts: not told
    for name in ("second", "quiet"):
        world.secrets.observe(None, target(name))
    for name in ("api", "second", "quiet"):
        world.sweeper.token_changed(NS, f"{name}-token")
    await world.sweeper.sweep(NS)
    warnings = world.events_of("RolloutNotPermitted")
    assert len(warnings) == 2  # one per ProviderToken that sets spec.rollout
    note = warnings[0][3]
    assert f"kubectl apply -n {NS} -f deploy/rollouts/role.yaml" in note
    assert "list and patch on apps deployments, statefulsets and daemonsets" in note
    assert "1" * 16 not in note and "2" * 16 not in note

    # Not asked again for five minutes, and told once per ProviderToken per process.
    calls = len(world.api.calls)
    world.sweeper.token_changed(NS, "api-token")
    world.clock.now += timedelta(minutes=1)
    await world.sweeper.sweep(NS)
    assert len(world.api.calls) == calls
    world.clock.now += timedelta(minutes=5)
    await world.sweeper.sweep(NS)
    assert [c[0] for c in world.api.calls[calls:]] == ["list"]
    assert len(world.events_of("RolloutNotPermitted")) == 2


async def test_a_provider_token_that_comes_during_a_refusal_is_told_without_asking_again(
    world: World,
) -> None:
    """Its namespace was refused before its token existed: it is told at its first
    rotation, not only when the refusal is looked at again five minutes later."""
    world.api.refuse["list"] = ApiError(403, "Forbidden", 'cannot list resource "deployments"')
    world.tokens.observe(provider_token("api", min_interval="5m", version=2))
    world.sweeper.token_changed(NS, "api-token")
    await world.sweeper.sweep(NS)
    told = world.events_of("RolloutNotPermitted")
    assert len(told) == 1 and "api-token" in told[0][3]
    asked = [c for c in world.api.calls if c[0] != "event"]

    world.tokens.observe(provider_token("later", min_interval="1m"))
    world.secrets.observe(None, target("later"))
    world.sweeper.token_changed(NS, "later-token")
    world.clock.now += timedelta(seconds=30)
    await world.sweeper.sweep(NS)
    told = world.events_of("RolloutNotPermitted")
    assert len(told) == 2 and "later-token" in told[1][3]
    # The refusal stands: nothing asked of the API server again.
    assert [c for c in world.api.calls if c[0] != "event"] == asked
    await world.sweeper.sweep(NS)
    assert len(world.events_of("RolloutNotPermitted")) == 2  # once per ProviderToken


async def test_a_refused_patch_is_a_missing_grant_too(world: World) -> None:
    world.api.workloads[("deployments", NS)] = [deployment("web", "api-token", "api-token=x")]
    world.api.refuse["patch"] = ApiError(403, "Forbidden", 'cannot patch resource "deployments"')
    world.tokens.observe(provider_token("api", min_interval="1m", version=2))
    world.sweeper.token_changed(NS, "api-token")
    await world.sweeper.sweep(NS)
    assert "the operator may not patch" in world.events_of("RolloutNotPermitted")[0][3]


async def test_a_conflict_or_a_server_error_is_tried_again(world: World) -> None:
    world.api.workloads[("deployments", NS)] = [deployment("web", "api-token", "api-token=x")]
    world.api.refuse["patch"] = Conflict(409, "Conflict", "the object has been modified")
    await world.sweeper.sweep(NS)
    assert world.api.patches == []
    await world.sweeper.sweep(NS)
    assert len(world.api.patches) == 1

    world.api.workloads[("deployments", NS)] = [deployment("web", "api-token", "api-token=y")]
    world.api.refuse["patch"] = ApiError(500, "InternalError", "etcd")
    world.clock.now += timedelta(minutes=2)
    await world.sweeper.sweep(NS)
    [failed] = world.events_of("RolloutFailed")
    assert failed[3] == (
        "could not restart Deployment/web for the new token in Secret api-token: the API "
        "server answered 500; trying again in 30s"
    )


async def test_a_standby_makes_no_call_and_a_new_leader_looks_everywhere(world: World) -> None:
    world.api.workloads[("deployments", NS)] = [deployment("web", "api-token", "api-token=x")]
    world.clock.running = True
    world.sweeper.pause()
    world.sweeper.start()
    try:
        world.sweeper.token_changed(NS, "api-token")
        # The look falls due (after the window) and waits: the paused worker takes nothing,
        # the look at every namespace the start asked for included.
        queue = world.sweeper._queue
        await async_wait_for(
            lambda: _async(queue.busy(NS) and queue.busy("")),
            timeout_s=5,
            what="the looks due and held",
        )
        assert world.api.calls == []
        assert queue.busy(NS) and queue.busy("")
        world.sweeper.resume()  # leading: every namespace with ProviderTokens
        await async_wait_for(
            lambda: _async(len(world.api.patches) == 1), timeout_s=5, what="the restart"
        )
    finally:
        await world.sweeper.stop()


async def test_marks_within_the_window_coalesce_into_one_look(world: World) -> None:
    world.clock.running = True
    world.api.workloads[("deployments", NS)] = [deployment("web", "api-token", "api-token=x")]
    world.sweeper.start()
    try:
        await async_wait_for(
            lambda: _async(len(world.api.patches) == 1), timeout_s=5, what="the first look"
        )
        world.api.calls.clear()
        marked = world.clock()
        for _ in range(5):
            world.sweeper.token_changed(NS, "api-token")
        await async_wait_for(
            lambda: _async(len(world.api.calls) >= 3), timeout_s=5, what="one more look"
        )
        # That look done, and the namespace's next one only at the resync (jitter 0): no
        # other look of the five marks is left to come.
        resync = marked + world.timing.resync
        await async_wait_for(
            lambda: _async(
                not world.sweeper._queue.busy(NS) and world.sweeper._next.get(NS, marked) >= resync
            ),
            timeout_s=5,
            what="the look done and the next at the resync",
        )
        assert len([c for c in world.api.calls if c[0] == "list"]) == 3
    finally:
        await world.sweeper.stop()


async def _async(value: bool) -> bool:
    return value


def test_the_flag_is_off_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKENSYNC_ROLLOUTS", raising=False)
    assert not cli.config_from_args(cli.build_parser().parse_args(["run"])).rollouts
    assert cli.config_from_args(cli.build_parser().parse_args(["run", "--rollouts"])).rollouts
    monkeypatch.setenv("TOKENSYNC_ROLLOUTS", "true")
    assert cli.config_from_args(cli.build_parser().parse_args(["run"])).rollouts
