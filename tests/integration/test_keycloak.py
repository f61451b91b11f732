"""The operator against a real Keycloak 26 (issue 14, item 4): what the fakes can only imitate.

One Keycloak for the run (see support/keycloak.py), started in the background from the
first integration test on; the suite's one operator reaches it through ``--allowed-hosts``
and trusts its certificate through ``--ca-file``. Each test reads Keycloak's own event log
to check what the operator really sent: logins, refreshes, client logins, exchanges.

Tokens live seconds (realm ``accessTokenLifespan``) so renewals come quickly; refresh tokens
are single-use (``revokeRefreshToken`` with no reuse), so a stale one is refused, visibly.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import jwt
import pytest
from kubernetes.client.exceptions import ApiException

from support.keycloak import (
    ClientKey,
    JwksVerifier,
    KeycloakAdmin,
    KeycloakPlan,
    event_counts,
)
from support.objects import GROUP, PLURAL, VERSION, Cluster, provider_token
from support.operator import OperatorProcess
from support.waiting import ConditionTimeout, wait_for

BIOTZ_REALM = "biotz-platform"
DEVICES = "biotz-platform-devices"
PROGRAMMATIC = "biotz-platform-programmatic-users"
OAUTH2_REALM = "tokensync-oauth2"
API_AUDIENCE = "tokensync-api"
NAME = "device"
CREDENTIALS = f"{NAME}-credentials"
# Renewals every ~3 s: the token lives 8 s and is renewed 5 s before it ends.
SHORT_LIFESPAN_S = 8
SHORT_RENEW = {"renewBefore": "5s"}
# Long enough that no scheduled renewal comes during a test: only the ones it forces.
LONG_LIFESPAN_S = 600
WHOSE = ("iss", "azp", "sub", "preferred_username", "sid")


def now_ms() -> int:
    return int(time.time() * 1000)


def unverified(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


@dataclass(frozen=True)
class User:
    realm: str
    username: str
    password: str = field(repr=False)
    id: str


@dataclass
class World:
    """The running Keycloak as the tests use it; every secret it hands out is remembered."""

    plan: KeycloakPlan
    admin: KeycloakAdmin
    verifier: JwksVerifier
    secrets: set[str]
    report: dict[str, dict[str, int]]

    def issuer(self, realm: str, *, https: bool = False) -> str:
        return f"{self.plan.https_url if https else self.plan.http_url}/realms/{realm}"

    def token_url(self, realm: str, *, https: bool = False) -> str:
        return f"{self.issuer(realm, https=https)}/protocol/openid-connect/token"

    def remember(self, *values: str) -> None:
        self.secrets.update(v for v in values if v)

    def user(self, realm: str, username: str | None = None) -> User:
        username = username or f"{uuid.uuid4().hex[:12]}@devices.data-ingestion.biotz.io"
        password = "pw-" + uuid.uuid4().hex
        self.remember(password)
        return User(realm, username, password, self.admin.create_user(realm, username, password))

    def realm(self, name: str, lifespan_s: int, *public_clients: str) -> str:
        self.admin.create_realm(name, access_token_lifespan_s=lifespan_s)
        for client in public_clients:
            self.admin.public_client(name, client)
        return name

    def verify(
        self, token: str, realm: str, audience: str, *, https: bool = False
    ) -> dict[str, Any]:
        self.remember(token)
        return self.verifier.verify(
            token, realm=realm, issuer=self.issuer(realm, https=https), audience=audience
        )

    def events(self, *realms: str, since: int, **filters: str) -> list[dict[str, Any]]:
        every = [e for r in realms for e in self.admin.events(r, **filters)]
        return sorted((e for e in every if int(e["time"]) >= since), key=lambda e: int(e["time"]))

    def record(self, flow: str, events: list[dict[str, Any]]) -> None:
        self.report[flow] = event_counts(events)


@pytest.fixture(scope="module")
def kc(
    operator: OperatorProcess,
    keycloak_plan: KeycloakPlan,
    keycloak_secrets: set[str],
    keycloak_report: dict[str, object],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[World]:
    # Waited for only now, after the control plane and the operator: Keycloak has been
    # booting in the background meanwhile, so the two start-ups overlap.
    request.getfixturevalue("keycloak")
    admin = KeycloakAdmin(
        keycloak_plan.http_url, keycloak_plan.admin_username, keycloak_plan.admin_password
    )
    counts: dict[str, dict[str, int]] = {}
    world = World(
        keycloak_plan, admin, JwksVerifier(keycloak_plan.http_url), keycloak_secrets, counts
    )
    world.remember(keycloak_plan.admin_password)
    world.realm(BIOTZ_REALM, SHORT_LIFESPAN_S, DEVICES, PROGRAMMATIC)
    admin.create_realm(OAUTH2_REALM, access_token_lifespan_s=SHORT_LIFESPAN_S)
    try:
        yield world
    finally:
        keycloak_report["events"] = counts
        path = tmp_path_factory.getbasetemp() / "keycloak-events.json"
        path.write_text(json.dumps(counts, indent=2))
        admin.close()


class Namespace:
    """One flow's namespace: applies ProviderTokens and watches what lands in their Secrets."""

    def __init__(self, cluster: Cluster, world: World, prefix: str) -> None:
        self.cluster = cluster
        self.world = world
        self.name = cluster.namespace(prefix)
        self.seen: dict[str, list[str]] = {}

    def apply(
        self,
        provider: dict[str, Any],
        credentials: dict[str, str],
        *,
        name: str = NAME,
        refresh: dict[str, Any] | None = None,
    ) -> None:
        self.world.remember(*credentials.values())
        self.cluster.credentials(self.name, f"{name}-credentials", credentials)
        self.cluster.apply(
            provider_token(
                name,
                namespace=self.name,
                provider=provider,
                credentials=f"{name}-credentials",
                target=f"{name}-token",
                refresh=refresh,
            )
        )

    def token(self, name: str = NAME) -> str | None:
        """The token in the target Secret now; every value seen is kept, in order."""
        value = self.cluster.secret_value(self.name, f"{name}-token")
        seen = self.seen.setdefault(name, [])
        if value and (not seen or seen[-1] != value):
            seen.append(value)
            self.world.remember(value)
            self.remember_state(name)
        return value

    def remember_state(self, name: str = NAME) -> None:
        state = self.cluster.secret(self.name, f"{name}-tokensync-state")
        for raw in ((state.data or {}) if state is not None else {}).values():
            self.world.remember(base64.b64decode(raw).decode())

    def wait_token(
        self, accept: Callable[[str], bool], what: str, *, name: str = NAME, timeout_s: float = 30
    ) -> str:
        def accepted() -> str | None:
            value = self.token(name)
            return value if value and accept(value) else None

        try:
            return wait_for(accepted, timeout_s=timeout_s, what=what, interval_s=0.1)
        except ConditionTimeout as timeout:
            # Whose token is there instead says more than "timed out".
            value = self.token(name)
            held = {k: unverified(value).get(k) for k in WHOSE} if value else None
            raise ConditionTimeout(f"{timeout}; the Secret holds a token of {held}") from None

    def wait_new_token(self, what: str, *, name: str = NAME, timeout_s: float = 30) -> str:
        before = self.token(name)
        return self.wait_token(lambda v: v != before, what, name=name, timeout_s=timeout_s)

    def renew(self, name: str = NAME) -> None:
        """Ask for a mint now, the GitOps way: a new value of the renew annotation."""
        annotations = {"tokensync.dev/renew": uuid.uuid4().hex}
        self.cluster.patch_token(self.name, name, {"metadata": {"annotations": annotations}})

    def delete_all(self) -> None:
        # A ProviderToken left behind keeps renewing against Keycloak: noise in later tests'
        # event counts and load on two cores.
        tokens = cast(
            dict[str, Any],
            self.cluster.custom.list_namespaced_custom_object(GROUP, VERSION, self.name, PLURAL),
        )
        for item in tokens["items"]:
            name = item["metadata"]["name"]
            self.token(name)
            try:
                self.cluster.delete_token(self.name, name)
            except ApiException as error:
                if error.status != 404:
                    raise


