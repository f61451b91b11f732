"""A real HTTP server on loopback for faking a provider, with the switches tests need.

Each fake provider subclasses ``FakeProvider``, names the provider it plays (``provider``,
its name in ``tokensync.providers.registry``) and implements ``token_url`` and ``answer``.
The base records every request, counts what it issued, and can add latency, answer with
an outage, or enforce a rate limit, before the provider's own logic runs. Given a
``ServerTls`` it serves HTTPS instead, optionally asking for (or requiring) a client
certificate signed by a CA of the test's own (RFC 8705 mutual TLS).
"""

from __future__ import annotations

import json
import secrets
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self
from urllib.parse import parse_qsl, urlsplit

import jwt

SIGNING_KEY = "fake-provider-signing-key-0123456789abcdef"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float
    # The client certificate the TLS handshake verified (DER), None over plain HTTP or
    # when the client presented none.
    peer_cert: bytes | None = None
    # What the fake learnt while serving it (the client it resolved, verified claims).
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(errors="replace")))

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-encoded unless bytes
    headers: dict[str, str] = field(default_factory=dict)
    # Send this many bytes of the body (Content-Length still promises all), then hang up.
    truncate_at: int | None = None


@dataclass(frozen=True)
class ServerTls:
    """Serve HTTPS with this certificate; with ``client_ca_file``, ask clients for a
    certificate that CA signed: required (``ssl.CERT_REQUIRED``: no certificate, no
    connection) unless ``require_client_cert`` is off (then one is verified if sent)."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    require_client_cert: bool = True

    def context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file:
            context.load_verify_locations(cafile=self.client_ca_file)
            required = self.require_client_cert
            context.verify_mode = ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL
        return context


# A handshake that does not finish in this long is dropped (a client that never sends).
_HANDSHAKE_TIMEOUT_S = 10.0


@dataclass
class Issued:
    subject: str  # who it was issued to (client id, user, API key name)
    value: str
    expires_at: float | None
    issued_at: float
    grant: str = ""


class FakeProvider:
    provider: ClassVar[str]  # the registered provider this fake stands in for

    def __init__(self, port: int = 0, tls: ServerTls | None = None) -> None:
        self.tls = tls
        # Why each refused TLS handshake failed (OpenSSL's reason), in order.
        self.tls_failures: list[str] = []
        self.lock = threading.RLock()
        self.requests: list[Request] = []
        self.issued: list[Issued] = []
        self.known_secrets: set[str] = set()
        self.latency_s = 0.0
        self.outage_until = 0.0
        self.outage_status = 503
        self.outage_body: Any = {"error": "temporarily_unavailable"}
        self.outage_headers: dict[str, str] = {}
        self.retry_after: str | None = None
        self.rate_limit: tuple[int, float] | None = None  # (requests, per seconds)
        self.rate_limited_status = 429
        # Called with each token as it is issued, before the answer is sent (fault tests).
        self.on_issue: Callable[[Issued], None] | None = None
        self._window: deque[float] = deque()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        if tls is not None:
            # The handshake runs in the connection's own thread (see the handler), not in
            # accept(): a client that stalls or fails it cannot block the server.
            self._server.socket = tls.context().wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> Self:
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
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def token_url(self) -> str:
        raise NotImplementedError

    # Switches
    def outage(
        self,
        seconds: float,
        status: int = 503,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer every request with ``status``, ``body`` and ``headers`` for a while."""
        with self.lock:
            self.outage_until = time.time() + seconds
            self.outage_status = status
            if body is not None:
                self.outage_body = body
            self.outage_headers = dict(headers or {})

    # Reading back
    def issued_to(self, subject: str) -> list[Issued]:
        with self.lock:
            return [i for i in self.issued if i.subject == subject]

    def every_secret(self) -> Iterator[str]:
        with self.lock:
            yield from self.known_secrets
            for issued in self.issued:
                yield issued.value

    # For subclasses
    def answer(self, request: Request) -> Response:
        raise NotImplementedError

    def issue(
        self,
        subject: str,
        *,
        lifetime_s: int | None,
        grant: str = "",
        jwt_claims: dict[str, Any] | None = None,
        opaque_length: int = 48,
    ) -> Issued:
        """Record and return a new token: a JWT when claims are given, else opaque hex."""
        now = time.time()
        expires = now + lifetime_s if lifetime_s else None
        if jwt_claims is not None:
            claims = {"iat": int(now), "jti": secrets.token_hex(8), **jwt_claims}
            if expires is not None:
                claims["exp"] = int(expires)
            value = jwt.encode(claims, SIGNING_KEY, algorithm="HS256")
        else:
            value = secrets.token_hex(opaque_length // 2 + 1)[:opaque_length]
        issued = Issued(subject, value, expires, now, grant)
        with self.lock:
            self.issued.append(issued)
            hook = self.on_issue
        if hook is not None:
            hook(issued)
        return issued

    # Serving
    def _serve(self, request: Request) -> Response:
        with self.lock:
            self.requests.append(request)
            if self.outage_until > time.time():
                headers = {"Retry-After": self.retry_after} if self.retry_after else {}
                return Response(
                    self.outage_status, self.outage_body, {**headers, **self.outage_headers}
                )
            if self.rate_limit is not None:
                limit, per = self.rate_limit
                while self._window and self._window[0] < request.at - per:
                    self._window.popleft()
                if len(self._window) >= limit:
                    return Response(self.rate_limited_status, self.rate_limited_body())
                self._window.append(request.at)
        return self.answer(request)

    def rate_limited_body(self) -> Any:
        return {"error": "rate_limited"}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            peer_cert: bytes | None = None

            def handle(self) -> None:
                if isinstance(self.connection, ssl.SSLSocket):
                    self.connection.settimeout(_HANDSHAKE_TIMEOUT_S)
                    try:
                        self.connection.do_handshake()
                    except (ssl.SSLError, OSError) as error:
                        with provider.lock:
                            reason = getattr(error, "reason", None) or type(error).__name__
                            provider.tls_failures.append(str(reason))
                        self.close_connection = True
                        return
                    self.connection.settimeout(None)
                    self.peer_cert = self.connection.getpeercert(binary_form=True)
                super().handle()

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query=dict(parse_qsl(parts.query)),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    at=time.time(),
                    peer_cert=self.peer_cert,
                )
                if provider.latency_s:
                    time.sleep(provider.latency_s)
                response = provider._serve(request)
                payload = (
                    response.body
                    if isinstance(response.body, bytes)
                    else json.dumps(response.body).encode()
                )
                self.send_response(response.status)
                headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
                headers.update(response.headers)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    if response.truncate_at is not None:
                        self.wfile.write(payload[: response.truncate_at])
                        self.close_connection = True
                    else:
                        self.wfile.write(payload)
                except ConnectionError:
                    # The client hung up first (an oversized answer it refused to read).
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        return Handler
