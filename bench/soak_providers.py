"""The soak's fake providers: one process hosting tests/fakes, with a control API.

``python bench/soak_providers.py --plan plan.json`` starts the five fakes of tests/fakes
(OAuth2 client credentials, Keycloak for Biotz, Podero, Basiq, Microshare) on loopback,
registers each planned token's own credentials with its lifetime, and prints one JSON line
``{"control": URL, "token_urls": {provider: URL}}``. The control API (loopback, JSON):

- ``POST /fault`` ``{"provider", "kind", ...}``: switch a provider's fault, ``kind`` one of
  ``down`` (503 with ``temporarily_unavailable``, the port stays open so every request is
  counted), ``slow`` (``latency`` seconds before the real answer), ``429`` (with
  ``Retry-After: retry_after``), ``garbage`` (200 with a body that is no token answer:
  ``variant`` html, json or truncated), ``none``.
- ``GET /issued``: every token issued: provider, subject, value, issued_at, expires_at, grant.
- ``GET /requests``: every token request: provider, time, subject, status, fault.
- ``GET /secrets``: every credential and refresh token the fakes know (for the leak search).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fakes.base import FakeProvider, Request, Response  # noqa: E402
from fakes.basiq import FakeBasiq  # noqa: E402
from fakes.keycloak import FakeKeycloak  # noqa: E402
from fakes.microshare import FakeMicroshare  # noqa: E402
from fakes.oauth2_server import FakeOAuth2Server  # noqa: E402
from fakes.podero import FakePodero  # noqa: E402

GARBAGE: dict[str, Response] = {
    "html": Response(
        200, b"<html><body>Service Unavailable</body></html>", {"Content-Type": "text/html"}
    ),
    "json": Response(200, {"status": "ok", "message": "maintenance"}),
    "truncated": Response(200, b'{"access_token": "', {"Content-Type": "application/json"}),
}


@dataclass
class Fault:
    kind: str = "none"
    latency: float = 0.0
    retry_after: int = 0
    variant: str = "html"


def _basic_user(request: Request) -> str:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return ""
    try:
        return base64.b64decode(header[6:]).decode(errors="replace").partition(":")[0]
    except ValueError:
        return ""


class Providers:
    """The five fakes, each token request recorded and passed through the current fault."""

    def __init__(self) -> None:
        self.fakes: dict[str, FakeProvider] = {
            "oauth2": FakeOAuth2Server(),
            "biotz": FakeKeycloak(),
            "podero": FakePodero(),
            "basiq": FakeBasiq(),
            "microshare": FakeMicroshare(),
        }
        self.faults: dict[str, Fault] = {name: Fault() for name in self.fakes}
        self.lock = threading.Lock()
        self.log: list[tuple[str, float, str, int, str]] = []
        for name, fake in self.fakes.items():
            self._wrap(name, fake)

    def _wrap(self, name: str, fake: FakeProvider) -> None:
        serve = fake._serve

        def faulty(request: Request) -> Response:
            with self.lock:
                fault = self.faults[name]
            if fault.kind == "slow":
                time.sleep(fault.latency)
            if fault.kind == "down":
                answer = Response(503, {"error": "temporarily_unavailable"})
            elif fault.kind == "429":
                answer = Response(
                    429, {"error": "rate_limited"}, {"Retry-After": str(fault.retry_after)}
                )
            elif fault.kind == "garbage":
                answer = GARBAGE[fault.variant]
            else:
                answer = serve(request)
            entry = (name, request.at, self.subject(name, request), answer.status, fault.kind)
            with self.lock:
                self.log.append(entry)
            return answer

        fake._serve = faulty  # type: ignore[method-assign]

    def subject(self, name: str, request: Request) -> str:
        """Which planned token asked: the subject its fake issues tokens to."""
        fake = self.fakes[name]
        if name == "oauth2":
            return str(fake._client_id(request) or "")  # type: ignore[attr-defined]
        if name == "podero":
            return _basic_user(request)
        if name == "basiq":
            key = request.headers.get("authorization", "")[6:].strip()
            return str(fake.keys.get(key, ""))  # type: ignore[attr-defined]
        if name == "microshare":
            return request.query.get("username", "")
        form = request.form
        if form.get("grant_type") == "refresh_token":
            try:
                claims = jwt.decode(
                    form.get("refresh_token", ""), options={"verify_signature": False}
                )
            except jwt.PyJWTError:
                return ""
            return str(claims.get("sub", ""))
        return form.get("username", "")

    def register(self, token: dict[str, Any]) -> None:
        provider, subject = token["provider"], token["subject"]
        credentials, lifetime = token["credentials"], int(token["lifetime_s"])
        fake = self.fakes[provider]
        if isinstance(fake, FakeOAuth2Server):
            fake.add_client(subject, credentials["clientSecret"], expires_in=lifetime)
        elif isinstance(fake, FakeKeycloak):
            fake.add_user(subject, credentials["password"], access_lifetime=lifetime)
        elif isinstance(fake, FakePodero):
            fake.add_client(subject, credentials["clientSecret"], lifetime_s=lifetime)
        elif isinstance(fake, FakeBasiq):
            key = fake.add_key(subject, lifetime_s=lifetime)
            # The plan's key is the one the ProviderToken's Secret carries.
            with fake.lock:
                del fake.keys[key]
                fake.known_secrets.discard(key)
                fake.keys[credentials["apiKey"]] = subject
                fake.known_secrets.add(credentials["apiKey"])
        elif isinstance(fake, FakeMicroshare):
            fake.add_account(
                subject, credentials["password"], credentials["apiKey"], lifetime_s=lifetime
            )

    def set_fault(self, body: dict[str, Any]) -> None:
        fault = Fault(
            kind=str(body.get("kind", "none")),
            latency=float(body.get("latency", 0.0)),
            retry_after=int(body.get("retry_after", 0)),
            variant=str(body.get("variant", "html")),
        )
        if fault.kind not in ("none", "down", "slow", "429", "garbage"):
            raise ValueError(f"unknown fault kind {fault.kind!r}")
        with self.lock:
            self.faults[body["provider"]] = fault

    def issued(self) -> list[dict[str, Any]]:
        rows = []
        for name, fake in self.fakes.items():
            with fake.lock:
                for item in fake.issued:
                    rows.append(
                        {
                            "provider": name,
                            "subject": item.subject,
                            "value": item.value,
                            "issued_at": item.issued_at,
                            "expires_at": item.expires_at,
                            "grant": item.grant,
                        }
                    )
        return rows

    def requests(self) -> list[tuple[str, float, str, int, str]]:
        with self.lock:
            return list(self.log)

    def secrets(self) -> list[str]:
        found: set[str] = set()
        for fake in self.fakes.values():
            with fake.lock:
                found.update(fake.known_secrets)
                if isinstance(fake, FakeOAuth2Server):
                    found.update(fake.refresh_tokens)
        return sorted(s for s in found if s)


def control_server(providers: Providers) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            answers: dict[str, Callable[[], Any]] = {
                "/issued": providers.issued,
                "/requests": providers.requests,
                "/secrets": providers.secrets,
                "/health": lambda: "ok",
            }
            if self.path not in answers:
                self._send(404, {"error": "not found"})
                return
            self._send(200, answers[self.path]())

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path != "/fault":
                    self._send(404, {"error": "not found"})
                    return
                providers.set_fault(body)
            except (ValueError, KeyError) as error:
                self._send(400, {"error": str(error)})
                return
            self._send(200, {"ok": True})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, required=True, help="the soak's token plan (JSON)")
    args = parser.parse_args()
    plan = json.loads(args.plan.read_text())
    providers = Providers()
    for token in plan["tokens"]:
        providers.register(token)
    for fake in providers.fakes.values():
        fake.__enter__()
    control = control_server(providers)
    threading.Thread(target=control.serve_forever, daemon=True).start()
    host, port = str(control.server_address[0]), control.server_address[1]
    print(
        json.dumps(
            {
                "control": f"http://{host}:{port}",
                "token_urls": {name: fake.token_url for name, fake in providers.fakes.items()},
            }
        ),
        flush=True,
    )
    threading.Event().wait()


if __name__ == "__main__":
    main()