@pytest.fixture
def space(cluster: Cluster, kc: World) -> Iterator[Namespace]:
    namespace = Namespace(cluster, kc, "kc")
    try:
        yield namespace
    finally:
        namespace.delete_all()


# --- biotz ---------------------------------------------------------------------------------


def biotz(world: World, realm: str = BIOTZ_REALM, client: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"tokenUrl": world.token_url(realm)}
    if client:
        block["clientId"] = client
    return {"biotz": block}


def of_device(events: list[dict[str, Any]], device: User) -> list[dict[str, Any]]:
    """This device's events in the shared realm (an error may name no user: kept too)."""
    return [e for e in events if e.get("userId") in (None, device.id)]


def device_credentials(user: User) -> dict[str, str]:
    return {"username": user.username, "password": user.password}


def test_biotz_logs_in_once_then_only_refreshes(
    kc: World, space: Namespace, operator: OperatorProcess
) -> None:
    device = kc.user(BIOTZ_REALM)
    since = now_ms()
    space.apply(biotz(kc), device_credentials(device), refresh=SHORT_RENEW)

    for renewal in range(4):  # the first mint and three renewals, each checked when it lands
        token = space.wait_new_token(f"mint {renewal} of the id_token", timeout_s=30)
        claims = kc.verify(token, BIOTZ_REALM, DEVICES)
        assert claims["typ"] == "ID" and claims["azp"] == DEVICES
        assert claims["sub"] == device.id and claims["preferred_username"] == device.username

    events = of_device(kc.events(BIOTZ_REALM, since=since, client_id=DEVICES), device)
    kc.record("1 biotz renewals", events)
    mine = [e["type"] for e in events]
    assert mine[:1] == ["LOGIN"] and mine.count("LOGIN") == 1, mine
    assert set(mine[1:]) == {"REFRESH_TOKEN"} and len(mine) >= 4, mine
    failures = [e for e in events if e["type"].endswith("_ERROR")]
    assert not failures, failures
    # Single-use refresh tokens: each renewal presented a token never presented before.
    presented = [e["details"]["refresh_token_id"] for e in events if e["type"] == "REFRESH_TOKEN"]
    assert len(presented) == len(set(presented)), presented


