"""The labelled-Secret watch: list, then watch from the list's resourceVersion, for ever.

Not a kopf watch: kopf built a cause, a patch, a body, a logger and the handler's kwargs
for every event (~0.36 ms of CPU, bench/results/profile-before-19.md) and kept memories
for every Secret, only for a handler that updates ``SecretCache``. kopf keeps the
ProviderTokens; this re-does for one watch what kopf did for it: the label selector
(always, server-side), bookmarks, reconnects from the last resourceVersion, a relist on
410 Gone, back-off with jitter on failures. A relist also reports what was deleted
while the watch was away, which kopf's relist did not.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tokensync import names
from tokensync.kube import ApiError, SecretList
from tokensync.model import Key, object_key
from tokensync.secret_cache import SecretCache

logger = logging.getLogger(__name__)

# kopf's server_timeout for its watches: the API server ends each watch after this long.
SERVER_TIMEOUT_S = 300
# A watch that ends sooner than this with nothing in it is a failure, not a timeout: a
# proxy or a restarting API server closing it at once must not make the loop spin.
_SHORTEST_WATCH_S = 5.0
_FIRST_DELAY_S = 1.0
# Nothing is lost while waiting (the watch resumes from its resourceVersion), but drift
# goes unseen until the watch is back: once the API server answers again, at most this
# long. One request per scope per pause is no load on an API server.
_LONGEST_DELAY_S = 10.0
_RELIST_SLICE = 500


class SecretSource(Protocol):
    """What the watch asks of the API server (``kube.KubeApi``)."""

    async def list_secrets(
        self, label_selector: str, namespace: str | None = None
    ) -> SecretList: ...

    def watch_secrets(
        self,
        label_selector: str,
        namespace: str | None,
        resource_version: str,
        *,
        timeout_s: int,
    ) -> AsyncGenerator[dict[str, Any], None]: ...


# Where events go: ``Controller.observe_secret`` (type None for a listed Secret, as kopf
# delivered its listing).
Deliver = Callable[[str | None, Mapping[str, Any]], object]


class Ending(enum.Enum):
    ENDED = "ended"  # the API server closed it (timeoutSeconds): resume
    EXPIRED = "expired"  # 410 Gone: the resourceVersion is compacted away, relist
    FAILED = "failed"  # no answer, an error status, a broken stream: back off, resume


@dataclass(frozen=True)
class Outcome:
    ending: Ending
    # A watch event arrived (an object or a bookmark): the connection worked.
    progressed: bool = False
    # This attempt began with a LIST (the resourceVersion had expired).
    listed: bool = False
    lasted_s: float = 0.0


def failures_after(outcome: Outcome, failures: int) -> int:
    """Consecutive failures once a watch ended so; the wait before the next depends on it.

    - failed: one more, or the first of a new run when the watch had worked meanwhile;
    - expired: the API server answered, so relist at once; only a 410 straight after a
      fresh LIST (which would relist in a loop) counts;
    - ended: a watch that got anything, or lasted (a quiet selection on a server that
      sends no bookmarks), resets the count; one closed at once counts.
    """
    if outcome.ending is Ending.FAILED:
        return 1 if outcome.progressed else failures + 1
    if outcome.ending is Ending.EXPIRED:
        return failures + 1 if outcome.listed and not outcome.progressed else 0
    if outcome.progressed or outcome.lasted_s >= _SHORTEST_WATCH_S:
        return 0
    return failures + 1


def backoff_s(failures: int, jitter: float) -> float:
    """Exponential from 1 s to 10 s, with equal jitter: replicas (and the namespaces of
    one replica) that lost the API server together do not all come back at once."""
    if failures <= 0:
        return 0.0
    # The exponent is capped: an outage of hours must not overflow the float.
    ceiling = min(_LONGEST_DELAY_S, _FIRST_DELAY_S * 2.0 ** min(failures - 1, 16))
    return ceiling / 2 + jitter * ceiling / 2


@dataclass
class _Position:
    namespace: str | None
    # Where the next watch starts; None: list first.
    version: str | None = None
    failures: int = 0


class SecretWatch:
    """One list+watch per scope: the whole cluster, or each --namespace."""

    def __init__(
        self,
        kube: SecretSource,
        cache: SecretCache,
        *,
        namespaces: tuple[str, ...],
        selector: str = names.SECRET_WATCH_SELECTOR,
        server_timeout_s: int = SERVER_TIMEOUT_S,
        jitter: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kube = kube
        self._cache = cache
        self._selector = selector
        self._server_timeout_s = server_timeout_s
        self._jitter = jitter
        self._sleep = sleep
        self._monotonic = monotonic
        self._positions = [_Position(namespace) for namespace in namespaces or (None,)]
        self._tasks: list[asyncio.Task[None]] = []

    async def prime(self) -> None:
        """The first LIST of each scope, into the cache, before any ProviderToken is
        looked at: after a restart a token's event may come before its Secret's, and an
        uncached Secret would look gone (a needless mint). Raises ``ApiError``: the
        operator does not start without it. The watches go on from these lists."""
        for position in self._positions:
            listing = await self._kube.list_secrets(self._selector, position.namespace)
            for secret in listing.items:
                self._cache.observe(None, secret)
            position.version = listing.resource_version or None
        logger.info("cached %d labelled Secrets before watching", len(self._cache))

    def start(self, deliver: Deliver) -> None:
        self._tasks = [
            asyncio.create_task(
                self._run(position, deliver),
                name=f"secret-watch {position.namespace or '(all namespaces)'}",
            )
            for position in self._positions
        ]

    def running(self) -> bool:
        """Every watch loop is alive (they end only when stopped): for ``/healthz``."""
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, position: _Position, deliver: Deliver) -> None:
        while True:
            outcome = await self._once(position, deliver)
            position.failures = failures_after(outcome, position.failures)
            if outcome.ending is Ending.EXPIRED:
                # Gone is routine (a long disconnect, an API server restart): relist.
                logger.debug("Secret watch %s expired", _scope(position))
                position.version = None
            delay = backoff_s(position.failures, self._jitter())
            if delay:
                await self._sleep(delay)

    async def _once(self, position: _Position, deliver: Deliver) -> Outcome:
        """One LIST when needed, then one WATCH; never raises (but when cancelled)."""
        started = self._monotonic()
        listed = position.version is None
        progressed = False
        try:
            if position.version is None:
                position.version = await self._relist(position, deliver)
            async with contextlib.aclosing(
                self._kube.watch_secrets(
                    self._selector,
                    position.namespace,
                    position.version,
                    timeout_s=self._server_timeout_s,
                )
            ) as events:
                async for event in events:
                    if self._apply(position, event, deliver):
                        return Outcome(Ending.EXPIRED, progressed, listed)
                    # Not before: an ERROR event, or a consumer that raised, is no sign
                    # of a working watch and must not cut the back-off short.
                    progressed = True
        except ApiError as error:
            if error.status == 410:
                return Outcome(Ending.EXPIRED, progressed, listed)
            # Status and reason only: the message may name the request.
            logger.warning(
                "Secret watch %s failed (%s %s); trying again after a pause",
                _scope(position),
                error.status,
                error.reason,
            )
            return Outcome(Ending.FAILED, progressed, listed)
        except Exception as error:
            # A bug in a consumer must not end the watch for good: the type only (an
            # exception's text may quote a Secret), then the same back-off.
            logger.error(
                "Secret watch %s broke unexpectedly: %s", _scope(position), type(error).__name__
            )
            return Outcome(Ending.FAILED, progressed, listed)
        return Outcome(Ending.ENDED, progressed, listed, self._monotonic() - started)

    def _apply(self, position: _Position, event: Mapping[str, Any], deliver: Deliver) -> bool:
        """One watch event; True when it says the resourceVersion expired (410)."""
        kind = event.get("type")
        body = event.get("object") or {}
        if kind == "ERROR":
            if body.get("code") == 410:
                return True
            raise ApiError(int(body.get("code") or 0), str(body.get("reason", "")), "")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            deliver(kind, body)
        elif kind != "BOOKMARK":
            logger.debug("Secret watch %s: ignored an event of type %s", _scope(position), kind)
            return False
        # A bookmark carries only the resourceVersion to resume from.
        version = (body.get("metadata") or {}).get("resourceVersion")
        if version:
            position.version = str(version)
        return False

    async def _relist(self, position: _Position, deliver: Deliver) -> str:
        """List again; Secrets held but no longer listed were deleted (or lost the label)
        while the watch was away: each is reported DELETED, so drift is still seen."""
        listing = await self._kube.list_secrets(self._selector, position.namespace)
        listed: set[Key] = set()
        for index, secret in enumerate(listing.items, start=1):
            listed.add(object_key(secret))
            deliver(None, secret)
            if index % _RELIST_SLICE == 0:
                # Thousands of Secrets: let the workers and the other watches run between.
                await asyncio.sleep(0)
        gone = [key for key in self._cache.keys(position.namespace) if key not in listed]
        for namespace, name in gone:
            # At the list's resourceVersion: the cache drops it unless it holds a newer
            # one (a Secret the operator wrote after the LIST was answered).
            deliver(
                "DELETED",
                {
                    "metadata": {
                        "namespace": namespace,
                        "name": name,
                        "resourceVersion": listing.resource_version,
                    }
                },
            )
        logger.info(
            "Secret watch %s listed again: %d Secrets, %d gone meanwhile",
            _scope(position),
            len(listing.items),
            len(gone),
        )
        return listing.resource_version


def _scope(position: _Position) -> str:
    return f"in {position.namespace}" if position.namespace else "cluster-wide"
