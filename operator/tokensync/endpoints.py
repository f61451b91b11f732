"""Outbound HTTP to providers: which endpoints may be called, and how, safely.

Anyone allowed to create a ProviderToken chooses its ``tokenUrl``. Without a check the
operator would fetch any address for them and hand back the answer in a Secret. So an
endpoint that is not the provider's official one is called only when its host is in the
allowlist the cluster admin gave the operator, and plain http only with an explicit flag.
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import json
import socket
import ssl
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import aiohttp.abc
import httpx
from aiohttp.abc import ResolveResult
from aiohttp.client_reqrep import ClientRequest, ConnectionKey
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

from tokensync import connection_errors, metrics
from tokensync.client_certificates import CertificateNotLoaded, CertificatePools, ClientCertificate

_DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_RESPONSE_BYTES = 1024 * 1024


class EndpointRefused(Exception):
    """The configuration forbids this endpoint; no request was sent."""


class UnsendableRequest(Exception):
    """The request cannot be put on the wire (a header value HTTP does not allow)."""


class TransportFailure(Exception):
    """No HTTP answer: connection refused, timeout, TLS failure, oversized body."""


def normalise_hosts(entries: list[str] | tuple[str, ...]) -> frozenset[str]:
    hosts: set[str] = set()
    for entry in entries:
        for part in entry.split(","):
            part = part.strip().lower()
            if part:
                hosts.add(part)
    return frozenset(hosts)


def _blocked(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Private, loopback, link-local (cloud metadata at 169.254.169.254), and the like."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
    )


def _entry_host(entry: str) -> str:
    """The host of an allowlist entry: ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    if entry.startswith("["):
        return entry[1:].split("]", 1)[0]
    if entry.count(":") == 1:
        return entry.rsplit(":", 1)[0]
    return entry


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]").split("%")[0])
    except ValueError:
        return None


