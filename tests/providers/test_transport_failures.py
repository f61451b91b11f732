"""Why a token endpoint gave no answer, told apart, against real sockets on loopback.

The aiohttp transport reports every connection failure as a connect timeout; an on-call
reader sent to look for a slow provider when the port is closed or the certificate is
not trusted looks in the wrong place (issue 14, item 2). Each message is transient
(ProviderUnavailable), names no URL, host or address and carries nothing that was sent.

| message (after "token endpoint unreachable: ")                   | test                 |
|------------------------------------------------------------------|----------------------|
| its host name does not resolve (<resolver's reason>)             | ..._does_not_resolve |
| connection failed (Connection refused)                           | ..._closed_port_...  |
| its TLS certificate is not trusted (check the CA bundle)         | ..._untrusted_...    |
| no connection in time (connect timed out)                        | ..._handshake_...    |
| no answer in time (read timed out)                               | ..._never_answers_.. |
| no complete answer in time (timed out reading the body)          | ..._trickles_...     |
| no free connection in time (all N provider connections busy)     | ..._pool_is_full_... |
| the server closed the connection without answering               | ..._hangs_up_...     |
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from providers.conftest import HttpFactory, mint_request
from tokensync.providers import base
from tokensync.providers.registry import PROVIDERS
from tokensync_dev.devcluster import pki

OAUTH2 = PROVIDERS.get("oauth2")
SECRET = "s3cret-value"


async def mint(http_for: HttpFactory, url: str, host: str, **options: float | str) -> str:
    # ProviderUnavailable is the transient failure: the mint is retried with backoff.
    with pytest.raises(base.ProviderUnavailable) as failure:
        await OAUTH2.mint(
            mint_request(
                http_for(host, **options),
                {"tokenUrl": url},
                {"clientId": "app", "clientSecret": SECRET},
            )
        )
    message = str(failure.value)
    assert not failure.value.permanent
    named = host.rsplit(":", 1)[0]
    assert url not in message and SECRET not in message and named not in message
    return message


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_name_that_does_not_resolve_says_so(http_for: HttpFactory) -> None:
    """A real lookup of a name under .invalid (RFC 6761: never resolves, and resolvers
    answer so at once, without asking the internet)."""
    host = "token-endpoint.tokensync.invalid"
    try:
        socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        reason = error.strerror
    else:
        pytest.fail(f"{host} resolved here; .invalid names must not")
    started = time.monotonic()
    message = await mint(http_for, f"http://{host}/token?password={SECRET}", host)
    assert message == f"token endpoint unreachable: its host name does not resolve ({reason})"
    assert time.monotonic() - started < 5


async def test_a_closed_port_is_a_refused_connection(http_for: HttpFactory) -> None:
    port = closed_port()
    message = await mint(http_for, f"http://127.0.0.1:{port}/token", f"127.0.0.1:{port}")
    assert message == "token endpoint unreachable: connection failed (Connection refused)"


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    """An HTTPS server whose certificate a CA of the test's own signed."""
    certs = pki.generate(tmp_path / "pki")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.serving_cert, certs.serving_key)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        body = b'{"access_token": "t", "token_type": "Bearer", "expires_in": 300}'
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1], certs.ca_cert
    finally:
        server.close()


async def test_an_untrusted_certificate_says_so(
    http_for: HttpFactory, tls_server: tuple[int, Path]
) -> None:
    port, ca = tls_server
    url = f"https://127.0.0.1:{port}/token"
    message = await mint(http_for, url, f"127.0.0.1:{port}")
    assert message == (
        "token endpoint unreachable: its TLS certificate is not trusted (check the CA bundle)"
    )
    # The same server with its CA given (--ca-file) answers: the message was about trust.
    token = await OAUTH2.mint(
        mint_request(
            http_for(f"127.0.0.1:{port}", ca_file=str(ca)),
            {"tokenUrl": url},
            {"clientId": "app", "clientSecret": SECRET},
        )
    )
    assert token.value == "t"


