"""Why a token endpoint gave no answer, told apart, against real sockets on loopback.

The aiohttp transport reports every connection failure as a connect timeout; an on-call
reader sent to look for a slow provider when the port is closed or the certificate is
not trusted looks in the wrong place (issue 14, item 2). Each message is transient
(ProviderUnavailable), names no URL and carries nothing that was sent.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from providers.conftest import HttpFactory, mint_request
from tokensync.devcluster import pki
from tokensync.providers import base

OAUTH2 = base.get("oauth2")
SECRET = "s3cret-value"


async def mint(http_for: HttpFactory, url: str, host: str, **options: float | str) -> str:
    with pytest.raises(base.ProviderUnavailable) as failure:
        await OAUTH2.mint(
            mint_request(
                http_for(host, **options),
                {"tokenUrl": url},
                {"clientId": "app", "clientSecret": SECRET},
            )
        )
    message = str(failure.value)
    assert url not in message and SECRET not in message and "127.0.0.1" not in message
    return message


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


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


async def test_a_server_that_never_answers_timed_out(http_for: HttpFactory) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await asyncio.sleep(30)  # holds the connection; the client gives up first

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        message = await mint(
            http_for, f"http://127.0.0.1:{port}/token", f"127.0.0.1:{port}", timeout_s=0.5
        )
    finally:
        server.close()
    assert message.startswith("token endpoint unreachable: no answer in time")


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