def test_biotz_after_a_logout_falls_back_to_the_password(
    kc: World, space: Namespace, operator: OperatorProcess
) -> None:
    device = kc.user(BIOTZ_REALM)
    since = now_ms()
    space.apply(biotz(kc), device_credentials(device))
    first = space.wait_token(bool, "the first id_token")
    old_session = kc.verify(first, BIOTZ_REALM, DEVICES)["sid"]

    logged_out = now_ms()
    kc.admin.logout_user(BIOTZ_REALM, device.id)
    space.renew()
    token = space.wait_token(
        lambda v: unverified(v)["sid"] != old_session, "an id_token of a new session"
    )
    claims = kc.verify(token, BIOTZ_REALM, DEVICES)
    assert claims["sub"] == device.id

    events = of_device(kc.events(BIOTZ_REALM, since=since, client_id=DEVICES), device)
    kc.record("2 biotz after logout", events)
    after = [e for e in events if int(e["time"]) >= logged_out]
    assert [e["type"] for e in after] == ["REFRESH_TOKEN_ERROR", "LOGIN"], after
    assert after[0]["details"]["reason"].lower().startswith("session not active"), after[0]
    assert after[1]["userId"] == device.id and after[1]["sessionId"] == claims["sid"]


def test_biotz_password_change_is_reported_then_healed_by_new_credentials(
    kc: World, space: Namespace, operator: OperatorProcess
) -> None:
    device = kc.user(BIOTZ_REALM)
    since = now_ms()
    space.apply(biotz(kc), device_credentials(device))
    first = space.wait_token(bool, "the first id_token")
    space.cluster.wait_ready(space.name, NAME)

    changed = now_ms()
    new_password = "pw-" + uuid.uuid4().hex
    kc.remember(new_password)
    kc.admin.reset_password(BIOTZ_REALM, device.id, new_password)
    kc.admin.logout_user(BIOTZ_REALM, device.id)
    space.renew()
    failed = space.cluster.wait_ready(space.name, NAME, status="False")
    assert failed["reason"] == "InvalidCredentials", failed
    # What docs/providers.md says Keycloak 26 answers to a wrong password (not 401).
    assert "Keycloak answered 400 invalid_grant" in failed["message"], failed
    assert space.token() == first  # the last good token stays until it expires

    healed = now_ms()
    space.cluster.credentials(
        space.name, CREDENTIALS, {"username": device.username, "password": new_password}
    )
    space.cluster.wait_ready(space.name, NAME)
    token = space.wait_token(lambda v: v != first, "an id_token minted with the new password")
    claims = kc.verify(token, BIOTZ_REALM, DEVICES)
    assert claims["sub"] == device.id

    events = of_device(kc.events(BIOTZ_REALM, since=since, client_id=DEVICES), device)
    kc.record("3 biotz password change", events)
    types = [e["type"] for e in events if int(e["time"]) >= changed]
    assert types[:2] == ["REFRESH_TOKEN_ERROR", "LOGIN_ERROR"], types
    after_heal = [e for e in events if int(e["time"]) >= healed]
    assert [e["type"] for e in after_heal][:1] == ["LOGIN"], after_heal
    assert after_heal[0]["sessionId"] == claims["sid"]


