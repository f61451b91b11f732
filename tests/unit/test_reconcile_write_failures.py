"""A write the API server keeps refusing: the same token is written again, with backoff,
and the provider is not asked for a new one each time."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from tokensync.endpoints import EndpointPolicy, HttpClient
from tokensync.events import EventRecorder
from tokensync.kube import ApiError
from tokensync.providers import base
from tokensync.providers.base import MintRequest, Token
from tokensync.reconcile import Reconciler
from tokensync.secrets import DigestKey

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


class CountingProvider:
    name: ClassVar[str] = "counting-test"
    mints = 0

    def required_credentials(self, spec: Mapping[str, Any]) -> tuple[str, ...]:
        return ("key",)

    def shareable(self, spec: Mapping[str, Any]) -> bool:
        return False

    async def mint(self, request: MintRequest) -> Token:
        CountingProvider.mints += 1
        return Token(value=f"v{self.mints}", expires_at=NOW + timedelta(hours=1), minted_at=NOW)


if "counting-test" not in base.names():
    base.register(CountingProvider())


class Secrets:
    """Stands in for the operator's Secret cache in this unit test."""

    async def labelled(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return None

    async def credentials(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return {"data": {"key": "dmFsdWU="}}

    def remember(self, secret: Mapping[str, Any]) -> None:
        return None

    def forget(self, namespace: str, name: str) -> None:
        return None


class RefusingWriter:
    """An API server that refuses Secret writes (a quota, a webhook) until told otherwise."""

    def __init__(self) -> None:
        self.refuse = True
        self.secret_writes = 0
        self.status_writes: list[Mapping[str, Any]] = []

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self.secret_writes += 1
        if self.refuse:
            raise ApiError(403, "Forbidden", "exceeded quota")
        return dict(body)

    async def patch_status(self, *args: Any) -> dict[str, Any]:
        self.status_writes.append(args[-1])
        return {"metadata": {"namespace": "ns", "name": "pt"}, **args[-1]}

    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        return None


async def test_refused_writes_back_off_and_never_mint_again() -> None:
    writer = RefusingWriter()
    http = HttpClient(EndpointPolicy())
    reconciler = Reconciler(
        kube=writer,  # type: ignore[arg-type]
        secrets=Secrets(),
        http=http,
        digest=DigestKey(b"k" * 32),
        events=EventRecorder(writer),
        clock=lambda: NOW,
        jitter=lambda: 0.0,
    )
    body = {
        "metadata": {"namespace": "ns", "name": "pt", "uid": "u", "generation": 1},
        "spec": {
            "provider": {"counting-test": {}},
            "credentialsRef": {"name": "c"},
            "target": {"name": "t"},
        },
    }
    CountingProvider.mints = 0
    delays = []
    for _ in range(5):
        due = await reconciler.reconcile(body)
        assert due is not None
        delays.append((due - NOW).total_seconds())
    assert CountingProvider.mints == 1
    assert writer.secret_writes == 5
    assert delays == [2, 4, 8, 16, 32]
    writer.refuse = False
    await reconciler.reconcile(body)
    assert CountingProvider.mints == 1
    assert writer.status_writes[-1]["status"]["conditions"][0]["reason"] == "Minted"
    await http.close()
