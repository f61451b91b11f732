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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
import aiohttp.abc
import httpx
from aiohttp.abc import ResolveResult
from httpx_aiohttp import AiohttpTransport

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
            return
        host = parsed.host.lower()
        port = parsed.port or _DEFAULT_PORTS[scheme]
        if host in self.allowed_hosts or f"{host}:{port}" in self.allowed_hosts:
            return
        raise EndpointRefused(
            f"endpoint host {host}:{port} is not in the operator's --allowed-hosts"
        )


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


# The request in progress in this task: aiohttp's trace callbacks run in the task that
# sends, and the shared session gives them no per-request handle httpx could fill.
_STAGE: contextvars.ContextVar[_Stage | None] = contextvars.ContextVar("stage", default=None)


def _progress_tracing(max_connections: int) -> aiohttp.TraceConfig:
    queued = f"no free connection in time (all {max_connections} provider connections busy)"

    def on(
        failure: str,
    ) -> Callable[[aiohttp.ClientSession, SimpleNamespace, Any], Awaitable[None]]:
        async def mark(
            _session: aiohttp.ClientSession, _context: SimpleNamespace, _params: Any
        ) -> None:
            stage = _STAGE.get()
            if stage is not None:
                stage.reached(failure)

        return mark

    trace = aiohttp.TraceConfig()
    trace.on_connection_queued_start.append(on(queued))
    trace.on_connection_queued_end.append(on(connection_errors.CONNECT_TIMED_OUT))
    trace.on_connection_create_end.append(on(connection_errors.READ_TIMED_OUT))
    trace.on_connection_reuseconn.append(on(connection_errors.READ_TIMED_OUT))
    return trace


_UNSENDABLE = "a header value holds characters HTTP does not allow (non-ASCII or control)"


def _header_safe(value: str) -> bool:
    """Printable ASCII, space and tab only: no line break can forge another header."""
    return all(char == "\t" or " " <= char <= "~" for char in value)


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
        self.max_response_bytes = max_response_bytes
        # A host that stops answering in time must not take every worker (and pooled
        # connection) with it, starving the renewals of every other provider: once one
        # of its requests has timed out, at most a quarter of them may wait on it; more
        # fail at once and are retried on the usual schedule. Its first answer ends this.
        self.max_waiting_on_stalled = max(1, max_connections // 4)
        self._waiting: Counter[str] = Counter()
        self._stalled: set[str] = set()
        self._max_connections = max_connections
        context = ssl.create_default_context()
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
        self._client = self._new_client(context)
        # Mutual TLS (RFC 8705): a context and pool per client certificate in use.
        self._certificates = CertificatePools(self._new_client, ca_file)

    def _new_client(self, context: ssl.SSLContext) -> httpx.AsyncClient:
        policy, max_connections = self.policy, self._max_connections

        def session() -> aiohttp.ClientSession:
            connector = aiohttp.TCPConnector(
                ssl=context, limit=max_connections, resolver=GuardedResolver(policy)
            )
            return aiohttp.ClientSession(
                connector=connector, trace_configs=[_progress_tracing(max_connections)]
            )

        return httpx.AsyncClient(
            # httpx's API, aiohttp's wire: httpcore's own pool cost 5x more CPU per request
            # (docs/decisions/0004-scale.md).
            transport=AiohttpTransport(verify=context, trust_env=False, client=session),
            # Read and pool bounds equal to the deadline: it fires first, and _Stage says
            # which wait it cut short.
            timeout=httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s),
            follow_redirects=False,
            headers={"User-Agent": "tokensync"},
            trust_env=False,
        )

    async def _client_for(self, certificate: ClientCertificate | None) -> httpx.AsyncClient:
        if certificate is None:
            return self._client
        try:
            return await self._certificates.client_for(certificate)
        except CertificateNotLoaded as error:
            raise UnsendableRequest(str(error)) from None

    async def close(self) -> None:
        await self._client.aclose()
        await self._certificates.close()

    async def _check_addresses(self, url: str, deadline: float) -> None:
        """Refuse private, loopback and link-local targets before anything is sent."""
        parsed = httpx.URL(url)
        host = parsed.host
        if _ip(host) is not None:
            self.policy.refuse_address(host, host)
            return
        port = parsed.port or _DEFAULT_PORTS.get(parsed.scheme, 443)
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
        self.policy.check(url, official=official)
        # One deadline for everything from here: resolving, connecting, the whole answer.
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        await self._check_addresses(url, deadline)
        if headers and not all(_header_safe(value) for value in headers.values()):
            raise UnsendableRequest(_UNSENDABLE)
        client = await self._client_for(client_certificate)
        try:
            request = client.build_request(
                method, url, headers=headers, params=params, data=data, json=json_body
            )
        except (UnicodeEncodeError, ValueError):
            # Never the error's text: it quotes the offending value, a credential.
            raise UnsendableRequest(_UNSENDABLE) from None
        host = request.url.netloc.decode()
        if host in self._stalled and self._waiting[host] >= self.max_waiting_on_stalled:
            metrics.provider_request(None)
            raise TransportFailure(connection_errors.STILL_WAITING)
        stage = _Stage(connection_errors.CONNECT_TIMED_OUT)
        reset = _STAGE.set(stage)
        whole = asyncio.timeout_at(deadline)
        self._waiting[host] += 1
        try:
            # httpx's timeout bounds the connect and each read; this bounds the whole
            # answer, so a provider that trickles its body a byte at a time cannot hold a
            # worker for ever.
            async with whole:
                response, body = await self._send(client, request, stage)
        except (httpx.TimeoutException, TimeoutError) as error:
            # The aiohttp transport reports every connection failure as a connect timeout;
            # what really happened is its cause. Our own deadline: the wait it cut short.
            metrics.provider_request(None)
            if whole.expired():
                self._stalled.add(host)
                raise TransportFailure(stage.failure) from None
            raise TransportFailure(connection_errors.describe(error.__cause__)) from None
        except TransportFailure:
            metrics.provider_request(None)
            raise
        except Exception as error:
            # httpx errors, and aiohttp errors the transport does not map (a malformed
            # answer, an oversized header): their text may quote the URL with its query
            # string, which carries Microshare's password. The kind only, never the text.
            metrics.provider_request(None)
            cause = (error.__cause__ or error) if isinstance(error, httpx.TransportError) else error
            raise TransportFailure(connection_errors.describe(cause)) from None
        finally:
            _STAGE.reset(reset)
            self._waiting[host] -= 1
            if not self._waiting[host]:
                del self._waiting[host]
        self._stalled.discard(host)
        metrics.provider_request(response.status_code)
        return HttpResponse(status=response.status_code, headers=response.headers, body=body)

    async def _send(
        self, client: httpx.AsyncClient, request: httpx.Request, stage: _Stage
    ) -> tuple[httpx.Response, bytes]:
        response = await client.send(request, stream=True)
        stage.reached(connection_errors.BODY_TIMED_OUT)
        try:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > self.max_response_bytes:
                    raise TransportFailure(f"response larger than {self.max_response_bytes} bytes")
        finally:
            await response.aclose()
        return response, bytes(body)