# --- generic OAuth2 over HTTPS, discovered from the issuer ---------------------------------


def oauth2(world: World, **fields: str) -> dict[str, Any]:
    return {"oauth2": {"issuerUrl": world.issuer(OAUTH2_REALM, https=True), **fields}}


@pytest.mark.parametrize(
    "client_auth", ["client_secret_basic", "client_secret_post", "private_key_jwt"]
)
def test_oauth2_client_credentials(
    kc: World, space: Namespace, operator: OperatorProcess, client_auth: str
) -> None:
    client_id = f"cc-{client_auth.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
    credentials = {"clientId": client_id}
    if client_auth == "private_key_jwt":
        key = ClientKey.generate(client_id)
        client = kc.admin.confidential_client(
            OAUTH2_REALM,
            client_id,
            service_account=True,
            authenticator="client-jwt",
            attributes={
                "use.jwks.url": "false",
                "jwt.credential.certificate": key.certificate_b64,
                "token.endpoint.auth.signing.alg": "RS256",
            },
        )
        credentials["privateKey"] = key.private_pem
        kc.remember(*key.private_pem.strip().splitlines()[1:-1])
    else:
        client = kc.admin.confidential_client(OAUTH2_REALM, client_id, service_account=True)
        credentials["clientSecret"] = kc.admin.client_secret(OAUTH2_REALM, client)
    kc.admin.audience_mapper(OAUTH2_REALM, client, API_AUDIENCE)

    since = now_ms()
    space.apply(oauth2(kc, clientAuth=client_auth), credentials)
    token = space.wait_token(bool, f"a {client_auth} token")
    claims = kc.verify(token, OAUTH2_REALM, API_AUDIENCE, https=True)
    assert claims["azp"] == client_id

    events = kc.events(OAUTH2_REALM, since=since, client_id=client_id)
    kc.record(f"4 oauth2 client_credentials {client_auth}", events)
    # A renewal may already have come (the token lives seconds): client logins only, though.
    assert {e["type"] for e in events} == {"CLIENT_LOGIN"}, events
    expected_method = "client-jwt" if client_auth == "private_key_jwt" else "client-secret"
    assert {e["details"]["client_auth_method"] for e in events} == {expected_method}


