"""Kubernetes Events about ProviderTokens (events.k8s.io/v1), posted on transitions only."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from tokensync import names

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
    def __init__(
        self,
        sink: EventSink,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        instance: str | None = None,
    ) -> None:
        self._sink = sink
        self._clock = clock
        self._instance = instance or socket.gethostname()

    async def record(self, ref: ObjectRef, kind: str, reason: str, note: str) -> None:
        now = self._clock().astimezone(UTC)
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            # As client-go names them: events.k8s.io refuses a generateName ending in ".".
            "metadata": {
                "name": f"{ref.name}.{time.time_ns():x}",
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
        try:
            await self._sink.create_event(ref.namespace, body)
        except Exception as error:  # an Event is never worth failing a reconcile for
            logger.warning(
                "event %s for %s/%s not posted: %s %s",
                reason,
                ref.namespace,
                ref.name,
                type(error).__name__,
                getattr(error, "status", ""),
            )
