"""Leader election on a coordination.k8s.io Lease, for several replicas.

Every replica watches (kopf runs standalone on each, so a standby's caches are warm);
only the holder of the Lease mints and writes. A holder renews the Lease every
``renew_s``; when it stops (killed, partitioned), another replica takes the Lease once
``duration_s`` has passed since the last renewal. Writes use the Lease's
resourceVersion, so two replicas never both believe they took it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from tokensync.clock import Clock
from tokensync.kube import ApiError, Conflict, KubeApi

logger = logging.getLogger(__name__)

UNREACHABLE_RETRY_S = 1.0


def _micro(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class LeaderElector:
    def __init__(
        self,
        kube: KubeApi,
        *,
        namespace: str,
        name: str,
        identity: str,
        on_change: Callable[[bool], None],
        duration_s: int = 15,
        renew_s: float = 5.0,
        clock: Clock,
    ) -> None:
        self._kube = kube
        self._path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        self._collection = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self._name = name
        self.identity = identity
        self._on_change = on_change
        self._duration_s = duration_s
        self._renew_s = renew_s
        self._clock = clock
        self.leading = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="leader-election")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.leading:
            await self._release()

    async def _run(self) -> None:
        while True:
            pause = self._renew_s
            try:
                leading = await self.try_acquire_or_renew()
            except ApiError as error:
                logger.warning("leader election: lease not reachable (%s)", error.status)
                leading = False
                # Every replica has stopped working; whichever reaches the API server
                # first when it is back leads again. Asked every second, not every
                # renewal period, so tokens are not left unserved for up to 5 s more
                # (the soak saw one expire in that gap after an API server restart).
                pause = min(pause, UNREACHABLE_RETRY_S)
            self._set(leading)
            await asyncio.sleep(pause)

    def _set(self, leading: bool) -> None:
        if leading != self.leading:
            logger.info(
                "leader election: %s (%s)", "leading" if leading else "standby", self.identity
            )
            self.leading = leading
            self._on_change(leading)

    async def try_acquire_or_renew(self) -> bool:
        now = self._clock()
        try:
            lease: dict[str, Any] = await self._kube.request("GET", self._path)
        except ApiError as error:
            if error.status != 404:
                raise
            return await self._create(now)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
        duration = timedelta(seconds=int(spec.get("leaseDurationSeconds") or self._duration_s))
        expired = renewed is None or renewed + duration < now
        if holder != self.identity and holder and not expired:
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        new_spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self._duration_s,
            "renewTime": _micro(now),
            "acquireTime": spec.get("acquireTime") if holder == self.identity else _micro(now),
            "leaseTransitions": transitions if holder == self.identity else transitions + 1,
        }
        body = {**lease, "spec": new_spec}
        try:
            await self._kube.request("PUT", self._path, json_body=body)
        except Conflict:
            return False  # someone else wrote it first; look again next round
        return True

    async def _create(self, now: datetime) -> bool:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self._name},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self._duration_s,
                "acquireTime": _micro(now),
                "renewTime": _micro(now),
                "leaseTransitions": 0,
            },
        }
        try:
            await self._kube.request("POST", self._collection, json_body=body)
        except Conflict:
            return False
        return True

    async def _release(self) -> None:
        """On a clean shutdown, hand over at once instead of after the lease runs out."""
        with contextlib.suppress(ApiError):
            lease: dict[str, Any] = await self._kube.request("GET", self._path)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") == self.identity:
                spec["renewTime"] = _micro(self._clock() - timedelta(days=1))
                spec["holderIdentity"] = ""
                await self._kube.request("PUT", self._path, json_body={**lease, "spec": spec})
