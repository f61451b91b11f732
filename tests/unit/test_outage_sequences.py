"""The retry policy over whole outages, through the real reconciler.

Each case mints a token, takes its provider down exactly when the renewal is due (the
worst moment), keeps it down for the outage's length, then brings it back. A simulated
clock jumps from one due time to the next, so two-hour outages take milliseconds. What
a user sees is measured from the Secret: how long it held an expired token after the
provider was back, and how many requests the provider got while it was down.

Issue 16's case: a 12 s token, its provider down 7.5 s. Before this policy the attempts
counted up while the token was valid, and the first attempt after expiry came 59 s later.
"""

from __future__ import annotations

import base64
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from tokensync.digest import DigestKey
from tokensync.endpoints import EndpointPolicy, HttpClient
from tokensync.events import EventRecorder
from tokensync.model import parse_time
from tokensync.providers.base import MintRequest, Proofs, ProviderUnavailable, Token
from tokensync.providers.registry import Registry
from tokensync.reconcile import Reconciler
from tokensync.secret_writes import SecretWrites
from tokensync.timing import TRANSIENT_CAP, URGENT_MIN, URGENT_SPREAD, retry_delay

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
S = timedelta(seconds=1)
M = timedelta(minutes=1)
H = timedelta(hours=1)
# Once back, the provider is asked within the urgent interval: every expired token is
# fresh this soon (the simulated mint and writes take no time).
RECOVERY_BOUND = URGENT_MIN + URGENT_SPREAD


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class FlakyProvider:
    """Issues tokens of ``lifetime``; answers 503 during ``[down_from, down_until)``."""

    clock: Clock
    lifetime: timedelta
    name: ClassVar[str] = "flaky-test"
    down_from: datetime | None = None
    down_until: datetime | None = None
    asked: list[datetime] = field(default_factory=list)
    issued: int = 0

    def required_credentials(self, spec: Mapping[str, Any]) -> tuple[str, ...]:
        return ("key",)

    def shareable(self, spec: Mapping[str, Any]) -> bool:
        return False

    def proofs(self, spec: Mapping[str, Any]) -> Proofs:
        return Proofs()

    def down(self, at: datetime) -> bool:
        return self.down_from is not None and self.down_from <= at < (self.down_until or at)

    async def mint(self, request: MintRequest) -> Token:
        now = self.clock()
        self.asked.append(now)
        if self.down(now):
            raise ProviderUnavailable("the provider answered 503")
        self.issued += 1
        return Token(value=f"token-{self.issued}", expires_at=now + self.lifetime, minted_at=now)


