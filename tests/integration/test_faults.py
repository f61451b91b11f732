"""Faults of the operator and of the provider, on the suite's control plane.

The operator SIGKILLed in the middle of a mint and of a Secret write; the provider down
for longer than a renewal window; and a provider answering badly (slow, HTML, malformed,
truncated, 50 MB, a wrong content type, no token, a token already expired). After each:
the Secret kept its last good token, the status tells the truth, nothing was duplicated,
and the operator went on without a restart.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt
import pytest

from fakes.base import SIGNING_KEY, Response
from fakes.oauth2_server import FakeOAuth2Server
from support.invariants import SecretWatch, status_is_true
from support.objects import Cluster, provider_token
from support.operator import OperatorProcess
from support.waiting import wait_for

TARGET = "api-token"


@dataclass
class Case:
    namespace: str
    client_id: str
    name: str = "api"


@pytest.fixture
def case(cluster: Cluster, oauth2_server: FakeOAuth2Server, operator: OperatorProcess) -> Case:
    """A namespace with one client's credentials; the ProviderToken is applied by the test."""
    namespace = cluster.namespace("fault")
    client_id = f"fault-{uuid.uuid4().hex[:8]}"
    secret = f"fault-secret-{uuid.uuid4().hex}"
    oauth2_server.add_client(client_id, secret, expires_in=3600)
    cluster.credentials(namespace, "creds", {"clientId": client_id, "clientSecret": secret})
    return Case(namespace, client_id)


def apply(cluster: Cluster, server: FakeOAuth2Server, case: Case) -> None:
    cluster.apply(
        provider_token(
            case.name,
            namespace=case.namespace,
            provider={"oauth2": {"tokenUrl": server.token_url}},
            credentials="creds",
            target=TARGET,
        )
    )


def request_renewal(cluster: Cluster, case: Case, value: str) -> None:
    cluster.patch_token(
        case.namespace, case.name, {"metadata": {"annotations": {"tokensync.dev/renew": value}}}
    )


def condition_after(cluster: Cluster, case: Case, renew: str) -> dict[str, Any] | None:
    """The Ready condition once the renewal asked for as ``renew`` has been acted on."""
    body = cluster.token(case.namespace, case.name) or {}
    status = body.get("status") or {}
    if status.get("lastRenewRequest") != renew:
        return None
    return cluster.ready(case.namespace, case.name)


def truthful(cluster: Cluster, server: FakeOAuth2Server, case: Case) -> bool:
    return status_is_true(cluster, server, case.namespace, case.name, TARGET)


def token_secrets(cluster: Cluster, namespace: str) -> list[str]:
    return sorted(
        s.metadata.name
        for s in cluster.core.list_namespaced_secret(
            namespace, label_selector="app.kubernetes.io/managed-by=tokensync"
        ).items
    )


def test_sigkill_in_the_middle_of_a_mint(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, operator: OperatorProcess, case: Case
) -> None:
    """The provider is answering when the operator dies: that token is lost with it, and
    the next process mints once more; one Secret, one valid token."""
    oauth2_server.misbehave(case.client_id, latency_s=2.0)
    apply(cluster, oauth2_server, case)
    wait_for(
        lambda: oauth2_server.requests_from(case.client_id),
        timeout_s=30,
        what="the mint to reach the provider",
    )
    operator.kill()
    oauth2_server.misbehave(case.client_id)
    wait_for(
        lambda: oauth2_server.issued_to(case.client_id),
        timeout_s=10,
        what="the provider to finish the answer nobody reads",
    )
    assert cluster.secret(case.namespace, TARGET) is None
    operator.start()
    wait_for(lambda: truthful(cluster, oauth2_server, case), timeout_s=60, what="a good token")
    assert len(oauth2_server.issued_to(case.client_id)) == 2
    assert cluster.secret_value(case.namespace, TARGET) == (
        oauth2_server.issued_to(case.client_id)[-1].value
    )
    assert token_secrets(cluster, case.namespace) == [TARGET]


