"""Revocation on delete (issue 18): the finalizer is on a ProviderToken exactly while its
spec asks for revocation; at deletion its tokens are revoked once, a passing failure is
retried for at most 30 seconds from the deletion, and the finalizer always goes."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tokensync import names
from tokensync.decision import CredentialsNotFound
from tokensync.digest import DigestKey
from tokensync.endpoints import EndpointPolicy, HttpClient
from tokensync.events import EventRecorder
from tokensync.kube import ApiError
from tokensync.mint_inputs import MintInputs
from tokensync.model import ProviderTokenView, SpecInvalid, parse_provider_token
from tokensync.providers.base import (
    InvalidCredentials,
    MintError,
    MintRequest,
    Proofs,
    Provider,
    ProviderUnavailable,
    Revocable,
)
from tokensync.providers.oauth2 import SPEC
from tokensync.providers.oauth2.spec import proofs
from tokensync.providers.registry import PROVIDERS
from tokensync.revocation import (
    FINALIZER,
    GIVE_UP_AFTER,
    GRANT,
    FinalizerNotWritten,
    RevocationNotPermitted,
    Revocations,
)
from tokensync.secret_bodies import state_question, state_secret, state_secret_name

KEY = DigestKey(b"k" * 32)
REPO = Path(__file__).resolve().parents[2]
DELETED_AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
OTHER = "example.com/other-controller"
# Every value that must never reach an Event or a log line.
REFRESH = "rt-secret-refresh-value"
ACCESS = "at-secret-access-value"
CLIENT_SECRET = "client-secret-value"
SA_TOKEN = "sa-token-secret-value"
PASSWORD = "user-password-value"
SECRETS = (REFRESH, ACCESS, CLIENT_SECRET, SA_TOKEN, PASSWORD)
CREDS = {
    "clientId": "app",
    "clientSecret": CLIENT_SECRET,
    "username": "device@example",
    "password": PASSWORD,
}
REVOCATION_URL = "https://idp.example/oauth/revoke"
OAUTH2 = {
    "tokenUrl": "https://idp.example/oauth/token",
    "revocationUrl": REVOCATION_URL,
    "grantType": "password",
    "revokeOnDelete": True,
}


# --- fakes --------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Kube:
    """The API server's finalizer writes (answering with ``answers`` first, in order) and
    the TokenRequest API."""

    answers: list[int] = field(default_factory=list)
    patches: list[tuple[str, str, list[str], str]] = field(default_factory=list)
    token_requests: list[tuple[str, str, str, int]] = field(default_factory=list)
    token_status: int | None = None

    async def patch_finalizers(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str,
        name: str,
        finalizers: list[str],
        resource_version: str,
    ) -> dict[str, Any]:
        assert (group, version, plural) == (names.GROUP, names.VERSION, names.PLURAL)
        self.patches.append((namespace, name, list(finalizers), resource_version))
        status = self.answers.pop(0) if self.answers else None
        if status is not None:
            raise ApiError(status, "Failure", "answer")
        return {
            "metadata": {
                "namespace": namespace,
                "name": name,
                "finalizers": finalizers,
                "resourceVersion": f"{resource_version}+1",
            }
        }

    async def create_service_account_token(
        self, namespace: str, name: str, audience: str, seconds: int
    ) -> str:
        self.token_requests.append((namespace, name, audience, seconds))
        if self.token_status is not None:
            raise ApiError(self.token_status, "Failure", "answer")
        return SA_TOKEN

    @property
    def finalizer_writes(self) -> list[list[str]]:
        return [patch[2] for patch in self.patches]


@dataclass
class Secrets:
    """The credentials Secret (read) and the state Secret (labelled, from the cache)."""

    items: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)

    async def read(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        self.lookups.append(name)
        return self.items.get(name)

    async def label_credentials(self, secret: Mapping[str, Any]) -> Mapping[str, Any]:
        return secret

    async def labelled(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        self.lookups.append(name)
        return self.items.get(name)


@dataclass
class Sink:
    events: list[Mapping[str, Any]] = field(default_factory=list)

    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        self.events.append(body)

    @property
    def reasons(self) -> list[tuple[str, str]]:
        return [(event["type"], event["reason"]) for event in self.events]


class FakeOAuth2(Provider):
    """Revocable: records each revocation; fails with the scripted errors first."""

    name: ClassVar[str] = "oauth2"
    spec = SPEC

    def __init__(self, failures: list[MintError | None] | None = None) -> None:
        self.failures = list(failures or [])
        self.revoked: list[tuple[MintRequest, dict[str, str]]] = []

    def shareable(self, spec: Mapping[str, Any]) -> bool:
        return False

    def proofs(self, spec: Mapping[str, Any]) -> Proofs:
        return proofs(spec)

    def revokes_on_delete(self, spec: Mapping[str, Any]) -> bool:
        return spec.get("revokeOnDelete") is True

    async def mint(self, request: MintRequest) -> Any:
        raise AssertionError("nothing is minted here")

    async def revoke(
        self, request: MintRequest, tokens: Mapping[str, str]
    ) -> tuple[str, tuple[str, ...]]:
        self.revoked.append((request, dict(tokens)))
        failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            raise failure
        kinds = tuple(kind for kind in ("refresh_token", "access_token") if tokens.get(kind))
        return REVOCATION_URL, kinds


def test_the_fake_is_what_revocation_looks_for() -> None:
    assert isinstance(FakeOAuth2(), Revocable)
    assert not isinstance(PROVIDERS.get("podero"), Revocable)


def body(
    oauth2: Mapping[str, Any] = OAUTH2,
    finalizers: tuple[str, ...] = (FINALIZER,),
    deleted_at: datetime | None = DELETED_AT,
    credentials_ref: str | None = "creds",
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "namespace": "ns",
        "name": "pt",
        "uid": "uid-1",
        "generation": 3,
        "resourceVersion": "41",
        "finalizers": list(finalizers),
    }
    if deleted_at is not None:
        metadata["deletionTimestamp"] = deleted_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    spec: dict[str, Any] = {"provider": {"oauth2": dict(oauth2)}, "target": {"name": "out"}}
    if credentials_ref:
        spec["credentialsRef"] = {"name": credentials_ref}
    return {"metadata": metadata, "spec": spec}


def view(**kwargs: Any) -> ProviderTokenView:
    return parse_provider_token(body(**kwargs))


def encoded(name: str, values: Mapping[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


def saved(
    pt: ProviderTokenView, values: Mapping[str, str], creds: Mapping[str, str] = CREDS
) -> dict[str, Any]:
    """The state Secret as the operator wrote it at the last mint."""
    return state_secret(pt, state_question(pt, KEY.of_mapping(dict(creds)), KEY), values)


KEPT = {
    "refresh_token": REFRESH,
    "refresh_expires_at": "2026-11-24T12:00:00+00:00",
    "access_token": ACCESS,
}


class World:
    def __init__(self, provider: Provider | None = None, now: datetime = DELETED_AT) -> None:
        self.clock = Clock(now)
        self.kube = Kube()
        self.secrets = Secrets(items={"creds": encoded("creds", CREDS)})
        self.sink = Sink()
        self.provider: Any = provider or FakeOAuth2()
        self.patched: list[Mapping[str, Any]] = []
        self.http = HttpClient(EndpointPolicy())
        self.revocations = Revocations(
            kube=self.kube,
            inputs=MintInputs(self.secrets, self.kube),
            secrets=self.secrets,
            http=self.http,
            digest=KEY,
            events=EventRecorder(self.sink, clock=self.clock),
            clock=self.clock,
            on_patched=self.patched.append,
        )

    def keep(self, pt: ProviderTokenView, values: Mapping[str, str] = KEPT, **kwargs: Any) -> None:
        self.secrets.items[state_secret_name(pt)] = saved(pt, values, **kwargs)

    async def delete(self, pt: ProviderTokenView) -> datetime | None:
        return await self.revocations.on_delete(pt, self.provider)

    def assert_nothing_leaked(self, caplog: pytest.LogCaptureFixture) -> None:
        shown = json.dumps(self.sink.events) + "\n".join(
            record.getMessage() for record in caplog.records
        )
        for value in SECRETS:
            assert value not in shown


@pytest.fixture
async def world() -> AsyncIterator[World]:
    made = World()
    yield made
    await made.http.close()


@pytest.fixture(autouse=True)
def _logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


# --- hold: the finalizer follows the spec ---------------------------------------------------


@pytest.mark.parametrize(
    ("revoke", "before", "after"),
    [
        (True, (), [FINALIZER]),
        (True, (OTHER,), [OTHER, FINALIZER]),
        (False, (FINALIZER,), []),
        (False, (OTHER, FINALIZER, "b.example/x"), [OTHER, "b.example/x"]),
        (None, (FINALIZER, OTHER), [OTHER]),  # revokeOnDelete absent: default false
    ],
)
async def test_hold_writes_the_finalizer_the_spec_asks_for_and_keeps_the_others(
    world: World, revoke: bool | None, before: tuple[str, ...], after: list[str]
) -> None:
    oauth2 = {k: v for k, v in OAUTH2.items() if k != "revokeOnDelete"}
    if revoke is not None:
        oauth2["revokeOnDelete"] = revoke
    pt = view(oauth2=oauth2, finalizers=before, deleted_at=None)
    assert await world.revocations.hold(pt, world.provider) is True
    # Guarded by the resourceVersion read: another controller's write in between is kept.
    assert world.kube.patches == [("ns", "pt", after, "41")]
    assert world.patched == [
        {
            "metadata": {
                "namespace": "ns",
                "name": "pt",
                "finalizers": after,
                "resourceVersion": "41+1",
            }
        }
    ]
    assert world.sink.events == []


@pytest.mark.parametrize(
    ("revoke", "before"),
    [(True, (FINALIZER,)), (True, (OTHER, FINALIZER)), (False, ()), (False, (OTHER,))],
)
async def test_hold_writes_nothing_when_the_finalizer_is_as_wanted(
    world: World, revoke: bool, before: tuple[str, ...]
) -> None:
    pt = view(oauth2={**OAUTH2, "revokeOnDelete": revoke}, finalizers=before, deleted_at=None)
    assert await world.revocations.hold(pt, world.provider) is True
    assert world.kube.patches == [] and world.patched == []


async def test_hold_removes_our_finalizer_for_a_provider_that_cannot_revoke(world: World) -> None:
    pt = view(finalizers=(OTHER, FINALIZER), deleted_at=None)
    assert await world.revocations.hold(pt, PROVIDERS.get("podero")) is True
    assert world.kube.finalizer_writes == [[OTHER]]


@pytest.mark.parametrize(
    ("revoke", "status", "held"),
    [
        (True, 409, False),  # changed under the write: look again once the watch has it
        (False, 409, False),
        (False, 500, True),  # not removed: tried again at the next look, minting goes on
        (False, 403, True),
    ],
)
async def test_hold_after_a_failed_write(
    world: World, revoke: bool, status: int, held: bool, caplog: pytest.LogCaptureFixture
) -> None:
    before = () if revoke else (FINALIZER,)
    pt = view(oauth2={**OAUTH2, "revokeOnDelete": revoke}, finalizers=before, deleted_at=None)
    world.kube.answers = [status]
    assert await world.revocations.hold(pt, world.provider) is held
    assert len(world.kube.patches) == 1 and world.patched == []
    if status != 409:
        assert f"status={status}" in caplog.text


@pytest.mark.parametrize("status", [500, 0, 422])
async def test_a_finalizer_not_added_is_a_reason_and_nothing_is_minted(
    world: World, status: int
) -> None:
    """Not added: nothing may be minted that could not be revoked, and the status says why
    (backed off as any failure is, not looked at again every second)."""
    pt = view(finalizers=(), deleted_at=None)
    world.kube.answers = [status]
    with pytest.raises(FinalizerNotWritten) as caught:
        await world.revocations.hold(pt, world.provider)
    assert not caught.value.permanent and not caught.value.awaits_user
    assert FINALIZER in caught.value.message


async def test_hold_without_the_grant_is_revocation_not_permitted(world: World) -> None:
    pt = view(finalizers=(), deleted_at=None)
    world.kube.answers = [403]
    with pytest.raises(RevocationNotPermitted) as caught:
        await world.revocations.hold(pt, world.provider)
    # The grant it names is a file of the repository (the operator's ClusterRole).
    assert GRANT.startswith("deploy/") and (REPO / GRANT).is_file()
    assert GRANT in caught.value.message
    assert "patch on providertokens" in caught.value.message
    assert caught.value.reason == "RevocationNotPermitted"
    assert caught.value.awaits_user and not caught.value.permanent


# --- on_delete --------------------------------------------------------------------------------


async def test_a_deletion_revokes_both_tokens_once_then_lets_go(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    pt = view(finalizers=(OTHER, FINALIZER))
    world.keep(pt)
    world.clock.now = DELETED_AT + timedelta(seconds=1)
    assert await world.delete(pt) is None
    ((request, tokens),) = world.provider.revoked
    assert tokens["refresh_token"] == REFRESH and tokens["access_token"] == ACCESS
    # With the client authentication of a mint: the same credentials, nothing else.
    assert dict(request.credentials) == CREDS
    assert request.spec == pt.provider_spec and request.now == world.clock.now
    assert request.service_account_token is None and request.client_certificate is None
    assert world.sink.reasons == [("Normal", "Revoked")]
    note = world.sink.events[0]["note"]
    assert "refresh token" in note and "access token" in note and "idp.example" in note
    assert world.sink.events[0]["regarding"]["uid"] == "uid-1"
    assert world.kube.patches == [("ns", "pt", [OTHER], "41")]
    assert len(world.patched) == 1
    world.assert_nothing_leaked(caplog)


async def test_a_service_account_client_gets_a_fresh_token_for_its_revocation(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    oauth2 = {
        **OAUTH2,
        "grantType": "client_credentials",
        "clientAuth": "service_account",
        "serviceAccountRef": {"name": "idp-client", "audience": "https://idp.example"},
    }
    pt = view(oauth2=oauth2, credentials_ref=None)
    world.keep(pt, {"access_token": ACCESS}, creds={})
    assert await world.delete(pt) is None
    ((request, tokens),) = world.provider.revoked
    assert tokens == {"access_token": ACCESS}
    assert request.service_account_token == SA_TOKEN and dict(request.credentials) == {}
    assert world.kube.token_requests == [("ns", "idp-client", "https://idp.example", 600)]
    assert "creds" not in world.secrets.lookups
    assert world.sink.reasons == [("Normal", "Revoked")]
    assert world.kube.finalizer_writes == [[]]
    world.assert_nothing_leaked(caplog)


async def test_a_provider_down_from_the_deletion_on_is_given_up_on_after_30_seconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = [ProviderUnavailable("revocation endpoint answered 503") for _ in range(100)]
    world = World(FakeOAuth2(down), now=DELETED_AT + timedelta(milliseconds=400))
    pt = view(finalizers=(OTHER, FINALIZER))
    world.keep(pt)
    deadline = DELETED_AT + GIVE_UP_AFTER
    looks: list[datetime] = []
    try:
        for _ in range(100):
            looks.append(world.clock.now)
            again = await world.delete(pt)
            if again is None:
                break
            # When to look again: later than now, never past the deadline; nothing let go.
            assert world.clock.now < again <= deadline
            assert world.kube.patches == [] and world.sink.events == []
            world.clock.now = again
        else:
            pytest.fail("the deletion was held for ever")
    finally:
        await world.http.close()
    assert timedelta(seconds=30) == GIVE_UP_AFTER
    assert looks[-1] == deadline  # the last attempt is at the deadline, not after it
    # One attempt per look, a bounded number of them.
    assert len(world.provider.revoked) == len(looks)
    assert 2 <= len(looks) <= 31
    assert world.sink.reasons == [("Warning", "RevocationAbandoned")]
    note = world.sink.events[0]["note"]
    assert "after 30s" in note and "revocation endpoint answered 503" in note
    assert world.kube.finalizer_writes == [[OTHER]]
    # A late look (the watch still shows the finalizer) does not revoke again.
    world.clock.now = deadline + timedelta(seconds=2)
    assert await world.delete(pt) is None
    assert len(world.provider.revoked) == len(looks)
    assert world.sink.reasons == [("Warning", "RevocationAbandoned")]
    world.assert_nothing_leaked(caplog)


async def test_a_deletion_seen_late_still_gets_one_attempt() -> None:
    world = World(FakeOAuth2([ProviderUnavailable("down")]), now=DELETED_AT + timedelta(seconds=45))
    pt = view()
    world.keep(pt)
    try:
        assert await world.delete(pt) is None
    finally:
        await world.http.close()
    assert len(world.provider.revoked) == 1
    assert world.sink.reasons == [("Warning", "RevocationAbandoned")]
    assert "after 45s" in world.sink.events[0]["note"]
    assert world.kube.finalizer_writes == [[]]


async def test_a_provider_back_within_the_30_seconds_revokes() -> None:
    down = [ProviderUnavailable("down"), ProviderUnavailable("down")]
    world = World(FakeOAuth2(down))
    pt = view()
    world.keep(pt)
    try:
        results = []
        for _ in range(3):
            results.append(again := await world.delete(pt))
            if again is not None:
                world.clock.now = again
    finally:
        await world.http.close()
    assert results[0] is not None and results[1] is not None and results[2] is None
    assert len(world.provider.revoked) == 3
    assert world.sink.reasons == [("Normal", "Revoked")]
    assert world.kube.finalizer_writes == [[]]


@pytest.mark.parametrize(
    "failure",
    [
        InvalidCredentials("the revocation endpoint refused the client"),
        CredentialsNotFound("awaits a person: not worth holding the deletion"),
    ],
)
async def test_a_failure_that_will_not_pass_is_given_up_on_at_once(
    failure: MintError, caplog: pytest.LogCaptureFixture
) -> None:
    world = World(FakeOAuth2([failure]))
    pt = view(finalizers=(OTHER, FINALIZER))
    world.keep(pt)
    try:
        assert await world.delete(pt) is None
    finally:
        await world.http.close()
    assert len(world.provider.revoked) == 1
    assert world.sink.reasons == [("Warning", "RevocationFailed")]
    assert failure.message in world.sink.events[0]["note"]
    assert "after" not in world.sink.events[0]["note"]
    assert world.kube.finalizer_writes == [[OTHER]]
    world.assert_nothing_leaked(caplog)


@pytest.mark.parametrize(
    ("token_status", "reason", "again"),
    [
        (403, "RevocationFailed", False),  # no grant for the ServiceAccount token: a person's
        (404, "RevocationFailed", False),
        (500, None, True),  # the API server failing: passing, tried again
    ],
)
async def test_a_proof_that_cannot_be_obtained(
    world: World, token_status: int, reason: str | None, again: bool
) -> None:
    oauth2 = {
        **OAUTH2,
        "grantType": "client_credentials",
        "clientAuth": "service_account",
        "serviceAccountRef": {"name": "idp-client", "audience": "https://idp.example"},
    }
    pt = view(oauth2=oauth2, credentials_ref=None)
    world.keep(pt, {"access_token": ACCESS}, creds={})
    world.kube.token_status = token_status
    result = await world.delete(pt)
    assert (result is not None) is again
    assert world.provider.revoked == []  # nothing sent without its client authentication
    assert world.sink.reasons == ([("Warning", reason)] if reason else [])
    assert world.kube.finalizer_writes == ([] if again else [[]])


async def test_a_lost_finalizer_write_after_a_revocation_does_not_revoke_again(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    pt = view(finalizers=(OTHER, FINALIZER))
    world.keep(pt)
    world.kube.answers = [409]
    again = await world.delete(pt)
    assert again is not None and again > world.clock.now
    assert len(world.provider.revoked) == 1
    assert world.sink.reasons == [("Normal", "Revoked")]
    assert world.patched == []
    world.clock.now = again
    assert await world.delete(pt) is None
    assert len(world.provider.revoked) == 1  # settled: never sent twice
    assert world.sink.reasons == [("Normal", "Revoked")]
    assert world.kube.finalizer_writes == [[OTHER], [OTHER]]
    assert len(world.patched) == 1
    assert "status=409" in caplog.text


async def test_forget_ends_what_was_settled_for_a_name(world: World) -> None:
    pt = view()
    world.keep(pt)
    world.kube.answers = [409]
    assert await world.delete(pt) is not None
    world.revocations.forget(pt.uid)
    assert await world.delete(pt) is None
    assert len(world.provider.revoked) == 2


async def test_a_deletion_held_by_someone_else_only_is_not_ours(world: World) -> None:
    pt = view(finalizers=(OTHER,))
    world.keep(pt)
    assert await world.delete(pt) is None
    assert world.provider.revoked == []
    assert world.kube.patches == [] and world.sink.events == []
    assert world.secrets.lookups == []


@pytest.mark.parametrize(
    "kept",
    ["no state Secret", "empty state", "another owner", "another question"],
)
async def test_nothing_kept_means_nothing_revoked(world: World, kept: str) -> None:
    pt = view(finalizers=(OTHER, FINALIZER))
    if kept == "empty state":
        world.keep(pt, {})
    elif kept == "another owner":
        # A ProviderToken of the same name before this one: never its tokens.
        earlier = parse_provider_token(
            {**body(), "metadata": {**body()["metadata"], "uid": "uid-0"}}
        )
        world.secrets.items[state_secret_name(pt)] = saved(earlier, KEPT)
    elif kept == "another question":
        world.keep(pt, creds={**CREDS, "clientSecret": "rotated"})
    assert await world.delete(pt) is None
    assert world.provider.revoked == []
    assert world.sink.reasons == [("Normal", "Revoked")]
    assert "nothing to revoke" in world.sink.events[0]["note"]
    assert world.kube.finalizer_writes == [[OTHER]]


async def test_a_provider_that_cannot_revoke_lets_go_without_a_word(world: World) -> None:
    pt = view(finalizers=(OTHER, FINALIZER))
    world.keep(pt)
    assert await world.revocations.on_delete(pt, PROVIDERS.get("podero")) is None
    assert world.sink.events == []
    assert world.kube.finalizer_writes == [[OTHER]]


async def test_a_recreated_provider_token_of_the_same_name_is_revoked_too(world: World) -> None:
    first = view()
    world.keep(first)
    world.kube.answers = [409]
    assert await world.delete(first) is not None  # revoked; its finalizer write lost
    # The object went (another look removed the finalizer) but no DELETED event came.
    again = parse_provider_token({**body(), "metadata": {**body()["metadata"], "uid": "uid-2"}})
    world.keep(again)
    assert await world.delete(again) is None
    assert len(world.provider.revoked) == 2
    assert world.sink.reasons == [("Normal", "Revoked"), ("Normal", "Revoked")]


# --- letting go of what cannot be revoked (review of issue 18) ------------------------------


def retired(finalizers: tuple[str, ...] = (OTHER, FINALIZER)) -> ProviderTokenView:
    """A ProviderToken of a provider this operator does not know (written before a
    downgrade): parsed, but no provider to revoke with."""
    raw = body(finalizers=finalizers)
    raw["spec"]["provider"] = {"retired": {"revokeOnDelete": True}}
    return parse_provider_token(raw)


async def test_an_unsupported_provider_lets_go_with_a_warning(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    pt = retired()
    world.keep(pt)
    assert await world.revocations.on_delete(pt, None) is None
    assert world.provider.revoked == []
    assert world.secrets.lookups == []  # nothing read for a revocation that cannot be made
    assert world.kube.token_requests == []
    assert world.sink.reasons == [("Warning", "RevocationFailed")]
    note = world.sink.events[0]["note"]
    assert "provider retired is not supported" in note and "deletion goes on" in note
    assert world.sink.events[0]["regarding"]["uid"] == "uid-1"
    # The other controller's finalizer is kept; the write is guarded by the version read.
    assert world.kube.patches == [("ns", "pt", [OTHER], "41")]
    assert len(world.patched) == 1
    world.assert_nothing_leaked(caplog)


async def test_an_unsupported_provider_warns_once_when_the_removal_is_tried_again(
    world: World,
) -> None:
    pt = retired()
    world.kube.answers = [409]
    again = await world.revocations.on_delete(pt, None)
    assert again is not None and again > world.clock.now
    assert world.patched == []
    world.clock.now = again
    assert await world.revocations.on_delete(pt, None) is None
    assert world.sink.reasons == [("Warning", "RevocationFailed")]  # one Event, not two
    assert world.kube.finalizer_writes == [[OTHER], [OTHER]]
    assert len(world.patched) == 1
    assert world.provider.revoked == []


async def test_an_unsupported_provider_without_our_finalizer_is_not_ours(world: World) -> None:
    pt = retired(finalizers=(OTHER,))
    assert await world.revocations.on_delete(pt, None) is None
    assert world.kube.patches == [] and world.sink.events == []


def unreadable(
    finalizers: tuple[str, ...] = (OTHER, FINALIZER), deleted_at: datetime | None = DELETED_AT
) -> dict[str, Any]:
    """A raw ProviderToken whose spec cannot be parsed (two provider blocks)."""
    raw = body(finalizers=finalizers, deleted_at=deleted_at)
    raw["spec"]["provider"]["podero"] = {}
    return raw


def test_the_unreadable_body_is_unreadable() -> None:
    with pytest.raises(SpecInvalid):
        parse_provider_token(unreadable())


async def test_a_deleting_provider_token_whose_spec_cannot_be_read_is_let_go(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    raw = unreadable(finalizers=(OTHER, FINALIZER, "b.example/x"))
    assert await world.revocations.release_unreadable(raw) is None
    assert world.sink.reasons == [("Warning", "RevocationFailed")]
    event = world.sink.events[0]
    assert "spec cannot be read" in event["note"] and "deletion goes on" in event["note"]
    assert event["regarding"]["uid"] == "uid-1"
    assert event["regarding"]["namespace"] == "ns" and event["regarding"]["name"] == "pt"
    # Only ours removed, guarded by the body's resourceVersion.
    assert world.kube.patches == [("ns", "pt", [OTHER, "b.example/x"], "41")]
    assert len(world.patched) == 1
    assert world.provider.revoked == [] and world.secrets.lookups == []
    world.assert_nothing_leaked(caplog)


@pytest.mark.parametrize(
    "raw",
    [
        unreadable(deleted_at=None),  # not being deleted: the finalizer stays meanwhile
        unreadable(finalizers=(OTHER,)),  # held by someone else only
        unreadable(finalizers=()),
    ],
    ids=["not deleting", "not our finalizer", "no finalizer"],
)
async def test_an_unreadable_spec_is_left_alone_unless_our_finalizer_holds_its_deletion(
    world: World, raw: dict[str, Any]
) -> None:
    assert await world.revocations.release_unreadable(raw) is None
    assert world.kube.patches == [] and world.patched == []
    assert world.sink.events == []


@pytest.mark.parametrize(("status", "after"), [(409, 1), (403, 30), (500, 30)])
async def test_an_unreadable_spec_whose_finalizer_removal_fails_is_looked_at_again(
    world: World, status: int, after: int
) -> None:
    world.kube.answers = [status]
    again = await world.revocations.release_unreadable(unreadable())
    assert again == world.clock.now + timedelta(seconds=after)
    assert world.patched == []


async def test_an_unreadable_spec_warns_once_when_the_removal_is_tried_again(
    world: World,
) -> None:
    raw = unreadable()
    world.kube.answers = [409]
    again = await world.revocations.release_unreadable(raw)
    assert again is not None
    world.clock.now = again
    assert await world.revocations.release_unreadable(raw) is None
    assert world.kube.finalizer_writes == [[OTHER], [OTHER]]
    assert world.sink.reasons == [("Warning", "RevocationFailed")]


def minted(pt: ProviderTokenView) -> ProviderTokenView:
    """The same ProviderToken, with a mint in its status."""
    raw = body(finalizers=pt.finalizers)
    raw["status"] = {"lastMintTime": "2026-11-23T11:00:00Z"}
    return parse_provider_token(raw)


@pytest.mark.parametrize(
    ("kept", "why"),
    [
        ("another question", "holds none of this spec"),
        ("another owner", "holds none of this spec"),
        ("empty state", "holds none of this spec"),
        ("no state Secret", "was deleted first"),
    ],
)
async def test_a_minted_token_whose_state_is_gone_says_why_it_was_not_revoked(
    world: World, kept: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    pt = minted(view(finalizers=(OTHER, FINALIZER)))
    assert pt.status.last_mint_time is not None
    if kept == "another question":
        # Minted for rotated credentials, then the mint failed: the old tokens went.
        world.keep(pt, creds={**CREDS, "clientSecret": "rotated"})
    elif kept == "another owner":
        earlier = parse_provider_token(
            {**body(), "metadata": {**body()["metadata"], "uid": "uid-0"}}
        )
        world.secrets.items[state_secret_name(pt)] = saved(earlier, KEPT)
    elif kept == "empty state":
        world.keep(pt, {})
    assert await world.delete(pt) is None
    assert world.provider.revoked == []
    assert world.sink.reasons == [("Warning", "RevocationFailed")]
    note = world.sink.events[0]["note"]
    assert f"state Secret {state_secret_name(pt)} {why}" in note, note
    assert "deletion goes on" in note
    assert world.kube.finalizer_writes == [[OTHER]]
    world.assert_nothing_leaked(caplog)
