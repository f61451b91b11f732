"""A fast OAuth2 client-credentials endpoint for the benchmark (aiohttp, own process).

Every ProviderToken of the benchmark sends ``n=<index>`` (extraParams), so each gets its
own token and the endpoint can say when each index asked. ``GET /stats`` returns the log.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time

from aiohttp import web


def build_app(expires_in: int, latency_s: float) -> web.Application:
    log: list[tuple[float, str]] = []

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        received = time.time()
        if latency_s:
            await asyncio.sleep(latency_s)
        index = str(form.get("n", ""))
        log.append((received, index))
        body = {
            "access_token": f"bench-{index}-{secrets.token_hex(12)}",
            "token_type": "Bearer",
            "expires_in": expires_in,
        }
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(log)

    async def reset(_: web.Request) -> web.Response:
        log.clear()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/token", token)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
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