@pytest.mark.parametrize("kill_after_ms", [0, 5, 15, 40, 100])
def test_sigkill_around_the_secret_write(
    cluster: Cluster,
    oauth2_server: FakeOAuth2Server,
    operator: OperatorProcess,
    case: Case,
    kill_after_ms: int,
) -> None:
    """SIGKILL 0-100 ms after the provider answered a renewal: before, during or after
    the Secret write and the status write. The Secret holds the old token or the new one,
    never nothing and never a broken one; the restarted operator makes the status true."""
    apply(cluster, oauth2_server, case)
    wait_for(lambda: truthful(cluster, oauth2_server, case), timeout_s=30, what="first token")
    first = cluster.secret_value(case.namespace, TARGET)

    def kill_soon(_: object) -> None:
        oauth2_server.on_issue = None
        threading.Timer(kill_after_ms / 1000, operator.kill).start()

    with SecretWatch(cluster, case.namespace) as watch:
        oauth2_server.on_issue = kill_soon
        request_renewal(cluster, case, "kill")
        wait_for(lambda: not operator.running(), timeout_s=30, what="the kill")
        held = cluster.secret_value(case.namespace, TARGET)
        operator.start()
        wait_for(
            lambda: (c := condition_after(cluster, case, "kill")) and c["status"] == "True",
            timeout_s=60,
            what="the renewal honoured by the restarted operator",
        )
        wait_for(lambda: truthful(cluster, oauth2_server, case), timeout_s=30, what="truth")
    issued = oauth2_server.issued_to(case.client_id)
    second = issued[1].value
    assert held in (first, second), "the Secret holds the old or the new token at the kill"
    verdict = watch.verdict({i.value: i for i in issued})
    assert verdict.clean, verdict
    # At most one more mint: when the kill came before the status said the renewal was done.
    assert len(issued) in (2, 3)
    assert token_secrets(cluster, case.namespace) == [TARGET]
    landed = "new" if held == second else "old"
    print(f"SIGKILL {kill_after_ms} ms after the answer: the Secret held the {landed} token")


def test_provider_down_longer_than_a_renewal_window(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, operator: OperatorProcess, case: Case
) -> None:
    """40-second tokens, renewal due 20 s before expiry; the provider is down from the
    first mint until 8 s before expiry (32 s, longer than the 20 s window)."""
    oauth2_server.clients[case.client_id].expires_in = 40
    apply(cluster, oauth2_server, case)
    with SecretWatch(cluster, case.namespace) as watch:
        wait_for(lambda: truthful(cluster, oauth2_server, case), timeout_s=30, what="token")
        first = oauth2_server.issued_to(case.client_id)[0]
        assert first.expires_at is not None
        oauth2_server.outage(case.client_id, seconds=first.expires_at - 8 - time.time())
        failing = cluster.wait_ready(case.namespace, case.name, "False", timeout_s=30)
        assert failing["reason"] == "ProviderUnavailable"
        assert cluster.secret_value(case.namespace, TARGET) == first.value
        wait_for(
            lambda: (
                len(oauth2_server.issued_to(case.client_id)) == 2
                and truthful(cluster, oauth2_server, case)
            ),
            timeout_s=40,
            what="recovery before the first token expired",
        )
    second = oauth2_server.issued_to(case.client_id)[1]
    assert second.issued_at < first.expires_at
    verdict = watch.verdict({first.value: first, second.value: second})
    assert verdict.clean, verdict
    # Backoff, not a hot loop: a handful of attempts over the 32 s outage.
    attempts = len(oauth2_server.requests_from(case.client_id))
    assert 3 <= attempts <= 12, attempts


def expired_jwt() -> str:
    return jwt.encode({"sub": "x", "exp": int(time.time()) - 60}, SIGNING_KEY, algorithm="HS256")


def token_json(value: str = "t" * 40, expires_in: int = 3600) -> dict[str, Any]:
    return {"access_token": value, "token_type": "Bearer", "expires_in": expires_in}


