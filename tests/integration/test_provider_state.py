"""A saved refresh token answers exactly the question that produced it (issue 14, item 1).

A biotz ProviderToken renews with Keycloak's refresh grant. When its credentials, its
``tokenUrl`` or its ``clientId`` change, the refresh token saved for the old question must
never be sent again, to any endpoint: the next mint starts with the password grant for
the new question, and the state Secret no longer holds the old refresh token.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest

from fakes.keycloak import FakeKeycloak
from support.objects import Cluster, provider_token
from support.operator import OperatorProcess
from support.providers import Fakes
from support.waiting import wait_for

NAME = "device"
STATE = f"{NAME}-tokensync-state"
TARGET = f"{NAME}-token"
CREDENTIALS = f"{NAME}-credentials"


def new_device(keycloak: FakeKeycloak) -> dict[str, str]:
    username = f"{uuid.uuid4()}@devices.data-ingestion.biotz.io"
    password = "pw-" + uuid.uuid4().hex
    keycloak.add_user(username, password)
    return {"username": username, "password": password}


def claims(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def sessions_of(keycloak: FakeKeycloak, username: str) -> set[str]:
    with keycloak.lock:
        return {sid for sid, s in keycloak.state.sessions.items() if s.user == username}


def refresh_tokens_of(
    keycloak: FakeKeycloak, username: str, only: set[str] | None = None
) -> set[str]:
    """Every refresh token Keycloak handed out for this user's sessions (or these ones)."""
    with keycloak.lock:
        return {
            value
            for sid, session in keycloak.state.sessions.items()
            if session.user == username and (only is None or sid in only)
            for value in (session.current_refresh, *session.old)
        }


def state_data(cluster: Cluster, namespace: str) -> dict[str, str]:
    secret = cluster.secret(namespace, STATE)
    data = (secret.data or {}) if secret is not None else {}
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


@dataclass(frozen=True)
class Change:
    """One way the question changes: the edit (returns the user it now mints for), and
    what a token for the new question shows."""

    name: str
    apply: Callable[[Cluster, str, FakeKeycloak, str], str]
    new_question: Callable[[dict[str, Any], str], bool]


def switch_credentials(cluster: Cluster, namespace: str, keycloak: FakeKeycloak, _: str) -> str:
    device_b = new_device(keycloak)
    cluster.credentials(namespace, CREDENTIALS, device_b)
    return device_b["username"]


def move_token_url(cluster: Cluster, namespace: str, keycloak: FakeKeycloak, user: str) -> str:
    url = keycloak.realm_token_url("biotz-staging")
    cluster.patch_token(namespace, NAME, {"spec": {"provider": {"biotz": {"tokenUrl": url}}}})
    return user


def change_client(cluster: Cluster, namespace: str, keycloak: FakeKeycloak, user: str) -> str:
    client = {"clientId": "biotz-platform-programmatic-users"}
    cluster.patch_token(namespace, NAME, {"spec": {"provider": {"biotz": client}}})
    return user


CHANGES = [
    Change("credentials", switch_credentials, lambda c, user: bool(c["sub"] == user)),
    Change(
        "tokenUrl",
        move_token_url,
        lambda c, user: c["sub"] == user and str(c["iss"]).endswith("/realms/biotz-staging"),
    ),
    Change(
        "clientId",
        change_client,
        lambda c, user: c["sub"] == user and c["azp"] == "biotz-platform-programmatic-users",
    ),
]


@pytest.mark.parametrize("change", CHANGES, ids=[c.name for c in CHANGES])
def test_no_old_refresh_token_is_sent_after_the_question_changes(
    cluster: Cluster, fakes: Fakes, operator: OperatorProcess, change: Change
) -> None:
    keycloak = fakes.keycloak
    device_a = new_device(keycloak)
    namespace = cluster.namespace("state")
    cluster.credentials(namespace, CREDENTIALS, device_a)
    cluster.apply(
        provider_token(
            NAME,
            namespace=namespace,
            provider={"biotz": {"tokenUrl": keycloak.token_url}},
            credentials=CREDENTIALS,
            target=TARGET,
        )
    )
    cluster.wait_ready(namespace, NAME)
    # A forced renewal proves the saved refresh token is really in use before the change.
    cluster.patch_token(
        namespace, NAME, {"metadata": {"annotations": {"tokensync.dev/renew": "before"}}}
    )
    wait_for(
        lambda: keycloak.grants(device_a["username"]).count("refresh_token") >= 1,
        timeout_s=30,
        what="a renewal with the refresh grant",
    )
    wait_for(
        lambda: (
            state_data(cluster, namespace).get("refresh_token")
            in refresh_tokens_of(keycloak, device_a["username"])
        ),
        timeout_s=30,
        what="device A's refresh token saved",
    )

    old_sessions = sessions_of(keycloak, device_a["username"])
    changed_at = time.time()
    user = change.apply(cluster, namespace, keycloak, device_a["username"])

    def new_token() -> dict[str, Any] | None:
        value = cluster.secret_value(namespace, TARGET)
        found = claims(value) if value else None
        return found if found and change.new_question(found, user) else None

    wait_for(new_token, timeout_s=30, what=f"a token for the new question ({change.name})")

    old_refresh = refresh_tokens_of(keycloak, device_a["username"], old_sessions)
    assert old_refresh
    for fake in fakes.all():
        with fake.lock:
            sent = [r for r in fake.requests if r.at >= changed_at]
        for request in sent:
            text = request.body.decode(errors="replace") + str(request.query)
            assert not any(token in text for token in old_refresh), (
                f"an old refresh token was sent to {request.path} after the {change.name} change"
            )
    # The new question starts with the first grant: its first request is a password grant.
    ours = refresh_tokens_of(keycloak, user) | old_refresh
    assert sessions_of(keycloak, user) - old_sessions, "a new session for the new question"
    with keycloak.lock:
        first = next(
            r
            for r in keycloak.requests
            if r.at >= changed_at
            and (r.form.get("username") == user or r.form.get("refresh_token") in ours)
        )
    assert first.form["grant_type"] == "password"

    # The state Secret answers the new question only, and says so with digests.
    state = cluster.secret(namespace, STATE)
    annotations = state.metadata.annotations
    assert state_data(cluster, namespace).get("refresh_token") in refresh_tokens_of(keycloak, user)
    assert state_data(cluster, namespace).get("refresh_token") not in old_refresh
    assert annotations["tokensync.dev/provider"] == "biotz"
    assert annotations["tokensync.dev/provider-spec-digest"].startswith("hmac-sha256:")
    target = cluster.secret(namespace, TARGET)
    assert (
        annotations["tokensync.dev/credentials-digest"]
        == target.metadata.annotations["tokensync.dev/credentials-digest"]
    )