def test_oauth2_password_grant_renews_with_the_refresh_grant(
    kc: World, space: Namespace, operator: OperatorProcess
) -> None:
    client_id = f"pw-{uuid.uuid4().hex[:6]}"
    client = kc.admin.confidential_client(OAUTH2_REALM, client_id, direct_access=True)
    kc.admin.audience_mapper(OAUTH2_REALM, client, API_AUDIENCE)
    secret = kc.admin.client_secret(OAUTH2_REALM, client)
    user = kc.user(OAUTH2_REALM, f"user-{uuid.uuid4().hex[:8]}")

    since = now_ms()
    space.apply(
        oauth2(kc, grantType="password", clientAuth="client_secret_basic"),
        {
            "clientId": client_id,
            "clientSecret": secret,
            "username": user.username,
            "password": user.password,
        },
        refresh=SHORT_RENEW,
    )
    for mint in range(2):
        token = space.wait_new_token(f"password-grant token {mint}")
        claims = kc.verify(token, OAUTH2_REALM, API_AUDIENCE, https=True)
        assert claims["sub"] == user.id and claims["azp"] == client_id

    events = kc.events(OAUTH2_REALM, since=since, client_id=client_id)
    kc.record("5 oauth2 password", events)
    assert [e["type"] for e in events][:2] == ["LOGIN", "REFRESH_TOKEN"], events
    assert {e["type"] for e in events} <= {"LOGIN", "REFRESH_TOKEN"}, events


def test_oauth2_standard_token_exchange(
    kc: World, space: Namespace, operator: OperatorProcess
) -> None:
    requester_id = f"te-requester-{uuid.uuid4().hex[:6]}"
    requester = kc.admin.confidential_client(
        OAUTH2_REALM, requester_id, attributes={"standard.token.exchange.enabled": "true"}
    )
    kc.admin.audience_mapper(OAUTH2_REALM, requester, API_AUDIENCE)
    secret = kc.admin.client_secret(OAUTH2_REALM, requester)
    # The subject token: the user's, from another client, naming the requester in `aud`
    # (standard token exchange requires it) and living long enough for the whole test.
    subject_app_id = f"te-app-{uuid.uuid4().hex[:6]}"
    subject_app = kc.admin.create_client(
        OAUTH2_REALM,
        {
            "clientId": subject_app_id,
            "publicClient": True,
            "directAccessGrantsEnabled": True,
            "standardFlowEnabled": False,
            "attributes": {"access.token.lifespan": "3600"},
        },
    )
    kc.admin.audience_mapper(OAUTH2_REALM, subject_app, requester_id)
    user = kc.user(OAUTH2_REALM, f"te-user-{uuid.uuid4().hex[:8]}")
    answer = httpx_post(
        kc,
        kc.token_url(OAUTH2_REALM, https=True),
        {
            "grant_type": "password",
            "client_id": subject_app_id,
            "username": user.username,
            "password": user.password,
        },
    )
    subject_token = answer["access_token"]
    kc.remember(subject_token, answer.get("refresh_token", ""))
    assert requester_id in unverified(subject_token)["aud"]

    since = now_ms()
    space.apply(
        oauth2(kc, grantType="token_exchange", clientAuth="client_secret_post"),
        {"clientId": requester_id, "clientSecret": secret, "subjectToken": subject_token},
    )
    token = space.wait_token(bool, "an exchanged token")
    claims = kc.verify(token, OAUTH2_REALM, API_AUDIENCE, https=True)
    assert claims["azp"] == requester_id and claims["sub"] == user.id

    events = kc.events(OAUTH2_REALM, since=since, client_id=requester_id)
    kc.record("6 oauth2 token exchange", events)
    assert {e["type"] for e in events} == {"TOKEN_EXCHANGE"}, events


def httpx_post(world: World, url: str, form: dict[str, str]) -> dict[str, Any]:
    trust = ssl.create_default_context(cafile=str(world.plan.ca_cert))
    answer = httpx.post(url, data=form, verify=trust, timeout=30)
    answer.raise_for_status()
    body: dict[str, Any] = answer.json()
    return body


# --- Bug 1: a saved refresh token must not outlive its question -----------------------------


@dataclass(frozen=True)
class Question:
    realm: str
    client: str
    user: User


def refreshing(kc: World, space: Namespace, question: Question) -> tuple[str, int]:
    """A biotz ProviderToken that has logged in and refreshed; returns its session and when."""
    space.apply(biotz(kc, question.realm, question.client), device_credentials(question.user))
    first = space.wait_token(bool, "the first id_token")
    space.renew()
    token = space.wait_token(lambda v: v != first, "a refreshed id_token")
    claims = kc.verify(token, question.realm, question.client)
    assert claims["sub"] == question.user.id and claims["sid"] == unverified(first)["sid"]
    # The Secret is written after Keycloak answered: every event of the old question is
    # older than this instant, and none may come after it.
    return str(claims["sid"]), now_ms()


