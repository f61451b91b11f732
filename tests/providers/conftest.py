from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from tokensync.endpoints import EndpointPolicy, HttpClient, normalise_hosts
from tokensync.providers.base import MintRequest

HttpFactory = Callable[..., HttpClient]


@pytest.fixture
async def http_for() -> AsyncIterator[HttpFactory]:
    """HttpClients that may reach the given fakes (and nothing else) over plain http."""
    clients: list[HttpClient] = []

    def make(*hosts: str, **options: Any) -> HttpClient:
        client = HttpClient(
            EndpointPolicy(allowed_hosts=normalise_hosts(list(hosts)), allow_insecure_http=True),
            **options,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def mint_request(
    http: HttpClient,
    spec: dict[str, Any],
    credentials: dict[str, str],
    state: dict[str, str] | None = None,
    now: datetime | None = None,
    **extra: Any,
) -> MintRequest:
    return MintRequest(
        spec=spec,
        credentials=credentials,
        http=http,
        now=now or datetime.now(UTC),
        state=state or {},
        **extra,
    )
