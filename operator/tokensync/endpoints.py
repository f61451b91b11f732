"""Outbound HTTP to providers: which endpoints may be called, and how, safely.

Anyone allowed to create a ProviderToken chooses its ``tokenUrl``. Without a check the
operator would fetch any address for them and hand back the answer in a Secret. So an
endpoint that is not the provider's official one is called only when its host is in the
allowlist the cluster admin gave the operator, and plain http only with an explicit flag.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport

from tokensync import metrics

_DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_RESPONSE_BYTES = 1024 * 1024


class EndpointRefused(Exception):
    """The configuration forbids this endpoint; no request was sent."""


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


@dataclass(frozen=True)
class EndpointPolicy:
    allowed_hosts: frozenset[str] = frozenset()
    allow_insecure_http: bool = False

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
        self.max_response_bytes = max_response_bytes
        context = ssl.create_default_context()
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client = httpx.AsyncClient(
            # httpx's API, aiohttp's wire: httpcore's own pool cost 5x more CPU per request
            # (docs/decisions/0004-http-clients.md).
            transport=AiohttpTransport(verify=context, limits=limits, trust_env=False),
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            headers={"User-Agent": "tokensync"},
            trust_env=False,
        )

    async def close(self) -> None:
        await self._client.aclose()

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
    ) -> HttpResponse:
        self.policy.check(url, official=official)
        request = self._client.build_request(
            method, url, headers=headers, params=params, data=data, json=json_body
        )
        try:
            response = await self._client.send(request, stream=True)
            try:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body.extend(chunk)
                    if len(body) > self.max_response_bytes:
                        raise TransportFailure(
                            f"response larger than {self.max_response_bytes} bytes"
                        )
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            metrics.provider_request(None)
            raise TransportFailure("timed out") from None
        except httpx.HTTPError as error:
            metrics.provider_request(None)
            # The exception text may quote the URL and its query string: use the type only.
            raise TransportFailure(type(error).__name__) from None
        except TransportFailure:
            metrics.provider_request(None)
            raise
        metrics.provider_request(response.status_code)
        return HttpResponse(status=response.status_code, headers=response.headers, body=bytes(body))
