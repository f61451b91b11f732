"""Liveness and readiness over HTTP, for the Deployment's probes.

- ``/healthz``: the event loop answers and the scheduler's tasks run. A failure means
  the process is wedged: restart it.
- ``/readyz``: started, the API server answered a probe within the last interval, and
  this replica is the active one. A failure means "do not count on me now" (lost API
  connection, standby replica), not "restart me".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from tokensync import metrics

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
        self.active = True
        self._task: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None

    def set_active(self, active: bool) -> None:
        self.active = active
        metrics.WATCHING.set(1 if self.ready else 0)

    @property
    def ready(self) -> bool:
        return self.started and self.api_reachable and self.active

    async def start(self, port: int) -> None:
        await self.check_api()
        self._task = asyncio.create_task(self._probe_forever(), name="health-probe")
        if port:
            app = web.Application()
            app.router.add_get("/healthz", self._healthz)
            app.router.add_get("/readyz", self._readyz)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "0.0.0.0", port).start()  # noqa: S104 - probes

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._runner is not None:
            await self._runner.cleanup()

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
        metrics.WATCHING.set(1 if self.ready else 0)

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
            return web.Response(text="ok")
        reasons = [
            text
            for failing, text in (
                (not self.started, "starting"),
                (not self.api_reachable, "API server not reachable"),
                (not self.active, "standby replica"),
            )
            if failing
        ]
        return web.Response(text="; ".join(reasons), status=503)
