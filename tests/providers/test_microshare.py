"""Microshare at the HTTP level: query-string password grant, pipe tokens, 48 h default."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from fakes.microshare import FakeMicroshare
from providers.conftest import HttpFactory, mint_request
from tokensync.providers import base
from tokensync.providers.microshare import official_token_url
from tokensync.providers.registry import PROVIDERS

MICROSHARE = PROVIDERS.get("microshare")
CREDS = {"username": "ops@example.com", "password": "pa55-word!&=", "apiKey": "APPKEY123"}


@pytest.fixture
def microshare() -> Iterator[FakeMicroshare]:
    with FakeMicroshare() as server:
        server.add_account("ops@example.com", "pa55-word!&=", "APPKEY123")
        yield server


def test_official_hosts_per_environment() -> None:
    assert official_token_url("production") == "https://auth.microshare.io/oauth2/token"
    assert official_token_url("development") == "https://dauth.microshare.io/oauth2/token"


async def test_password_grant_in_the_query_string_with_an_empty_body(
    microshare: FakeMicroshare, http_for: HttpFactory
) -> None:
    token = await MICROSHARE.mint(
        mint_request(http_for(microshare.host), {"tokenUrl": microshare.token_url}, CREDS)
    )
    wire = microshare.requests[-1]
    assert (wire.method, wire.path, wire.body) == ("POST", "/oauth2/token", b"")
    assert wire.query == {
        "username": "ops@example.com",
        "password": "pa55-word!&=",  # special characters survive the encoding
        "client_id": "APPKEY123",
        "grant_type": "password",
        "scope": "ALL:ALL",
    }
    assert token.value == microshare.issued[-1].value and len(token.value) == 64
    # No expires_in and an opaque token: the documented 48 hours.
    assert token.expires_at is not None
    assert abs((token.expires_at - token.minted_at) - timedelta(hours=48)) < timedelta(seconds=1)


async def test_expires_in_wins_when_sent(microshare: FakeMicroshare, http_for: HttpFactory) -> None:
    microshare.send_expires_in = 600
    token = await MICROSHARE.mint(
        mint_request(http_for(microshare.host), {"tokenUrl": microshare.token_url}, CREDS)
    )
    assert token.expires_at is not None
    assert token.expires_at - token.minted_at == timedelta(seconds=600)


async def test_pipe_token_never_expires(microshare: FakeMicroshare, http_for: HttpFactory) -> None:
    spec = {"tokenUrl": microshare.token_url, "tokenKind": "pipe", "scope": "SHARE:WRITE"}
    token = await MICROSHARE.mint(mint_request(http_for(microshare.host), spec, CREDS))
    assert microshare.requests[-1].query["grant_type"] == "pipe"
    assert microshare.requests[-1].query["scope"] == "SHARE:WRITE"
    assert token.expires_at is None


async def test_bad_credentials(microshare: FakeMicroshare, http_for: HttpFactory) -> None:
    with pytest.raises(base.InvalidCredentials) as failure:
        await MICROSHARE.mint(
            mint_request(
                http_for(microshare.host),
                {"tokenUrl": microshare.token_url},
                {**CREDS, "password": "wrong-password"},
            )
        )
    assert "wrong-password" not in failure.value.message


async def test_unreachable_endpoint_message_carries_no_url(http_for: HttpFactory) -> None:
    spec = {"tokenUrl": "http://127.0.0.1:9/oauth2/token"}
    with pytest.raises(base.ProviderUnavailable) as failure:
        await MICROSHARE.mint(mint_request(http_for("127.0.0.1:9"), spec, CREDS))
    assert "pa55" not in failure.value.message and "127.0.0.1" not in failure.value.message


async def test_a_malformed_answer_never_quotes_the_url(http_for: HttpFactory) -> None:
    """aiohttp's own errors quote the request URL, which carries the password here."""
    import asyncio

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Huge: " + b"a" * 20000 + b"\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(base.ProviderUnavailable) as failure:
            await MICROSHARE.mint(
                mint_request(
                    http_for(f"127.0.0.1:{port}"),
                    {"tokenUrl": f"http://127.0.0.1:{port}/oauth2/token"},
                    CREDS,
                )
            )
    finally:
        server.close()
    text = f"{failure.value} {failure.value.__cause__} {failure.value.__context__}"
    assert "pa55" not in text and "APPKEY123" not in text and "password" not in text