def answers_the_new_question_only(
    kc: World,
    space: Namespace,
    realms: tuple[str, str],
    old: Question,
    old_session: str,
    changed: int,
    new: Question,
    flow: str,
) -> None:
    token = space.wait_token(
        lambda v: (c := unverified(v))["sub"] == new.user.id and c["azp"] == new.client,
        f"an id_token for {new.user.username} of {new.realm}/{new.client}",
        timeout_s=20,
    )
    claims = kc.verify(token, new.realm, new.client)
    assert claims["preferred_username"] == new.user.username
    new_session = claims["sid"]
    # One more renewal of the new session: the old refresh token must not come back later.
    space.renew()
    renewed = space.wait_token(lambda v: v != token, "a renewal after the change")
    assert kc.verify(renewed, new.realm, new.client)["sid"] == new_session

    events = kc.events(*realms, since=changed)
    kc.record(flow, events)
    assert events and events[0]["type"] == "LOGIN", events
    assert events[0]["userId"] == new.user.id and events[0]["sessionId"] == new_session
    stray = [
        e
        for e in events
        if e["type"] in ("REFRESH_TOKEN", "REFRESH_TOKEN_ERROR")
        and (e["type"] == "REFRESH_TOKEN_ERROR" or e.get("sessionId") != new_session)
    ]
    assert not stray, f"the old session {old_session} of {old} was refreshed: {stray}"
    if old.user.id != new.user.id:
        assert all(e.get("userId") != old.user.id for e in events), events


@pytest.fixture
def two_realms(kc: World) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:6]
    return (
        kc.realm(f"b1-{suffix}-one", LONG_LIFESPAN_S, DEVICES, PROGRAMMATIC),
        kc.realm(f"b1-{suffix}-two", LONG_LIFESPAN_S, DEVICES, PROGRAMMATIC),
    )


def test_bug1_switching_device_credentials_starts_a_new_session(
    kc: World, space: Namespace, operator: OperatorProcess, two_realms: tuple[str, str]
) -> None:
    realm = two_realms[0]
    device_a, device_b = kc.user(realm), kc.user(realm)
    old = Question(realm, DEVICES, device_a)
    session, changed = refreshing(kc, space, old)
    space.cluster.credentials(space.name, CREDENTIALS, device_credentials(device_b))
    answers_the_new_question_only(
        kc,
        space,
        two_realms,
        old,
        session,
        changed,
        Question(realm, DEVICES, device_b),
        "7a bug1 credentials A->B",
    )


def test_bug1_moving_to_another_realm_starts_a_new_session(
    kc: World, space: Namespace, operator: OperatorProcess, two_realms: tuple[str, str]
) -> None:
    one, two = two_realms
    device = kc.user(one)
    # The same device name and password in the second realm: only the endpoint differs.
    twin_id = kc.admin.create_user(two, device.username, device.password)
    twin = User(two, device.username, device.password, twin_id)
    old = Question(one, DEVICES, device)
    session, changed = refreshing(kc, space, old)
    space.cluster.patch_token(
        space.name, NAME, {"spec": {"provider": {"biotz": {"tokenUrl": kc.token_url(two)}}}}
    )
    answers_the_new_question_only(
        kc,
        space,
        two_realms,
        old,
        session,
        changed,
        Question(two, DEVICES, twin),
        "7b bug1 tokenUrl realm one->two",
    )


def test_bug1_changing_the_client_starts_a_new_session(
    kc: World, space: Namespace, operator: OperatorProcess, two_realms: tuple[str, str]
) -> None:
    realm = two_realms[0]
    device = kc.user(realm)
    old = Question(realm, DEVICES, device)
    session, changed = refreshing(kc, space, old)
    space.cluster.patch_token(
        space.name, NAME, {"spec": {"provider": {"biotz": {"clientId": PROGRAMMATIC}}}}
    )
    answers_the_new_question_only(
        kc,
        space,
        two_realms,
        old,
        session,
        changed,
        Question(realm, PROGRAMMATIC, device),
        "7c bug1 clientId devices->programmatic",
    )