@pytest.fixture
def unanswered_syn() -> Iterator[int]:
    """A port whose handshake never completes: a listener with backlog 0 (Linux queues
    one connection) whose one queued connection is never accepted; the kernel drops
    every further SYN, so the next connect hangs as at a firewall that drops packets."""
    with socket.socket() as listener, socket.socket() as queued:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        queued.connect(("127.0.0.1", port))
        with socket.socket() as probe:
            probe.settimeout(0.3)
            with pytest.raises(TimeoutError):  # the premise, checked here
                probe.connect(("127.0.0.1", port))
        yield port


async def test_a_handshake_that_never_completes_is_a_connect_timeout(
    http_for: HttpFactory, unanswered_syn: int
) -> None:
    port = unanswered_syn
    http_timeout_s = 2.0
    started = time.monotonic()
    message = await mint(
        http_for,
        f"http://127.0.0.1:{port}/token",
        f"127.0.0.1:{port}",
        timeout_s=http_timeout_s,
    )
    assert message == "token endpoint unreachable: no connection in time (connect timed out)"
    # The connect bound (half the provider timeout) ran out, not the whole-answer deadline.
    assert time.monotonic() - started < http_timeout_s * 0.9


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, asyncio.Event], Awaitable[None]]


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[int]:
    """A loopback server whose handlers are told to stop, and awaited, when the test is
    done: a handler still running when the loop closes leaks its socket."""
    stop = asyncio.Event()
    handlers: list[asyncio.Task[None]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer, stop)
        except ConnectionError:
            pass  # the client gave up: what these servers are for
        finally:
            writer.close()

    def track(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.create_task(handle(reader, writer)))

    server = await asyncio.start_server(track, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        stop.set()
        await asyncio.gather(*handlers)


async def test_a_server_that_never_answers_timed_out(http_for: HttpFactory) -> None:
    async def silent(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stop: asyncio.Event
    ) -> None:
        await reader.read(65536)
        await stop.wait()  # holds the connection; the client gives up first

    async with serving(silent) as port:
        message = await mint(
            http_for, f"http://127.0.0.1:{port}/token", f"127.0.0.1:{port}", timeout_s=0.5
        )
    assert message == "token endpoint unreachable: no answer in time (read timed out)"


async def test_a_body_that_trickles_past_the_deadline_timed_out(http_for: HttpFactory) -> None:
    async def trickle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stop: asyncio.Event
    ) -> None:
        await reader.read(65536)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        while not stop.is_set():  # a byte well within the read bound, never the whole
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.05)

    async with serving(trickle) as port:
        message = await mint(
            http_for, f"http://127.0.0.1:{port}/token", f"127.0.0.1:{port}", timeout_s=0.5
        )
    assert message == (
        "token endpoint unreachable: no complete answer in time (timed out reading the body)"
    )


async def test_a_request_waiting_while_the_pool_is_full_says_so(http_for: HttpFactory) -> None:
    """The operator's own connection limit, not the provider: a different fix (raise
    the limit, find the slow provider holding the connections)."""
    held = asyncio.Event()

    async def silent(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stop: asyncio.Event
    ) -> None:
        held.set()
        await stop.wait()

    async with serving(silent) as port:
        host = f"127.0.0.1:{port}"
        http = http_for(host, timeout_s=0.5, max_connections=1)
        # The only connection, held by a request this client's deadline does not bound.
        session = await http._client_for(None)
        holder = asyncio.create_task(
            session.get(f"http://{host}/", timeout=aiohttp.ClientTimeout(total=30))
        )
        await held.wait()
        message = await mint(lambda *_: http, f"http://{host}/token", host)
        holder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await holder
    assert message == (
        "token endpoint unreachable: no free connection in time (all 1 provider connections busy)"
    )


async def test_a_server_that_hangs_up_says_so(http_for: HttpFactory) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        message = await mint(http_for, f"http://127.0.0.1:{port}/token", f"127.0.0.1:{port}")
    finally:
        server.close()
    assert message == (
        "token endpoint unreachable: the server closed the connection without answering"
    )
