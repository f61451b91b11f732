"""Kubernetes Events about ProviderTokens (events.k8s.io/v1), posted on transitions only."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Protocol

from tokensync import names
from tokensync.clock import Clock

logger = logging.getLogger(__name__)

_MAX_NOTE = 1024  # the API server refuses longer notes


@dataclass(frozen=True)
class ObjectRef:
    namespace: str
    name: str
    uid: str


class EventSink(Protocol):
    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None: ...


class EventRecorder:
    """Posts Events in the background: a reconcile never waits for one.

    Bounded: when the API server is slow and more than ``backlog`` Events wait, new ones
    are dropped (and counted in the log) rather than holding memory or tokens back.
    """

    def __init__(
        self,
        sink: EventSink,
        *,
        clock: Clock,
        instance: str | None = None,
        senders: int = 4,
        backlog: int = 10_000,
    ) -> None:
        self._sink = sink
        self._clock = clock
        self._instance = instance or socket.gethostname()
        self._senders = senders
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=backlog)
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped = 0

    def start(self) -> None:
        for index in range(self._senders):
            self._tasks.append(asyncio.create_task(self._send(), name=f"events-{index}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _send(self) -> None:
        while True:
            await self._post(await self._queue.get())

    async def record(self, ref: ObjectRef, kind: str, reason: str, note: str) -> None:
        body = self._body(ref, kind, reason, note)
        if not self._tasks:
            await self._post(body)
            return
        try:
            self._queue.put_nowait(body)
        except asyncio.QueueFull:
            self.dropped += 1
            logger.warning(
                "event %s for %s/%s dropped: %d events already wait (%d dropped so far)",
                reason,
                ref.namespace,
                ref.name,
                self._queue.qsize(),
                self.dropped,
            )

    def _body(self, ref: ObjectRef, kind: str, reason: str, note: str) -> dict[str, Any]:
        now = self._clock().astimezone(UTC)
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            # As client-go names them: events.k8s.io refuses a generateName ending in ".".
            "metadata": {
                # Names may be 253 characters; the suffix needs 17 of them. A unique
                # suffix as client-go makes one; no decision reads it as a time.
                "name": f"{ref.name[:236]}.{time.time_ns():x}",
                "namespace": ref.namespace,
            },
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reportingController": f"{names.GROUP}/operator",
            "reportingInstance": self._instance[:128],
            "action": "Reconcile",
            "reason": reason,
            "type": kind,
            "note": note[:_MAX_NOTE],
            "regarding": {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND,
                "namespace": ref.namespace,
                "name": ref.name,
                "uid": ref.uid,
            },
        }
        return body

    async def _post(self, body: dict[str, Any]) -> None:
        regarding = body["regarding"]
        try:
            await self._sink.create_event(regarding["namespace"], body)
        except Exception as error:  # an Event is never worth failing a reconcile for
            logger.warning(
                "event %s for %s/%s not posted: %s %s",
                body["reason"],
                regarding["namespace"],
                regarding["name"],
                type(error).__name__,
                getattr(error, "status", ""),
            )