@dataclass(frozen=True)
class EndpointPolicy:
    allowed_hosts: frozenset[str] = frozenset()
    allow_insecure_http: bool = False
    allow_private_networks: bool = False

    def address_allowed(self, address: str) -> bool:
        """An address a request may connect to: public, or private but explicitly allowed
        (--allow-private-networks, or the very IP written in --allowed-hosts)."""
        ip = _ip(address)
        if ip is None or not _blocked(ip):
            return ip is not None
        if self.allow_private_networks:
            return True
        return ip in {_ip(_entry_host(entry)) for entry in self.allowed_hosts}

    def refuse_address(self, host: str, address: str) -> None:
        if not self.address_allowed(address):
            raise EndpointRefused(
                f"endpoint host {host} resolves to {address}, a private, loopback or "
                "link-local address: refused without the operator's --allow-private-networks"
            )

    def check(self, url: str, *, official: bool) -> None:
        self.checked(url, official=official)

    def checked(self, url: str, *, official: bool) -> httpx.URL:
        """The URL, parsed once for the check and the request alike (httpx's parser: what
        it refuses, and how it names hosts, is what the allowlist was written against)."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as error:
            raise EndpointRefused(f"endpoint is not a valid URL: {error}") from None
        scheme = parsed.scheme
        if scheme not in _DEFAULT_PORTS or not parsed.host:
            raise EndpointRefused("endpoint must be an absolute http(s) URL")
        if scheme == "http" and not self.allow_insecure_http:
            raise EndpointRefused(
                "plain http endpoints are refused: the operator runs without --allow-insecure-http"
            )
        if official:
            return parsed
        host = parsed.host.lower()
        port = parsed.port or _DEFAULT_PORTS[scheme]
        if host in self.allowed_hosts or f"{host}:{port}" in self.allowed_hosts:
            return parsed
        raise EndpointRefused(
            f"endpoint host {host}:{port} is not in the operator's --allowed-hosts"
        )


class _Headers(Mapping[str, str]):
    """A response's headers as callers have always read them: names in lower case and
    looked up in any case, a repeated header's values joined with ", ", all decoded as
    ASCII, else UTF-8, else ISO-8859-1 (httpx's rules, kept when httpx went)."""

    __slots__ = ("_values",)

    def __init__(self, raw: Sequence[tuple[bytes, bytes]]) -> None:
        encoding = _header_encoding(raw)
        values: dict[str, str] = {}
        for raw_name, raw_value in raw:
            name, value = raw_name.decode(encoding).lower(), raw_value.decode(encoding)
            values[name] = f"{values[name]}, {value}" if name in values else value
        self._values = values

    def __getitem__(self, name: str) -> str:
        try:
            return self._values[name.lower()]
        except KeyError:
            raise KeyError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Headers({self._values!r})"


def _header_encoding(raw: Sequence[tuple[bytes, bytes]]) -> str:
    if all(name.isascii() and value.isascii() for name, value in raw):
        return "ascii"
    try:
        for name, value in raw:
            name.decode("utf-8")
            value.decode("utf-8")
    except UnicodeDecodeError:
        return "iso-8859-1"
    return "utf-8"


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes = field(repr=False)

    def json(self) -> Any:
        return json.loads(self.body)


class GuardedResolver(aiohttp.abc.AbstractResolver):
    """The addresses a connection may really use, checked when it is made.

    HttpClient checks a name before sending; this checks again at connect time, so a DNS
    answer that changes in between (rebinding) cannot reach a refused address.
    """

    def __init__(self, policy: EndpointPolicy) -> None:
        self._policy = policy
        self._resolver = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        for result in results:
            if not self._policy.address_allowed(result["host"]):
                raise connection_errors.RefusedAddress("refused address")
        return results

    async def close(self) -> None:
        await self._resolver.close()


class _Stage:
    """How far one request got: which wait ran out when the whole-answer deadline hit."""

    def __init__(self, failure: str) -> None:
        self.failure = failure

    def reached(self, failure: str) -> None:
        self.failure = failure


# The request in progress in this task: the connector runs in the task that sends, and
# the shared session gives it no per-request handle to fill.
_STAGE: contextvars.ContextVar[_Stage | None] = contextvars.ContextVar("stage", default=None)


class _MarkingConnector(aiohttp.TCPConnector):
    """Marks the request in progress (``_STAGE``) as it waits for a free connection, makes
    one and has one: no TraceConfig, whose signals aiohttp sends for every request."""

    def __init__(self, *, max_connections: int, **options: Any) -> None:
        super().__init__(limit=max_connections, **options)
        self._queued = (
            f"no free connection in time (all {max_connections} provider connections busy)"
        )

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        stage = _STAGE.get()
        if stage is not None:
            stage.reached(connection_errors.READ_TIMED_OUT)
        return connection

    # aiohttp's own (private) wait for a free connection, only when all are taken: the
    # pool-is-full tests in tests/unit/test_endpoints.py fail if it is ever renamed.
    async def _wait_for_available_connection(self, key: ConnectionKey, traces: list[Trace]) -> None:
        stage = _STAGE.get()
        if stage is not None:
            stage.reached(self._queued)
        await super()._wait_for_available_connection(key, traces)
        if stage is not None:
            stage.reached(connection_errors.CONNECT_TIMED_OUT)


_UNSENDABLE = "a header value holds characters HTTP does not allow (non-ASCII or control)"


def _header_safe(value: str) -> bool:
    """Printable ASCII, space and tab only: no line break can forge another header."""
    return all(char == "\t" or " " <= char <= "~" for char in value)


# What every request says besides its own headers (httpx's defaults, as sent before).
_DEFAULT_HEADERS = (
    ("accept", "*/*"),
    ("accept-encoding", "gzip, deflate"),
    ("connection", "keep-alive"),
    ("user-agent", "tokensync"),
)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_LENGTH_HEADERS = frozenset({"content-length", "transfer-encoding"})


def _body(
    data: Mapping[str, str] | None, json_body: Any
) -> tuple[bytes | None, tuple[tuple[str, str], ...]]:
    """The request body and its headers: a form, else JSON (compact, UTF-8), else none."""
    if data:
        body = urlencode(data, doseq=True).encode()
        content_type = "application/x-www-form-urlencoded"
    elif json_body is not None:
        body = json.dumps(
            json_body, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode()
        content_type = "application/json"
    else:
        return None, ()
    return body, (("content-length", str(len(body))), ("content-type", content_type))


def _headers(
    netloc: str,
    method: str,
    given: Mapping[str, str] | None,
    body: bytes | None,
    body_headers: tuple[tuple[str, str], ...],
) -> list[tuple[str, str]]:
    """Every header, in the order and case httpx sent them: the caller's replace defaults."""
    own = [(name.lower(), value) for name, value in given.items()] if given else []
    if not all(name.isascii() for name, _ in own):
        raise UnsendableRequest(_UNSENDABLE)
    names = {name for name, _ in own}
    headers = [] if "host" in names else [("host", netloc)]
    if body is None and method in _BODY_METHODS and not _LENGTH_HEADERS & names:
        headers.append(("content-length", "0"))
    headers += [header for header in _DEFAULT_HEADERS if header[0] not in names]
    headers += own
    headers += [header for header in body_headers if header[0] not in names]
    return headers


class HttpClient:
    """One pooled client for all providers, with the policy applied to every request."""

    def __init__(
        self,
        policy: EndpointPolicy,
        *,
        ca_file: str | None = None,
        timeout_s: float = 10.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_connections: int = 32,
    ) -> None:
        self.policy = policy
        self.timeout_s = timeout_s
        # A host that drops SYNs (a firewall, a dead address) must read as "no connection",
        # not as a slow provider, so the connect bound (TCP and TLS handshakes) has to run
        # out before the whole-answer deadline: half of it. At the default 10 s that is 5 s,
        # enough for Linux's SYN retransmits at 1 s and 3 s, and it leaves the provider at
        # least the other half to answer.
        self.connect_timeout_s = timeout_s / 2
        # Read and pool bounds equal to the deadline: it fires first, and _Stage says
        # which wait it cut short.
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeout_s,
            sock_connect=self.connect_timeout_s,
            sock_read=timeout_s,
        )
        self.max_response_bytes = max_response_bytes
        # A host that stops answering in time must not take every worker (and pooled
        # connection) with it, starving the renewals of every other provider: once one
        # of its requests has timed out, at most a quarter of them may wait on it; more
        # fail at once and are retried on the usual schedule. Its first answer ends this.
        self.max_waiting_on_stalled = max(1, max_connections // 4)
        self._waiting: Counter[str] = Counter()
        self._stalled: set[str] = set()
        self._max_connections = max_connections
        self._context = ssl.create_default_context()
        if ca_file:
            self._context.load_verify_locations(cafile=ca_file)
        # Made on first use: a session belongs to the event loop it is made in.
        self._client: aiohttp.ClientSession | None = None
        # Mutual TLS (RFC 8705): a context and pool per client certificate in use.
        self._certificates = CertificatePools(self._new_client, ca_file)

    def _new_client(self, context: ssl.SSLContext) -> aiohttp.ClientSession:
        # aiohttp straight, no httpx on top: httpx's request building, cookies and
        # transport glue cost as much CPU as the request itself (bench/results/
        # profile-before-19.md); httpcore's own pool cost 5x more (docs/decisions/0004).
        connector = _MarkingConnector(
            max_connections=self._max_connections,
            ssl=context,
            resolver=GuardedResolver(self.policy),
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            # Cookies a provider sets go back to it, as they did through httpx's jar,
            # also when it is called by IP address.
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            trust_env=False,
        )

    async def _client_for(self, certificate: ClientCertificate | None) -> aiohttp.ClientSession:
        if certificate is None:
            if self._client is None:
                self._client = self._new_client(self._context)
            return self._client
        try:
            return await self._certificates.client_for(certificate)
        except CertificateNotLoaded as error:
            raise UnsendableRequest(str(error)) from None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        await self._certificates.close()

    async def _check_addresses(self, url: httpx.URL, deadline: float) -> None:
        """Refuse private, loopback and link-local targets before anything is sent."""
        host = url.host
        if _ip(host) is not None:
            self.policy.refuse_address(host, host)
            return
        port = url.port or _DEFAULT_PORTS.get(url.scheme, 443)
        try:
            # Within the request's deadline: a resolver that never answers would otherwise
            # hold the worker for glibc's own retries (5 s per try and server).
            async with asyncio.timeout_at(deadline):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM
                )
        except TimeoutError:
            metrics.provider_request(None)
            raise TransportFailure(connection_errors.RESOLVED_TOO_LATE) from None
        except OSError as error:
            # The resolver's reason only (a gaierror's fixed text): never the host.
            metrics.provider_request(None)
            raise TransportFailure(connection_errors.describe(error)) from None
        for info in infos:
            self.policy.refuse_address(host, str(info[4][0]))

    async def request(
        self,
        method: str,
        url: str,
        *,
        official: bool,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        json_body: Any = None,
        client_certificate: ClientCertificate | None = None,
    ) -> HttpResponse:
        parsed = self.policy.checked(url, official=official)
        # One deadline for everything from here: resolving, connecting, the whole answer.
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        await self._check_addresses(parsed, deadline)
        if headers and not all(_header_safe(value) for value in headers.values()):
            raise UnsendableRequest(_UNSENDABLE)
        client = await self._client_for(client_certificate)
        try:
            if params is not None:
                # The query is replaced, not added to (httpx 0.28's rule).
                parsed = httpx.URL(parsed, params=params)
            body, body_headers = _body(data, json_body)
            host = parsed.netloc.decode()
            wire = _headers(host, method, headers, body, body_headers)
        except (UnicodeEncodeError, ValueError):
            # Never the error's text: it quotes the offending value, a credential.
            raise UnsendableRequest(_UNSENDABLE) from None
        if host in self._stalled and self._waiting[host] >= self.max_waiting_on_stalled:
            metrics.provider_request(None)
            raise TransportFailure(connection_errors.STILL_WAITING)
        stage = _Stage(connection_errors.CONNECT_TIMED_OUT)
        reset = _STAGE.set(stage)
        whole = asyncio.timeout_at(deadline)
        self._waiting[host] += 1
        try:
            # aiohttp's timeouts bound the connect and each read; this bounds the whole
            # answer, so a provider that trickles its body a byte at a time cannot hold a
            # worker for ever.
            async with whole:
                response = await self._send(client, method, parsed, wire, body, stage)
        except (aiohttp.ClientConnectionError, TimeoutError) as error:
            # Our own deadline: the wait it cut short. Else what aiohttp says happened.
            metrics.provider_request(None)
            if whole.expired():
                self._stalled.add(host)
                raise TransportFailure(stage.failure) from None
            cause = error if isinstance(error, aiohttp.ClientError) else error.__cause__
            raise TransportFailure(connection_errors.describe(cause)) from None
        except TransportFailure:
            metrics.provider_request(None)
            raise
        except Exception as error:
            # aiohttp's other errors (a malformed answer, an oversized header): their text
            # may quote the URL with its query string, which carries Microshare's
            # password. The kind only, never the text.
            metrics.provider_request(None)
            raise TransportFailure(connection_errors.describe(error)) from None
        finally:
            _STAGE.reset(reset)
            self._waiting[host] -= 1
            if not self._waiting[host]:
                del self._waiting[host]
        self._stalled.discard(host)
        metrics.provider_request(response.status)
        return response

    async def _send(
        self,
        client: aiohttp.ClientSession,
        method: str,
        url: httpx.URL,
        headers: list[tuple[str, str]],
        body: bytes | None,
        stage: _Stage,
    ) -> HttpResponse:
        if url.userinfo:
            # Credentials in the URL were never sent: httpx made them an Authorization
            # header, which aiohttp refuses next to the URL's own (a ValueError). Still
            # refused alike, not sent in a header no redaction knows of.
            raise ValueError("credentials in the URL")
        async with client.request(
            method, str(url), headers=headers, data=body, allow_redirects=False
        ) as response:
            stage.reached(connection_errors.BODY_TIMED_OUT)
            received = bytearray()
            while chunk := await response.content.readany():
                received += chunk
                if len(received) > self.max_response_bytes:
                    raise TransportFailure(f"response larger than {self.max_response_bytes} bytes")
            return HttpResponse(response.status, _Headers(response.raw_headers), bytes(received))
