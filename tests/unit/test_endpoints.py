"""Which endpoints the operator will call: the admin's allowlist, never the namespace user's."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tokensync import connection_errors
from tokensync.connection_errors import READ_TIMED_OUT, STILL_WAITING
from tokensync.endpoints import (
    EndpointPolicy,
    EndpointRefused,
    GuardedResolver,
    HttpClient,
    TransportFailure,
    normalise_hosts,
)


def test_official_https_endpoints_need_no_allowlist() -> None:
    EndpointPolicy().check("https://auth.biotz.io/realms/x/token", official=True)


@pytest.mark.parametrize(
    ("allowed", "url"),
    [
        ("idp.example.com", "https://idp.example.com/token"),
        ("IDP.example.com", "https://idp.EXAMPLE.com/token"),
        ("idp.example.com:8443", "https://idp.example.com:8443/token"),
        ("idp.example.com:443", "https://idp.example.com/token"),
        ("a.example, idp.example.com", "https://idp.example.com/token"),
    ],
)
def test_allowlisted_hosts_pass(allowed: str, url: str) -> None:
    EndpointPolicy(allowed_hosts=normalise_hosts([allowed])).check(url, official=False)


@pytest.mark.parametrize(
    ("allowed", "url", "message"),
    [
        ("", "https://idp.example.com/token", "not in the operator's --allowed-hosts"),
        ("idp.example.com:8443", "https://idp.example.com/token", "--allowed-hosts"),
        ("example.com", "https://evil.example.com/token", "--allowed-hosts"),
        ("idp.example.com", "https://idp.example.com.evil.io/token", "--allowed-hosts"),
        ("idp.example.com", "ftp://idp.example.com/token", "absolute http(s) URL"),
        ("idp.example.com", "/relative", "absolute http(s) URL"),
    ],
)
def test_other_hosts_are_refused(allowed: str, url: str, message: str) -> None:
    policy = EndpointPolicy(allowed_hosts=normalise_hosts([allowed]))
    with pytest.raises(EndpointRefused, match=message.replace("(", r"\(").replace(")", r"\)")):
        policy.check(url, official=False)


def test_plain_http_needs_the_insecure_flag_even_when_allowlisted() -> None:
    hosts = normalise_hosts(["127.0.0.1:8080"])
    with pytest.raises(EndpointRefused, match="--allow-insecure-http"):
        EndpointPolicy(allowed_hosts=hosts).check("http://127.0.0.1:8080/t", official=False)
    EndpointPolicy(allowed_hosts=hosts, allow_insecure_http=True).check(
        "http://127.0.0.1:8080/t", official=False
    )


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.8", False),
        ("172.20.1.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("::1", False),
        ("fe80::1", False),
        ("::ffff:169.254.169.254", False),  # the same, written as IPv6
        ("0.0.0.0", False),  # noqa: S104 - an address under test, not a bind
    ],
)
def test_private_loopback_and_link_local_addresses_are_refused(address: str, allowed: bool) -> None:
    assert EndpointPolicy().address_allowed(address) is allowed
    assert EndpointPolicy(allow_private_networks=True).address_allowed(address) is True


def test_an_ip_written_in_the_allowlist_is_permitted_and_only_that_one() -> None:
    policy = EndpointPolicy(allowed_hosts=normalise_hosts(["127.0.0.1:9400", "[::1]:8443"]))
    assert policy.address_allowed("127.0.0.1")
    assert policy.address_allowed("::1")
    assert not policy.address_allowed("127.0.0.2")
    assert not policy.address_allowed("169.254.169.254")
    with pytest.raises(EndpointRefused, match="--allow-private-networks"):
        policy.refuse_address("metadata.internal", "169.254.169.254")


async def test_the_allowlist_is_checked_before_any_name_is_looked_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_lookup(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a name outside the allowlist was looked up")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_lookup)
    http = HttpClient(EndpointPolicy())
    try:
        with pytest.raises(EndpointRefused, match="--allowed-hosts"):
            await http.request("POST", "https://idp.tokensync.invalid/token", official=False)
    finally:
        await http.close()


async def test_a_resolver_that_never_answers_is_bounded_by_the_provider_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No real resolver can be made to hang here without changing the machine's DNS."""

    async def silent(*_args: Any, **_kwargs: Any) -> Any:
        await asyncio.sleep(30)

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", silent)
    policy = EndpointPolicy(allowed_hosts=normalise_hosts(["idp.example.com"]))
    http = HttpClient(policy, timeout_s=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(TransportFailure) as failure:
            await http.request("POST", "https://idp.example.com/token", official=False)
    finally:
        await http.close()
    assert str(failure.value) == "its host name did not resolve in time"
    assert time.monotonic() - started < 2


async def test_a_name_that_turns_private_after_the_check_is_refused_at_connect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding: the check before sending passed, the connect-time answer is loopback."""
    refuser = GuardedResolver(EndpointPolicy())
    with pytest.raises(connection_errors.RefusedAddress) as refused:
        await refuser.resolve("localhost", 80)
    assert "localhost" not in str(refused.value)
    await refuser.close()

    http = HttpClient(EndpointPolicy(allowed_hosts=normalise_hosts(["localhost"])))

    async def passed(*_args: Any) -> None:  # the answer the first check saw was public
        return None

    monkeypatch.setattr(http, "_check_addresses", passed)
    try:
        with pytest.raises(TransportFailure) as failure:
            await http.request("POST", "https://localhost/token", official=False)
    finally:
        await http.close()
    assert str(failure.value) == (
        "its host name now resolves to a refused (private or loopback) address"
    )


async def test_a_stalled_host_holds_at_most_a_quarter_of_the_connections() -> None:
    """One provider slower than the timeout must not take every worker: once a request
    to it timed out, at most a quarter of the pool waits on it, the rest fail at once;
    its first answer in time lifts that."""
    arrived: list[float] = []
    delay = {"s": 5.0}

    async def token(request: web.Request) -> web.Response:
        arrived.append(time.monotonic())
        await asyncio.sleep(delay["s"])
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/token"
    policy = EndpointPolicy(
        allowed_hosts=normalise_hosts([f"127.0.0.1:{port}"]), allow_insecure_http=True
    )
    http = HttpClient(policy, timeout_s=0.5, max_connections=8)

    async def ask() -> str:
        try:
            await http.request("POST", url, official=False)
        except TransportFailure as failure:
            return str(failure)
        return "answered"

    try:
        # Before any timeout, all go out: a busy host is not a stalled one.
        assert await asyncio.gather(*(ask() for _ in range(4))) == [READ_TIMED_OUT] * 4
        assert len(arrived) == 4
        arrived.clear()
        started = time.monotonic()
        outcomes = await asyncio.gather(*(ask() for _ in range(8)))
        assert len(arrived) == 2  # a quarter of 8 connections
        assert outcomes.count(STILL_WAITING) == 6
        assert outcomes.count(READ_TIMED_OUT) == 2
        assert time.monotonic() - started < 1.5
        delay["s"] = 0.0
        assert await ask() == "answered"
        assert await asyncio.gather(*(ask() for _ in range(8))) == ["answered"] * 8
    finally:
        await http.close()
        await runner.cleanup()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def loopback(handler: Handler, **options: Any) -> AsyncIterator[tuple[str, HttpClient]]:
    """A server on loopback, and an HttpClient that may call it over plain http."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    host = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    policy = EndpointPolicy(allowed_hosts=normalise_hosts([host]), allow_insecure_http=True)
    http = HttpClient(policy, **options)
    try:
        yield f"http://{host}", http
    finally:
        await http.close()
        server.close()


async def test_a_request_waiting_for_a_free_connection_says_so() -> None:
    """The operator's own connection limit, told apart from a slow provider: the stage
    the deadline cut short is the wait for a connection, not the answer."""
    held = asyncio.Event()
    stop = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.set()
        await stop.wait()
        writer.close()

    async with loopback(silent, timeout_s=0.5, max_connections=1) as (base, http):
        session = await http._client_for(None)
        # The only connection, held by a request this client's deadline does not bound.
        holder = asyncio.create_task(
            session.get(f"{base}/", timeout=aiohttp.ClientTimeout(total=30))
        )
        try:
            await held.wait()
            with pytest.raises(TransportFailure) as failure:
                await http.request("POST", f"{base}/token", official=False)
        finally:
            holder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await holder
            stop.set()
    assert str(failure.value) == "no free connection in time (all 1 provider connections busy)"


async def test_answer_headers_are_read_in_any_case_a_repeated_one_joined() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nX-Seen: a\r\nX-Seen: b\r\n"
            b"Content-Length: 2\r\n\r\n{}"
        )
        await writer.drain()
        writer.close()

    async with loopback(answer) as (base, http):
        response = await http.request("POST", f"{base}/t", official=False)
    assert (response.status, response.body) == (429, b"{}")
    assert response.headers["retry-after"] == response.headers.get("Retry-After") == "7"
    assert response.headers["X-SEEN"] == "a, b"
    assert "content-length" in response.headers and "missing" not in response.headers
