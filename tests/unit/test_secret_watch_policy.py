"""The labelled-Secret watch's policy: relist on 410, report what was deleted while it was
away, resume from bookmarks, back off on failures, never stop.

The API server here is a script of answers (``ScriptedApi``); the same loop against a
real kube-apiserver is covered by the integration tests (drift, restarts, faults).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import pytest

from tokensync import names
from tokensync.kube import ApiError, SecretList, _lines
from tokensync.model import Key, object_key
from tokensync.secret_cache import SecretCache
from tokensync.secret_watch import (
    Ending,
    Outcome,
    SecretWatch,
    backoff_s,
    failures_after,
)

Event = dict[str, Any]
Step = tuple[str, SecretList | ApiError | list[Event | ApiError]]


def secret(name: str, version: int, namespace: str = "ns") -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": namespace,
            "name": name,
            "resourceVersion": str(version),
            "labels": {names.ROLE_LABEL: names.ROLE_TOKEN},
        },
        "data": {"token": "c2VjcmV0"},
    }


def event(kind: str, body: Mapping[str, Any]) -> Event:
    return {"type": kind, "object": body}


def gone() -> Event:
    return event("ERROR", {"kind": "Status", "code": 410, "reason": "Expired"})


class ScriptedApi:
    """Answers each LIST and WATCH of a namespace with the next step of its script; once
    it is played through, the next call waits for ever (the test then stops the watch)."""

    def __init__(self, *steps: Step, scripts: dict[str | None, list[Step]] | None = None) -> None:
        self.scripts = scripts if scripts is not None else {None: list(steps)}
        self.calls: list[tuple[str, str | None, str | None]] = []
        self.selectors: set[str] = set()
        self.waiting: set[str | None] = set()
        self.played = asyncio.Event()

    async def _next(self, kind: str, namespace: str | None) -> Any:
        steps = self.scripts[namespace]
        if not steps:
            self.waiting.add(namespace)
            if self.waiting == set(self.scripts):
                self.played.set()
            await asyncio.Event().wait()
        expected, answer = steps.pop(0)
        assert expected == kind, f"the watch asked for a {kind}, the script has a {expected}"
        return answer

    async def list_secrets(self, label_selector: str, namespace: str | None = None) -> SecretList:
        self.calls.append(("list", namespace, None))
        self.selectors.add(label_selector)
        answer = await self._next("list", namespace)
        if isinstance(answer, ApiError):
            raise answer
        assert isinstance(answer, SecretList)
        return answer

    async def watch_secrets(
        self, label_selector: str, namespace: str | None, resource_version: str, *, timeout_s: int
    ) -> AsyncGenerator[Event, None]:
        self.calls.append(("watch", namespace, resource_version))
        self.selectors.add(label_selector)
        assert timeout_s == 300
        answer = await self._next("watch", namespace)
        if isinstance(answer, ApiError):
            raise answer
        for item in answer:
            if isinstance(item, ApiError):
                raise item
            yield item


class Harness:
    def __init__(self, api: ScriptedApi, namespaces: tuple[str, ...] = ()) -> None:
        self.api = api
        self.cache = SecretCache(None)  # type: ignore[arg-type]  # never reads through
        self.delivered: list[tuple[str | None, Key]] = []
        self.sleeps: list[float] = []
        self.watch = SecretWatch(
            api, self.cache, namespaces=namespaces, jitter=lambda: 0.5, sleep=self._sleep
        )

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def deliver(self, kind: str | None, body: Mapping[str, Any]) -> None:
        # What Controller.observe_secret does with it, minus the work queue.
        self.delivered.append((kind, object_key(body)))
        self.cache.observe(kind, body)

    async def play(self) -> None:
        await self.watch.prime()
        self.watch.start(self.deliver)
        try:
            await asyncio.wait_for(self.api.played.wait(), timeout=5)
            assert self.watch.running()
        finally:
            await self.watch.stop()
        assert not self.watch.running()
        # Never a LIST or WATCH of Secrets without the server-side label selector.
        assert self.api.selectors == {names.SECRET_WATCH_SELECTOR}


async def test_a_410_relists_and_watches_on_from_the_new_list() -> None:
    api = ScriptedApi(
        ("list", SecretList([secret("a", 5)], "10")),
        ("watch", [event("ADDED", secret("b", 11)), gone()]),
        ("list", SecretList([secret("a", 5), secret("b", 11), secret("c", 15)], "20")),
    )
    harness = Harness(api)
    await harness.play()
    assert api.calls == [
        ("list", None, None),
        ("watch", None, "10"),
        ("list", None, None),
        ("watch", None, "20"),
    ]
    # The listing arrives as kopf delivered it: type None, which the cache takes as current.
    assert harness.delivered == [
        ("ADDED", ("ns", "b")),
        (None, ("ns", "a")),
        (None, ("ns", "b")),
        (None, ("ns", "c")),
    ]
    assert sorted(harness.cache.keys()) == [("ns", "a"), ("ns", "b"), ("ns", "c")]
    assert harness.sleeps == [], "a 410 is relisted at once"


async def test_a_410_answer_to_the_watch_request_itself_relists_too() -> None:
    api = ScriptedApi(
        ("list", SecretList([], "10")),
        ("watch", ApiError(410, "Gone", "too old resource version")),
        ("list", SecretList([], "30")),
    )
    harness = Harness(api)
    await harness.play()
    assert [call[0] for call in api.calls] == ["list", "watch", "list", "watch"]
    assert api.calls[-1] == ("watch", None, "30")


async def test_a_relist_reports_what_was_deleted_while_away_in_its_own_namespace() -> None:
    api = ScriptedApi(
        scripts={
            "one": [
                ("list", SecretList([secret("a", 5, "one"), secret("b", 6, "one")], "10")),
                ("watch", ApiError(0, "Unreachable", "connection refused")),
                ("watch", [event("BOOKMARK", {"metadata": {"resourceVersion": "12"}})]),
                ("watch", [gone()]),
                ("list", SecretList([secret("a", 5, "one")], "40")),
            ],
            "two": [("list", SecretList([secret("x", 7, "two")], "11"))],
        }
    )
    harness = Harness(api, namespaces=("one", "two"))
    await harness.watch.prime()
    # The operator wrote this one after the relist's LIST was answered: newer than it.
    harness.cache.remember(secret("written", 45, "one"))
    harness.watch.start(harness.deliver)
    try:
        await asyncio.wait_for(api.played.wait(), timeout=5)
    finally:
        await harness.watch.stop()
    # b was deleted while the watch was away: DELETED, so the drift is acted on.
    assert ("DELETED", ("one", "b")) in harness.delivered
    assert sorted(harness.cache.keys()) == [("one", "a"), ("one", "written"), ("two", "x")]
    # A relist in one namespace says nothing about another namespace's Secrets.
    assert not any(key[0] == "two" for kind, key in harness.delivered if kind == "DELETED")
    # One watch per namespace, each from its own list's resourceVersion, then resumed.
    assert [call for call in api.calls if call[1] == "one"] == [
        ("list", "one", None),
        ("watch", "one", "10"),
        ("watch", "one", "10"),
        ("watch", "one", "12"),
        ("list", "one", None),
        ("watch", "one", "40"),
    ]
    assert [call for call in api.calls if call[1] == "two"] == [
        ("list", "two", None),
        ("watch", "two", "11"),
    ]
    assert harness.sleeps == [0.75], "one pause, for the failure; none for the 410"


async def test_bookmarks_move_the_resume_point_and_are_not_delivered() -> None:
    api = ScriptedApi(
        ("list", SecretList([], "10")),
        ("watch", [event("BOOKMARK", {"kind": "Secret", "metadata": {"resourceVersion": "30"}})]),
        ("watch", [event("MODIFIED", secret("a", 31)), event("DELETED", secret("a", 32))]),
    )
    harness = Harness(api)
    await harness.play()
    assert [call for call in api.calls if call[0] == "watch"] == [
        ("watch", None, "10"),
        ("watch", None, "30"),
        ("watch", None, "32"),
    ]
    assert harness.delivered == [("MODIFIED", ("ns", "a")), ("DELETED", ("ns", "a"))]
    assert harness.cache.keys() == []
    assert harness.sleeps == [], "a watch the server ended after events resumes at once"


async def test_failures_back_off_with_jitter_and_resume_where_they_were() -> None:
    unreachable = ApiError(0, "Unreachable", "connection refused")
    api = ScriptedApi(
        ("list", SecretList([], "10")),
        ("watch", unreachable),
        ("watch", ApiError(503, "ServiceUnavailable", "")),
        ("watch", [event("ERROR", {"kind": "Status", "code": 500, "reason": "InternalError"})]),
        ("watch", [event("ADDED", secret("a", 11)), unreachable]),
        ("watch", unreachable),
    )
    harness = Harness(api)
    await harness.play()
    # Equal jitter (0.5 here): 0.75 s, 1.5 s, 3 s; a watch that worked starts a new run.
    assert harness.sleeps == [0.75, 1.5, 3.0, 0.75, 1.5]
    # Resumed from the last resourceVersion seen, never relisted.
    assert [call for call in api.calls if call[0] == "list"] == [("list", None, None)]
    assert [call[2] for call in api.calls if call[0] == "watch"][-1] == "11"


async def test_a_watch_closed_at_once_with_nothing_in_it_is_a_failure() -> None:
    api = ScriptedApi(("list", SecretList([], "10")), ("watch", []), ("watch", []))
    harness = Harness(api)
    await harness.play()
    assert harness.sleeps == [0.75, 1.5]


async def test_a_failing_consumer_does_not_end_the_watch(caplog: pytest.LogCaptureFixture) -> None:
    api = ScriptedApi(
        ("list", SecretList([], "10")),
        ("watch", [event("ADDED", secret("a", 11))]),
        ("watch", [event("ADDED", secret("a", 11))]),
    )
    harness = Harness(api)
    calls = 0

    def broken(kind: str | None, body: Mapping[str, Any]) -> None:
        nonlocal calls
        calls += 1
        raise KeyError(str(body["data"]))  # a message quoting Secret data

    await harness.watch.prime()
    harness.watch.start(broken)
    try:
        await asyncio.wait_for(api.played.wait(), timeout=5)
        assert harness.watch.running()
    finally:
        await harness.watch.stop()
    assert calls == 2
    assert "broke unexpectedly: KeyError" in caplog.text
    assert "c2VjcmV0" not in caplog.text


async def test_a_failed_first_list_stops_the_start() -> None:
    api = ScriptedApi(("list", ApiError(403, "Forbidden", "")))
    harness = Harness(api)
    with pytest.raises(ApiError):
        await harness.watch.prime()


def test_the_policy_table() -> None:
    failed = Outcome(Ending.FAILED)
    assert failures_after(failed, 3) == 4
    assert failures_after(Outcome(Ending.FAILED, progressed=True), 3) == 1
    # The API server answering 410 works: relist at once, after any outage...
    assert failures_after(Outcome(Ending.EXPIRED), 5) == 0
    # ...but not in a loop when a fresh LIST's version is refused at once.
    assert failures_after(Outcome(Ending.EXPIRED, listed=True), 0) == 1
    # A quiet watch that lasted its term is no failure; one closed at once is.
    assert failures_after(Outcome(Ending.ENDED, lasted_s=300), 2) == 0
    assert failures_after(Outcome(Ending.ENDED, lasted_s=0.1), 2) == 3
    assert backoff_s(0, 0.9) == 0
    assert backoff_s(1, 0.0) == 0.5 and backoff_s(1, 1.0) == 1.0
    assert backoff_s(5, 1.0) == 10.0  # capped
    assert backoff_s(100_000, 0.0) == 5.0  # hours of outage: still a number


async def test_watch_lines_of_any_length_split_across_reads() -> None:
    big = b'{"type": "ADDED", "object": {"data": "' + b"x" * 300_000 + b'"}}'

    async def reads() -> AsyncGenerator[bytes, None]:
        stream = big + b"\n\n" + b'{"type": "BOOKMARK"}\n' + b'{"type": "DELETED"}'
        for start in range(0, len(stream), 65_536):
            yield stream[start : start + 65_536]

    lines = [bytes(line) async for line in _lines(reads())]
    assert lines == [big, b'{"type": "BOOKMARK"}', b'{"type": "DELETED"}']
