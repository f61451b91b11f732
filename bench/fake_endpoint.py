"""A fast OAuth2 client-credentials endpoint for the benchmark (aiohttp, own process).

Every ProviderToken of the benchmark sends ``n=<namespace>-<index>`` (extraParams), so
each gets its own token and the endpoint can say when each asked; ``lifetime=<seconds>``
(also extraParams) overrides ``--expires-in`` for that request. A token reads
``bench-<n>-<expiry, epoch seconds>-<hex>``: whoever sees only the Secret's data can tell
when the token in it expires.

- ``GET /stats``: ``[[received_at, n], ...]`` of every token handed out since the last
  ``POST /reset``.
- ``POST /outage`` ``{"down": true|false}``: while down, ``/token`` answers 503 without
  ``Retry-After`` and counts the request (not in ``/stats``). Answers (as does
  ``GET /outage``) ``{"down": ..., "refused": <requests refused since it went down>}``.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time

from aiohttp import web


def build_app(expires_in: int, latency_s: float) -> web.Application:
    log: list[tuple[float, str]] = []
    outage = {"down": False, "refused": 0}

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        received = time.time()
        if outage["down"]:
            outage["refused"] += 1
            return web.json_response({"error": "temporarily_unavailable"}, status=503)
        if latency_s:
            await asyncio.sleep(latency_s)
        index = str(form.get("n", ""))
        try:
            lifetime = int(str(form.get("lifetime") or expires_in))
        except ValueError:
            return web.json_response({"error": "invalid_request"}, status=400)
        log.append((received, index))
        body = {
            "access_token": f"bench-{index}-{int(received + lifetime)}-{secrets.token_hex(12)}",
            "token_type": "Bearer",
            "expires_in": lifetime,
        }
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(log)

    async def reset(_: web.Request) -> web.Response:
        log.clear()
        return web.json_response({"ok": True})

    async def set_outage(request: web.Request) -> web.Response:
        down = bool((await request.json())["down"])
        if down and not outage["down"]:
            outage["refused"] = 0
        outage["down"] = down
        return web.json_response(outage)

    async def get_outage(_: web.Request) -> web.Response:
        return web.json_response(outage)

    app = web.Application()
    app.router.add_post("/token", token)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    app.router.add_post("/outage", set_outage)
    app.router.add_get("/outage", get_outage)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--expires-in", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    web.run_app(
        build_app(args.expires_in, args.latency),
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main()