class Cluster:
    """The ProviderToken, its Secrets and the API calls the reconciler makes, in memory;
    every write of the target Secret is recorded with the simulated time."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.body: dict[str, Any] = {
            "metadata": {"namespace": "ns", "name": "pt", "uid": "u", "generation": 1},
            "spec": {
                "provider": {"flaky-test": {}},
                "credentialsRef": {"name": "creds"},
                "target": {"name": "target"},
            },
        }
        self.secrets: dict[str, dict[str, Any]] = {}
        self.written: list[tuple[datetime, datetime | None]] = []  # (when, token expiry)
        self.status_writes = 0

    # What the Secret cache and SecretWrites ask for
    async def labelled(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.secrets.get(name)

    async def read(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return {"metadata": {"name": name}, "data": {"key": base64.b64encode(b"k").decode()}}

    async def label_credentials(self, secret: Mapping[str, Any]) -> Mapping[str, Any]:
        return secret

    def remember(self, secret: Mapping[str, Any]) -> None:
        return None

    def forget(self, namespace: str, name: str) -> None:
        return None

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.secrets.get(name)

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._store(dict(body))

    async def patch_secret(
        self, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        existing = self.secrets[name]
        metadata = {**existing["metadata"], **patch.get("metadata", {})}
        return self._store({**existing, **patch, "metadata": metadata})

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        self.secrets[name] = body
        if name == "target":
            expiry = (body["metadata"].get("annotations") or {}).get("tokensync.dev/expires-at")
            self.written.append((self.clock(), parse_time(expiry)))
        return body

    # Status and Events
    async def patch_status(self, *args: Any) -> dict[str, Any]:
        self.status_writes += 1
        fields = args[-1]["status"]
        status = {**(self.body.get("status") or {}), **fields}
        self.body = {**self.body, "status": {k: v for k, v in status.items() if v is not None}}
        return self.body

    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        return None


@dataclass(frozen=True)
class Outcome:
    # How long, after the provider was back, the Secret held an expired token.
    expired_after_return: timedelta
    # From the provider's return to a fresh token in the Secret.
    recovery: timedelta
    requests_during_outage: int
    expired_during_outage: bool
    status_writes_during_outage: int


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    client = HttpClient(EndpointPolicy())
    yield client
    await client.close()


async def outage(
    http: HttpClient,
    lifetime: timedelta,
    length: timedelta,
    seed: int = 0,
    back_before_expiry: timedelta | None = None,
) -> Outcome:
    """One token through one outage that begins when its first renewal is due and
    lasts ``length``, or ends ``back_before_expiry`` before the token expires."""
    clock = Clock()
    cluster = Cluster(clock)
    provider = FlakyProvider(clock, lifetime)
    draw = random.Random(seed)
    reconciler = Reconciler(
        kube=cluster,  # type: ignore[arg-type]
        secrets=cluster,
        secret_writes=SecretWrites(cluster, cluster),  # type: ignore[arg-type]
        http=http,
        providers=Registry([provider]),  # type: ignore[list-item]
        digest=DigestKey(b"k" * 32),
        events=EventRecorder(cluster, clock=clock),  # type: ignore[arg-type]
        clock=clock,
        jitter=draw.random,
        on_status=lambda body: None,
    )
    due = await reconciler.reconcile(cluster.body)
    assert due is not None and len(cluster.written) == 1
    provider.down_from, provider.down_until = due, due + length
    expiry = cluster.written[0][1]
    if back_before_expiry is not None and expiry is not None:
        provider.down_until = expiry - back_before_expiry
    before = status_writes = cluster.status_writes
    while True:
        clock.now = due
        due = await reconciler.reconcile(cluster.body)
        assert due is not None and due > clock.now, "no retry scheduled"
        if clock.now >= provider.down_until and len(cluster.written) > 1:
            break
        if clock.now < provider.down_until:
            status_writes = cluster.status_writes
    fresh_at = cluster.written[-1][0]
    old_expiry = cluster.written[0][1]
    assert old_expiry is not None
    returned = provider.down_until
    return Outcome(
        expired_after_return=max(fresh_at - max(old_expiry, returned), timedelta(0)),
        recovery=fresh_at - returned,
        requests_during_outage=sum(provider.down(at) for at in provider.asked),
        expired_during_outage=old_expiry < returned,
        status_writes_during_outage=status_writes - before,
    )


def request_bound(lifetime: timedelta, length: timedelta) -> int:
    """What the policy promises a provider that is down for ``length``: at most one
    request per ``URGENT_MIN`` once the token is within a minute of expiry, and before
    that a backoff growing by a quarter or more per attempt up to ``TRANSIENT_CAP``
    (at least half of it per attempt), halving towards expiry."""
    urgent_from = lifetime / 3 - M  # the outage begins with a third of the life left
    urgent = max(length - max(urgent_from, timedelta(0)), timedelta(0))
    backing_off = length - urgent
    return int(urgent / URGENT_MIN) + 30 + int(backing_off / (TRANSIENT_CAP / 2)) + 16


LIFETIMES = [10 * S, 12 * S, 2 * M, 15 * M, H, 48 * H]
LENGTHS = [S, 7.5 * S, 30 * S, 5 * M, 30 * M, 2 * H]


@pytest.mark.parametrize("lifetime", LIFETIMES, ids=str)
@pytest.mark.parametrize("length", LENGTHS, ids=str)
async def test_a_whole_outage(http: HttpClient, lifetime: timedelta, length: timedelta) -> None:
    for seed in range(3):
        seen = await outage(http, lifetime, length, seed)
        # The workload never waits for the backoff once the provider is back.
        assert seen.expired_after_return <= RECOVERY_BOUND, seen
        if seen.expired_during_outage:
            assert seen.recovery <= RECOVERY_BOUND, seen
        else:
            # Still valid at the provider's return: fresh before it expires (or within
            # the urgent interval of it), never later than one backoff.
            assert seen.recovery <= TRANSIENT_CAP, seen
        assert seen.requests_during_outage <= request_bound(lifetime, length), seen
        # Retried every few seconds, but the status is not rewritten every few seconds.
        assert seen.status_writes_during_outage <= 20 + length / TRANSIENT_CAP * 2, seen


async def test_issue_16_a_12_second_token_and_a_7_5_second_outage(http: HttpClient) -> None:
    seen = await outage(http, 12 * S, 7.5 * S)
    assert seen.expired_during_outage
    assert seen.recovery <= RECOVERY_BOUND  # was 59 s


async def test_a_long_outage_is_not_hammered_while_the_token_is_still_valid(
    http: HttpClient,
) -> None:
    # A 48 h token (16 h left when its renewal is due) and a 2 h outage: about one
    # request per five minutes, not one every few seconds.
    seen = await outage(http, 48 * H, 2 * H)
    assert not seen.expired_during_outage
    assert seen.requests_during_outage <= 60


def test_the_herd_meets_a_returning_provider_spread_over_seconds() -> None:
    """5,000 tokens of one provider, all expired during a 10-minute outage: when it comes
    back, no second brings more than a third of them, and every one is fresh within the
    urgent interval (the simulated mints take no time)."""
    draw = random.Random(16)
    down, back = 0.0, 600.0
    arrivals: list[float] = []
    for _ in range(5000):
        at = down + draw.random() * 60  # each noticed the outage at its own renewal
        while at < back:
            at += retry_delay(
                timedelta(seconds=at - down),
                serving_for=0 * S,
                permanent=False,
                jitter=draw.random(),
            ).total_seconds()
        arrivals.append(at - back)
    per_second = [sum(1 for a in arrivals if s <= a < s + 1) for s in range(7)]
    assert max(arrivals) <= RECOVERY_BOUND.total_seconds()
    assert max(per_second) <= 5000 / 3, per_second
    assert min(per_second[:5]) >= 5000 / 10, per_second


@pytest.mark.parametrize("seed", range(8))
async def test_a_provider_back_just_before_expiry_is_in_time(http: HttpClient, seed: int) -> None:
    # The provider is back 1.5 s before the token expires: the attempt aimed just
    # before expiry replaces it in time (the 2-6 s interval alone would mostly miss).
    seen = await outage(http, 2 * M, 0 * S, seed, back_before_expiry=1.5 * S)
    assert not seen.expired_during_outage
    assert seen.expired_after_return == timedelta(0), seen
