"""A write the API server keeps refusing: the same token is written again, with backoff,
and the provider is not asked for a new one each time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from tokensync.digest import DigestKey
from tokensync.endpoints import EndpointPolicy, HttpClient
from tokensync.events import EventRecorder
from tokensync.kube import ApiError
from tokensync.providers.base import MintRequest, Proofs, Token
from tokensync.providers.registry import Registry
from tokensync.reconcile import Reconciler
from tokensync.secret_writes import SecretWrites

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


class CountingProvider:
    name: ClassVar[str] = "counting-test"
    mints = 0

    def required_credentials(self, spec: Mapping[str, Any]) -> tuple[str, ...]:
        return ("key",)

    def shareable(self, spec: Mapping[str, Any]) -> bool:
        return False

    def proofs(self, spec: Mapping[str, Any]) -> Proofs:
        return Proofs()

    lifetime = timedelta(hours=1)

    async def mint(self, request: MintRequest) -> Token:
        CountingProvider.mints += 1
        return Token(value=f"v{self.mints}", expires_at=NOW + self.lifetime, minted_at=NOW)


class Secrets:
    """Stands in for the operator's Secret cache in this unit test."""

    async def labelled(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return None

    async def read(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return {"data": {"key": "dmFsdWU="}}

    async def label_credentials(self, secret: Mapping[str, Any]) -> Mapping[str, Any]:
        return secret

    def remember(self, secret: Mapping[str, Any]) -> None:
        return None

    def forget(self, namespace: str, name: str) -> None:
        return None


class RefusingWriter:
    """An API server that refuses Secret writes (a quota, a webhook) until told otherwise."""

    def __init__(self, status: int = 403) -> None:
        self.refuse = True
        self.status = status
        self.secret_writes = 0
        self.status_writes: list[Mapping[str, Any]] = []

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self.secret_writes += 1
        if self.refuse:
            raise ApiError(self.status, "Refused", "exceeded quota")
        return dict(body)

    async def patch_status(self, *args: Any) -> dict[str, Any]:
        self.status_writes.append(args[-1])
        return {"metadata": {"namespace": "ns", "name": "pt"}, **args[-1]}

    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        return None


BODY = {
    "metadata": {"namespace": "ns", "name": "pt", "uid": "u", "generation": 1},
    "spec": {
        "provider": {"counting-test": {}},
        "credentialsRef": {"name": "c"},
        "target": {"name": "t"},
    },
}


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    client = HttpClient(EndpointPolicy())
    yield client
    await client.close()


def reconciler_for(writer: RefusingWriter, http: HttpClient, secrets: Any = None) -> Reconciler:
    CountingProvider.mints = 0
    secrets = secrets or Secrets()
    return Reconciler(
        kube=writer,  # type: ignore[arg-type]
        secrets=secrets,
        secret_writes=SecretWrites(writer, secrets),  # type: ignore[arg-type]
        http=http,
        providers=Registry([CountingProvider()]),
        digest=DigestKey(b"k" * 32),
        events=EventRecorder(writer, clock=lambda: NOW),
        clock=lambda: NOW,
        jitter=lambda: 0.0,
        on_status=lambda body: None,
    )


async def retry_delays(reconciler: Reconciler, rounds: int) -> list[float]:
    delays = []
    for _ in range(rounds):
        due = await reconciler.reconcile(BODY)
        assert due is not None
        delays.append((due - NOW).total_seconds())
    return delays


async def test_refused_writes_back_off_and_never_mint_again(http: HttpClient) -> None:
    writer = RefusingWriter()
    reconciler = reconciler_for(writer, http)
    assert await retry_delays(reconciler, 5) == [2, 4, 8, 16, 32]
    assert CountingProvider.mints == 1
    assert writer.secret_writes == 5
    writer.refuse = False
    await reconciler.reconcile(BODY)
    assert CountingProvider.mints == 1
    assert writer.status_writes[-1]["status"]["conditions"][0]["reason"] == "Minted"


async def test_an_unreachable_api_server_is_asked_again_every_few_seconds(
    http: HttpClient,
) -> None:
    """Connection refused costs nothing: the token lands within 5 s of the server's return."""
    writer = RefusingWriter(status=0)
    reconciler = reconciler_for(writer, http)
    assert await retry_delays(reconciler, 5) == [2, 4, 5, 5, 5]
    assert CountingProvider.mints == 1


async def test_write_retries_come_before_the_held_token_expires(http: HttpClient) -> None:
    writer = RefusingWriter()
    reconciler = reconciler_for(writer, http)
    CountingProvider.lifetime = timedelta(seconds=20)
    try:
        assert await retry_delays(reconciler, 5) == [2, 4, 8, 10, 10]
    finally:
        CountingProvider.lifetime = timedelta(hours=1)


class UnreachableSecrets(Secrets):
    async def read(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        raise ApiError(0, "Unreachable", "ClientConnectorError")


async def test_unreadable_credentials_are_reported_and_retried(http: HttpClient) -> None:
    writer = RefusingWriter()
    reconciler = reconciler_for(writer, http, UnreachableSecrets())
    due = await reconciler.reconcile(BODY)
    assert due is not None and timedelta(0) < due - NOW <= timedelta(seconds=2)
    condition = writer.status_writes[-1]["status"]["conditions"][0]
    assert (condition["status"], condition["reason"]) == ("False", "CredentialsUnreadable")
    assert condition["message"].startswith("credentials Secret c could not be read")
    assert CountingProvider.mints == 0


async def test_write_retries_come_before_the_served_token_expires(http: HttpClient) -> None:
    """The Secret still serves a token that expires in 10 s: retry within half of that."""
    writer = RefusingWriter()
    reconciler = reconciler_for(writer, http)
    served = {**BODY, "status": {"expiresAt": "2026-11-23T10:00:10Z"}}
    delays = []
    for _ in range(4):
        due = await reconciler.reconcile(served)
        assert due is not None
        delays.append((due - NOW).total_seconds())
    assert delays == [2, 4, 5, 5]


async def test_a_refusal_after_an_outage_starts_the_backoff_again(http: HttpClient) -> None:
    """A server just back may refuse for a moment (its authorizer warming up)."""
    writer = RefusingWriter(status=0)
    reconciler = reconciler_for(writer, http)
    assert await retry_delays(reconciler, 6) == [2, 4, 5, 5, 5, 5]
    writer.status = 403
    assert await retry_delays(reconciler, 2) == [2, 4]


async def test_a_template_is_checked_once_per_generation_not_at_every_look(
    http: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the compile cache's size a check compiles every template again: a look that
    only waits must not pay it."""
    import tokensync.reconcile as reconcile_module

    checked: list[object] = []
    real_check = reconcile_module.check_template
    monkeypatch.setattr(
        reconcile_module, "check_template", lambda spec: (checked.append(spec), real_check(spec))
    )
    body = {
        **BODY,
        "spec": {
            **BODY["spec"],
            "target": {"name": "t", "template": {"data": {"auth": "Bearer {{ token }}"}}},
        },
    }
    reconciler = reconciler_for(RefusingWriter(), http)
    for _ in range(3):
        await reconciler.reconcile(body)
    assert len(checked) == 1
    changed = {**body, "metadata": {**body["metadata"], "generation": 2}}
    await reconciler.reconcile(changed)
    assert len(checked) == 2