BAD_ANSWERS: dict[str, tuple[Response | None, float, str]] = {
    # case: (answer, latency in seconds, the Ready=False reason expected)
    "slower than the provider timeout": (None, 4.0, "ProviderUnavailable"),
    "an HTML error page": (
        Response(502, b"<html><body>Bad Gateway</body></html>", {"Content-Type": "text/html"}),
        0.0,
        "ProviderUnavailable",
    ),
    "an HTML page with 200": (
        Response(200, b"<html><body>Sign in</body></html>", {"Content-Type": "text/html"}),
        0.0,
        "InvalidResponse",
    ),
    "malformed JSON": (Response(200, b'{"access_token": "abc",, }'), 0.0, "InvalidResponse"),
    "truncated JSON": (Response(200, token_json(), truncate_at=25), 0.0, "ProviderUnavailable"),
    "a 50 MB body": (
        Response(200, b'{"access_token": "' + b"a" * 50_000_000 + b'"}'),
        0.0,
        "ProviderUnavailable",
    ),
    "a JSON array": (Response(200, [token_json()]), 0.0, "InvalidResponse"),
    "200 without access_token": (
        Response(200, {"token_type": "Bearer", "expires_in": 3600}),
        0.0,
        "InvalidResponse",
    ),
    "access_token of the wrong type": (
        Response(200, {"access_token": 12345, "expires_in": 3600}),
        0.0,
        "InvalidResponse",
    ),
    "a token already expired": (
        Response(200, {"access_token": expired_jwt(), "token_type": "Bearer"}),
        0.0,
        "TokenExpired",
    ),
    "expires_in of 1 s": (Response(200, token_json(expires_in=1)), 0.0, "TokenExpired"),
}


@pytest.mark.parametrize("what", list(BAD_ANSWERS))
def test_bad_answers_keep_the_last_good_token(
    cluster: Cluster,
    oauth2_server: FakeOAuth2Server,
    operator: OperatorProcess,
    case: Case,
    what: str,
) -> None:
    answer, latency, reason = BAD_ANSWERS[what]
    apply(cluster, oauth2_server, case)
    wait_for(lambda: truthful(cluster, oauth2_server, case), timeout_s=30, what="first token")
    good = cluster.secret_value(case.namespace, TARGET)

    oauth2_server.misbehave(case.client_id, answer, latency_s=latency)
    asked_at = time.time()
    request_renewal(cluster, case, "bad")
    condition = wait_for(
        lambda: (c := condition_after(cluster, case, "bad")) and c["status"] == "False" and c,
        timeout_s=30,
        what=f"Ready=False after {what}",
    )
    assert condition["reason"] == reason, condition
    assert "next attempt at" in condition["message"]
    assert cluster.secret_value(case.namespace, TARGET) == good
    status = cluster.token(case.namespace, case.name)["status"]
    next_try = datetime.fromisoformat(status["renewalTime"].replace("Z", "+00:00"))
    # Not a hot loop: the next attempt is ahead, and the provider was asked no more often.
    assert next_try.timestamp() > asked_at
    requests = [r for r in oauth2_server.requests_from(case.client_id) if r.at >= asked_at]
    assert len(requests) <= status["failedAttempts"] + 1
    assert operator.running()

    oauth2_server.misbehave(case.client_id)
    request_renewal(cluster, case, "good")
    wait_for(
        lambda: (c := condition_after(cluster, case, "good")) and c["status"] == "True",
        timeout_s=30,
        what="recovery",
    )
    wait_for(lambda: truthful(cluster, oauth2_server, case), timeout_s=30, what="truth")
    assert cluster.secret_value(case.namespace, TARGET) != good
    assert token_secrets(cluster, case.namespace) == [TARGET]


def test_json_under_a_wrong_content_type_is_accepted(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, operator: OperatorProcess, case: Case
) -> None:
    """Providers do label JSON text/plain or text/html; the body decides, not the label."""
    issued = oauth2_server.issue(case.client_id, lifetime_s=3600)
    body = token_json(issued.value)
    oauth2_server.misbehave(case.client_id, Response(200, body, {"Content-Type": "text/plain"}))
    apply(cluster, oauth2_server, case)
    wait_for(lambda: truthful(cluster, oauth2_server, case), timeout_s=30, what="the token")
    assert cluster.secret_value(case.namespace, TARGET) == issued.value
