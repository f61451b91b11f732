"""A real OAuth2 token endpoint on loopback (RFC 6749 client credentials and password).

Behaves like providers.md's generic contract, errors included. Tests steer it per client
(lifetime, outages, rate limits) so that tests sharing one server do not disturb each
other, and read back every request and every token it issued.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote


@dataclass
class Issued:
    client_id: str
    value: str
    expires_at: float | None
    issued_at: float


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_id: str | None
    at: float


@dataclass
class ClientBehaviour:
    secret: str
    expires_in: int | None = 3600
    outage_until: float = 0.0
    outage_status: int = 503
    retry_after: str | None = None
    auth_method: str | None = None  # enforce client_secret_basic or client_secret_post
    users: dict[str, str] = field(default_factory=dict)


class FakeOAuth2Server:
    def __init__(self, port: int = 0) -> None:
        self._lock = threading.Lock()
        self.clients: dict[str, ClientBehaviour] = {}
        self.issued: list[Issued] = []
        self.requests: list[Recorded] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # Lifecycle
    def __enter__(self) -> FakeOAuth2Server:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def host(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    @property
    def token_url(self) -> str:
        return f"http://{self.host}/oauth/token"

    # Steering
    def add_client(self, client_id: str, secret: str, **behaviour: Any) -> ClientBehaviour:
        with self._lock:
            self.clients[client_id] = ClientBehaviour(secret=secret, **behaviour)
            return self.clients[client_id]

    def outage(self, client_id: str, seconds: float, status: int = 503) -> None:
        with self._lock:
            self.clients[client_id].outage_until = time.time() + seconds
            self.clients[client_id].outage_status = status

    # Reading back
    def issued_to(self, client_id: str) -> list[Issued]:
        with self._lock:
            return [i for i in self.issued if i.client_id == client_id]

    def requests_from(self, client_id: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.client_id == client_id]

    def every_secret(self) -> Iterator[str]:
        with self._lock:
            for client in self.clients.values():
                yield client.secret
                yield from client.users.values()
            for issued in self.issued:
                yield issued.value

    # Serving
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                self._reply(405, {"error": "invalid_request", "error_description": "POST only"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, payload, headers = server._token(self, body)
                self._reply(status, payload, headers)

            def _reply(
                self, status: int, payload: Any, headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "no-store")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def _token(
        self, request: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        form = dict(parse_qsl(body.decode(errors="replace")))
        basic = _basic_credentials(request.headers.get("Authorization"))
        client_id = basic[0] if basic else form.get("client_id")
        with self._lock:
            self.requests.append(
                Recorded(
                    method=request.command,
                    path=request.path,
                    headers={k.lower(): v for k, v in request.headers.items()},
                    body=body,
                    client_id=client_id,
                    at=time.time(),
                )
            )
            client = self.clients.get(client_id or "")
            if client is not None and client.outage_until > time.time():
                headers = {"Retry-After": client.retry_after} if client.retry_after else {}
                return client.outage_status, {"error": "temporarily_unavailable"}, headers
            if request.headers.get("Content-Type", "").split(";")[0] != (
                "application/x-www-form-urlencoded"
            ):
                return 400, {"error": "invalid_request", "error_description": "form body"}, {}
            if client is None:
                return 401, {"error": "invalid_client"}, {}
            method = "client_secret_basic" if basic else "client_secret_post"
            secret = basic[1] if basic else form.get("client_secret")
            if client.auth_method and client.auth_method != method:
                return 401, {"error": "invalid_client", "error_description": "auth method"}, {}
            if secret != client.secret:
                return 401, {"error": "invalid_client", "error_description": "bad secret"}, {}
            grant = form.get("grant_type")
            if grant == "password":
                user = form.get("username", "")
                if client.users.get(user) != form.get("password"):
                    return (
                        401,
                        {"error": "invalid_grant", "error_description": "Invalid credentials"},
                        {},
                    )
            elif grant != "client_credentials":
                return 400, {"error": "unsupported_grant_type"}, {}
            now = time.time()
            value = "fake-" + secrets.token_hex(24)
            expires_at = now + client.expires_in if client.expires_in else None
            self.issued.append(Issued(client_id or "", value, expires_at, now))
            payload: dict[str, Any] = {"access_token": value, "token_type": "Bearer"}
            if client.expires_in:
                payload["expires_in"] = client.expires_in
            if form.get("scope"):
                payload["scope"] = form["scope"]
            return 200, payload, {}


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header.split(" ", 1)[1]).decode()
    except ValueError:
        return None
    client_id, _, secret = decoded.partition(":")
    return unquote(client_id), unquote(secret)


def main() -> None:
    """``python tests/fakes/oauth2_server.py --port 9400 --client demo:demo-secret``."""
    import argparse

    parser = argparse.ArgumentParser(description="A fake OAuth2 token endpoint on loopback.")
    parser.add_argument("--port", type=int, default=9400)
    parser.add_argument("--client", action="append", default=[], metavar="ID:SECRET")
    parser.add_argument("--expires-in", type=int, default=300)
    args = parser.parse_args()
    server = FakeOAuth2Server(port=args.port)
    for pair in args.client or ["demo:demo-secret"]:
        client_id, _, secret = pair.partition(":")
        server.add_client(client_id, secret, expires_in=args.expires_in)
    print(f"fake OAuth2 token endpoint: {server.token_url}", flush=True)
    with server, contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()


if __name__ == "__main__":
    main()
