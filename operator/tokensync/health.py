"""Liveness and readiness over HTTP, for the Deployment's probes.

- ``/healthz``: the event loop answers and the scheduler's tasks run. A failure means
  the process is wedged: restart it.
- ``/readyz``: started and the API server answered a probe within the last interval. A
  failure means "do not count on me now" (lost API connection), not "restart me".

A standby replica (leader election) is ready: it watches, its caches are warm, and it
takes over when the leader goes. Were it not ready, a Deployment of two replicas could
never finish a rolling update (the new pods wait to be ready while the leader waits for
them) and a PodDisruptionBudget could never let the leader be evicted. The body says
which role the replica has; ``tokensync_operator_leading`` says it to Prometheus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable

from aiohttp import web

from tokensync import metrics
from tokensync.preflight import StartupError

logger = logging.getLogger(__name__)


class Health:
    def __init__(
        self,
        api_probe: Callable[[], Awaitable[bool]],
        *,
        alive: Callable[[], bool] = lambda: True,
        interval_s: float = 10.0,
    ) -> None:
        self._api_probe = api_probe
        self._alive = alive
        self._interval_s = interval_s
        self.started = False
        self.api_reachable = False
        self.leading = True
        self._task: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None

    def set_leading(self, leading: bool) -> None:
        self.leading = leading
        self.publish()

    @property
    def ready(self) -> bool:
        return self.started and self.api_reachable

    def publish(self) -> None:
        metrics.WATCHING.set(1 if self.ready else 0)
        metrics.LEADING.set(1 if self.leading else 0)

    async def start(self, port: int) -> None:
        await self.check_api()
        self._task = asyncio.create_task(self._probe_forever(), name="health-probe")
        if port:
            app = web.Application()
            app.router.add_get("/healthz", self._healthz)
            app.router.add_get("/readyz", self._readyz)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            try:
                await web.TCPSite(self._runner, "0.0.0.0", port).start()  # noqa: S104 - probes
            except OSError as error:
                await self.stop()
                raise StartupError(
                    f"cannot serve the health probes on port {port} (--health-port): "
                    f"{os.strerror(error.errno) if error.errno else error}"
                ) from None

    async def stop(self) -> None:
        # Twice is fine: a failed start stops it, and the runtime's close stops it again.
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def check_api(self) -> None:
        try:
            reachable = await self._api_probe()
        except Exception:  # any failure to reach the API server is "not reachable"
            reachable = False
        if reachable != self.api_reachable:
            logger.log(
                logging.INFO if reachable else logging.WARNING,
                "API server %s",
                "reachable again" if reachable else "not reachable",
            )
        self.api_reachable = reachable
        self.publish()

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.check_api()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(
            text="ok" if self._alive() else "wedged", status=200 if self._alive() else 500
        )

    async def _readyz(self, _: web.Request) -> web.Response:
        if self.ready:
            return web.Response(text="ok: leading" if self.leading else "ok: standby")
        reasons = [
            text
            for failing, text in (
                (not self.started, "starting"),
                (not self.api_reachable, "API server not reachable"),
            )
            if failing
        ]
        return web.Response(text="; ".join(reasons), status=503)
