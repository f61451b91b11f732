"""The ProviderToken lifecycle on a real API server, with a real OAuth2 server on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

import pytest

from fakes.oauth2_server import FakeOAuth2Server
from support.objects import Cluster, provider_token
from support.operator import OperatorProcess
from support.waiting import wait_for
from tokensync.runtime import _DIGEST_KEY_FIELD


@dataclass
class Subject:
    namespace: str
    name: str
    client_id: str
    secret: str
    target: str = "api-token"
    credentials: str = "oauth-credentials"


@pytest.fixture
def subject(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, operator: OperatorProcess
) -> Subject:
    """A namespace, a client registered at the fake, its credentials Secret."""
    namespace = cluster.namespace("op")
    client_id = f"client-{uuid.uuid4().hex[:8]}"
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    oauth2_server.add_client(client_id, secret, expires_in=3600)
    cluster.credentials(
        namespace, "oauth-credentials", {"clientId": client_id, "clientSecret": secret}
    )
    return Subject(namespace=namespace, name="api", client_id=client_id, secret=secret)


def oauth2_block(server: FakeOAuth2Server, **extra: object) -> dict[str, object]:
    return {"oauth2": {"tokenUrl": server.token_url, **extra}}


def apply_token(
    cluster: Cluster, server: FakeOAuth2Server, subject: Subject, **kwargs: object
) -> None:
    provider = kwargs.pop("provider", None) or oauth2_block(server)
    cluster.apply(
        provider_token(
            subject.name,
            namespace=subject.namespace,
            provider=provider,  # type: ignore[arg-type]
            credentials=subject.credentials,
            target=subject.target,
            **kwargs,  # type: ignore[arg-type]
        )
    )


def latest_issued(server: FakeOAuth2Server, subject: Subject) -> str | None:
    issued = server.issued_to(subject.client_id)
    return issued[-1].value if issued else None


def wait_ready(
    cluster: Cluster, subject: Subject, status: str = "True", timeout_s: float = 20
) -> dict[str, object]:
    return cluster.wait_ready(subject.namespace, subject.name, status, timeout_s)


def first_token(cluster: Cluster, subject: Subject) -> str:
    return wait_for(
        lambda: cluster.secret_value(subject.namespace, subject.target),
        timeout_s=30,
        what=f"the first token in {subject.namespace}/{subject.target}",
    )


def new_token(cluster: Cluster, subject: Subject, old: str, why: str) -> str:
    return wait_for(
        lambda: (v := cluster.secret_value(subject.namespace, subject.target)) != old and v,
        timeout_s=10,
        what=f"a new token after {why}",
    )


def test_apply_yields_secret_promptly(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, subject: Subject
) -> None:
    apply_token(cluster, oauth2_server, subject)
    value = wait_for(
        lambda: cluster.secret_value(subject.namespace, subject.target),
        timeout_s=60,
        what="the target Secret",
    )
    seen_at = time.time()
    issued = oauth2_server.issued_to(subject.client_id)
    assert [i.value for i in issued] == [value]
    # Measured against the moment the fake answered (the operator was already running).
    assert seen_at - issued[0].issued_at < 1.0, seen_at - issued[0].issued_at

    secret = cluster.secret(subject.namespace, subject.target)
    assert secret.metadata.labels["app.kubernetes.io/managed-by"] == "tokensync"
    assert secret.metadata.labels["tokensync.dev/role"] == "token"
    owner = secret.metadata.owner_references[0]
    body = cluster.token(subject.namespace, subject.name)
    assert (owner.kind, owner.name, owner.uid, owner.controller) == (
        "ProviderToken",
        subject.name,
        body["metadata"]["uid"],
        True,
    )
    annotations = secret.metadata.annotations
    assert annotations["tokensync.dev/credentials-digest"].startswith("hmac-sha256:")
    assert subject.secret not in str(annotations)

    condition = wait_ready(cluster, subject)
    status = body_status = cluster.token(subject.namespace, subject.name)["status"]
    assert condition["reason"] == "Minted"
    assert status["observedGeneration"] == body["metadata"]["generation"]
    assert status["provider"] == "oauth2"
    expires = datetime.fromisoformat(body_status["expiresAt"].replace("Z", "+00:00"))
    renews = datetime.fromisoformat(body_status["renewalTime"].replace("Z", "+00:00"))
    assert abs(expires.timestamp() - issued[0].expires_at) < 2  # type: ignore[operator]
    assert renews < expires
    assert annotations["tokensync.dev/expires-at"] == body_status["expiresAt"]

    request = oauth2_server.requests_from(subject.client_id)[0]
    assert request.method == "POST"
    assert request.headers["authorization"].startswith("Basic ")
    assert b"grant_type=client_credentials" in request.body
    assert b"client_secret" not in request.body

    wait_for(
        lambda: [
            e for e in cluster.events(subject.namespace, subject.name) if e.reason == "Minted"
        ],
        timeout_s=10,
        what="a Minted event",
    )
    creds = cluster.secret(subject.namespace, subject.credentials)
    assert creds.metadata.labels["tokensync.dev/role"] == "credentials"


def test_renews_before_each_expiry_and_never_holds_an_expired_token(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, subject: Subject, operator: OperatorProcess
) -> None:
    oauth2_server.clients[subject.client_id].expires_in = 6
    apply_token(cluster, oauth2_server, subject)
    seen: list[str] = []
    deadline = time.time() + 40
    while len(seen) < 4 and time.time() < deadline:
        value = cluster.secret_value(subject.namespace, subject.target)
        now = time.time()
        if value is not None:
            issued = {i.value: i for i in oauth2_server.issued_to(subject.client_id)}
            assert issued[value].expires_at > now, "the Secret held an expired token"  # type: ignore[operator]
            if not seen or seen[-1] != value:
                seen.append(value)
        time.sleep(0.1)
    assert len(seen) >= 4, f"only {len(seen)} distinct tokens within 40s"
    # Every write came with a new token: no renewal rewrote the one the Secret held.
    logged = operator.logs().count(f"minted {subject.namespace}/{subject.name} ")
    issued = len(oauth2_server.issued_to(subject.client_id))
    assert issued <= logged <= issued + 1  # the last one may be logged after we counted
    events = [e.reason for e in cluster.events(subject.namespace, subject.name)]
    # Scheduled renewals of a healthy token are quiet: one Minted event, not one per round.
    assert events.count("Minted") == 1


def test_client_secret_post(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, subject: Subject
) -> None:
    oauth2_server.clients[subject.client_id].auth_method = "client_secret_post"
    apply_token(
        cluster,
        oauth2_server,
        subject,
        provider=oauth2_block(oauth2_server, clientAuth="client_secret_post", scope="read write"),
    )
    wait_ready(cluster, subject)
    request = oauth2_server.requests_from(subject.client_id)[-1]
    assert "authorization" not in request.headers
    assert b"client_secret=" in request.body and b"scope=read+write" in request.body


def test_a_token_that_expired_in_an_outage_is_fresh_seconds_after_the_provider_returns(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, subject: Subject
) -> None:
    """Issue 16 as a user met it: a 12 s token, its provider down 7.5 s from the renewal
    on. The token expires during the outage; the next attempt used to come a minute
    later. Now the Secret holds a fresh token within seconds of the provider's return."""
    oauth2_server.clients[subject.client_id].expires_in = 12
    apply_token(cluster, oauth2_server, subject)
    first = first_token(cluster, subject)
    minted_at = oauth2_server.issued_to(subject.client_id)[-1].issued_at
    # Renewal is due about 6 s after the mint; down from then until 13.5 s.
    back_at = minted_at + 13.5
    oauth2_server.outage(subject.client_id, seconds=back_at - time.time())
    expired = wait_ready(cluster, subject, status="False", timeout_s=20)
    assert expired["reason"] == "ProviderUnavailable"
    fresh = wait_for(
        lambda: (v := cluster.secret_value(subject.namespace, subject.target)) != first and v,
        timeout_s=30,
        what="a fresh token after the outage",
    )
    recovered_in = time.time() - back_at
    issued = oauth2_server.issued_to(subject.client_id)
    assert fresh == issued[-1].value
    # The urgent interval is 2-6 s; the rest is the mint, the write and this poll.
    assert recovered_in <= 10, f"fresh token {recovered_in:.1f} s after the provider returned"
    requests = oauth2_server.requests_from(subject.client_id)
    during = [r for r in requests if minted_at < r.at < back_at]
    # The renewal, then one per 2 s at most, and one more aimed 1 s before expiry
    # (timing.EXPIRY_LEAD): the last 2 s before expiry may hold two attempts 1 s apart.
    # The bound predates that attempt and failed about one run in three without it.
    assert len(during) <= 1 + 7.5 / 2 + 1


def test_outage_keeps_last_good_token_then_recovers(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, subject: Subject
) -> None:
    oauth2_server.clients[subject.client_id].expires_in = 20
    apply_token(cluster, oauth2_server, subject)
    first = first_token(cluster, subject)
    minted_at = oauth2_server.issued_to(subject.client_id)[0].issued_at
    # Renewal is due about 10 s after the mint; the provider is down until 15 s.
    oauth2_server.outage(subject.client_id, seconds=15 - (time.time() - minted_at))
    failing = wait_ready(cluster, subject, status="False", timeout_s=20)
    assert failing["reason"] == "ProviderUnavailable"
    # Ten seconds or less of the token's life left: attempts every few seconds.
    assert "the last good token stays in the Secret until" in str(failing["message"])
    assert "trying again every 2-6 s" in str(failing["message"])
    assert cluster.secret_value(subject.namespace, subject.target) == first
    status = cluster.token(subject.namespace, subject.name)["status"]
    assert status["failedAttempts"] >= 1
    wait_ready(cluster, subject, status="True", timeout_s=20)
    second = cluster.secret_value(subject.namespace, subject.target)
    assert second != first
    issued = {i.value: i for i in oauth2_server.issued_to(subject.client_id)}
    assert issued[second].issued_at < issued[first].expires_at  # type: ignore[operator]
    reasons = [e.reason for e in cluster.events(subject.namespace, subject.name)]
    assert reasons.count("MintFailed") == 1


def test_spec_change_mints_again_promptly(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, subject: Subject
) -> None:
    apply_token(cluster, oauth2_server, subject)
    first = first_token(cluster, subject)
    apply_token(
        cluster, oauth2_server, subject, provider=oauth2_block(oauth2_server, scope="admin")
    )
    second = new_token(cluster, subject, first, "the spec changed")
    assert second == latest_issued(oauth2_server, subject)
    assert b"scope=admin" in oauth2_server.requests_from(subject.client_id)[-1].body
    body = cluster.token(subject.namespace, subject.name)
    wait_for(
        lambda: (
            cluster.token(subject.namespace, subject.name)["status"]["observedGeneration"]
            == body["metadata"]["generation"]
        ),
        timeout_s=10,
        what="observedGeneration to follow the spec",
    )


def test_credentials_change_mints_again_promptly(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, subject: Subject
) -> None:
    apply_token(cluster, oauth2_server, subject)
    first = first_token(cluster, subject)
    rotated = f"rotated-{uuid.uuid4().hex}"
    oauth2_server.clients[subject.client_id].secret = rotated
    cluster.credentials(
        subject.namespace,
        subject.credentials,
        {"clientId": subject.client_id, "clientSecret": rotated},
    )
    new_token(cluster, subject, first, "the credentials changed")
    wait_for(
        lambda: (
            "CredentialsChanged"
            in [e.reason for e in cluster.events(subject.namespace, subject.name)]
        ),
        timeout_s=10,
        what="a CredentialsChanged event",
    )


def test_renew_annotation_mints_at_once(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, subject: Subject
) -> None:
    apply_token(cluster, oauth2_server, subject)
    first = first_token(cluster, subject)
    cluster.patch_token(
        subject.namespace, subject.name, {"metadata": {"annotations": {"tokensync.dev/renew": "1"}}}
    )
    new_token(cluster, subject, first, "the renew annotation")
    wait_for(
        lambda: (
            cluster.token(subject.namespace, subject.name)["status"].get("lastRenewRequest") == "1"
        ),
        timeout_s=10,
        what="the request to be recorded",
    )
    count = len(oauth2_server.issued_to(subject.client_id))
    # The same value again is no new request.
    cluster.patch_token(
        subject.namespace, subject.name, {"metadata": {"labels": {"touched": "yes"}}}
    )
    cluster.patch_token(
        subject.namespace, subject.name, {"metadata": {"annotations": {"tokensync.dev/renew": "2"}}}
    )
    wait_for(
        lambda: (
            cluster.token(subject.namespace, subject.name)["status"].get("lastRenewRequest") == "2"
        ),
        timeout_s=10,
        what="the second request to be honoured",
    )
    # The label edit in between (same annotation value) caused no mint of its own.
    assert len(oauth2_server.issued_to(subject.client_id)) == count + 1


def test_deleted_or_edited_secret_is_restored(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, subject: Subject
) -> None:
    apply_token(cluster, oauth2_server, subject)
    first = first_token(cluster, subject)
    cluster.core.delete_namespaced_secret(subject.target, subject.namespace)
    restored = wait_for(
        lambda: cluster.secret_value(subject.namespace, subject.target),
        timeout_s=10,
        what="restore after delete",
    )
    # The operator still holds the valid token it wrote: no new mint is needed.
    assert restored == first
    assert len(oauth2_server.issued_to(subject.client_id)) == 1
    cluster.core.patch_namespaced_secret(
        subject.target,
        subject.namespace,
        {"data": {"token": base64.b64encode(b"tampered").decode()}},
    )
    wait_for(
        lambda: cluster.secret_value(subject.namespace, subject.target) == first,
        timeout_s=10,
        what="restore after an edit",
    )
    wait_for(
        lambda: (
            [e.reason for e in cluster.events(subject.namespace, subject.name)].count(
                "SecretRestored"
            )
            >= 2
        ),
        timeout_s=10,
        what="a SecretRestored event for each restore",
    )


def test_deleting_the_provider_token_deletes_its_secret(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, subject: Subject
) -> None:
    apply_token(cluster, oauth2_server, subject)
    first_token(cluster, subject)
    cluster.delete_token(subject.namespace, subject.name)
    wait_for(
        lambda: cluster.secret(subject.namespace, subject.target) is None,
        timeout_s=60,
        what="the garbage collector to delete the target Secret",
    )
    assert cluster.secret(subject.namespace, subject.credentials) is not None


def test_second_token_naming_the_same_target_is_refused(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, subject: Subject
) -> None:
    apply_token(cluster, oauth2_server, subject)
    first = first_token(cluster, subject)
    intruder = Subject(subject.namespace, "intruder", subject.client_id, subject.secret)
    apply_token(cluster, oauth2_server, intruder)
    refused = wait_ready(cluster, intruder, status="False")
    assert refused["reason"] == "TargetConflict"
    assert subject.target in refused["message"]
    assert cluster.secret_value(subject.namespace, subject.target) == first
    owner = cluster.secret(subject.namespace, subject.target).metadata.owner_references[0]
    assert owner.name == subject.name


def test_existing_unmanaged_secret_is_not_overwritten(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, subject: Subject
) -> None:
    cluster.core.create_namespaced_secret(
        subject.namespace, {"metadata": {"name": subject.target}, "stringData": {"token": "mine"}}
    )
    apply_token(cluster, oauth2_server, subject)
    refused = wait_ready(cluster, subject, status="False")
    assert refused["reason"] == "TargetConflict"
    assert cluster.secret_value(subject.namespace, subject.target) == "mine"


def test_invalid_credentials_reported_and_retried_slowly(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, subject: Subject
) -> None:
    cluster.credentials(
        subject.namespace,
        subject.credentials,
        {"clientId": subject.client_id, "clientSecret": "wrong"},
    )
    apply_token(cluster, oauth2_server, subject)
    refused = wait_ready(cluster, subject, status="False")
    assert refused["reason"] == "InvalidCredentials"
    assert "wrong" not in refused["message"]
    attempts = len(oauth2_server.requests_from(subject.client_id))
    # Fixing the credentials is noticed at once, long before the slow retry is due.
    cluster.credentials(
        subject.namespace,
        subject.credentials,
        {"clientId": subject.client_id, "clientSecret": subject.secret},
    )
    wait_ready(cluster, subject, status="True", timeout_s=15)
    assert len(oauth2_server.requests_from(subject.client_id)) == attempts + 1


def test_missing_credentials_then_created(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, subject: Subject
) -> None:
    subject.credentials = "not-yet"
    apply_token(cluster, oauth2_server, subject)
    refused = wait_ready(cluster, subject, status="False")
    assert refused["reason"] == "CredentialsNotFound"
    cluster.credentials(
        subject.namespace,
        "not-yet",
        {"clientId": subject.client_id, "clientSecret": subject.secret},
    )
    wait_ready(cluster, subject, status="True", timeout_s=30)


def test_endpoint_outside_the_allowlist_is_refused_without_a_request(
    cluster: Cluster, subject: Subject, oauth2_server: FakeOAuth2Server
) -> None:
    with FakeOAuth2Server() as elsewhere:
        elsewhere.add_client(subject.client_id, subject.secret)
        apply_token(cluster, oauth2_server, subject, provider=oauth2_block(elsewhere))
        refused = wait_ready(cluster, subject, status="False")
        assert refused["reason"] == "EndpointNotAllowed"
        assert "--allowed-hosts" in refused["message"]
        assert elsewhere.requests == []


def test_restart_does_not_mint_valid_tokens(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, subject: Subject, operator: OperatorProcess
) -> None:
    oauth2_server.clients[subject.client_id].expires_in = 120
    apply_token(cluster, oauth2_server, subject)
    wait_ready(cluster, subject)
    before = len(oauth2_server.issued_to(subject.client_id))
    operator.kill()
    operator.start()
    # A fresh ProviderToken proves the new process is watching and has worked its queue.
    probe = Subject(
        subject.namespace, "probe", subject.client_id, subject.secret, target="probe-token"
    )
    apply_token(cluster, oauth2_server, probe)
    wait_ready(cluster, probe, timeout_s=60)
    assert len(oauth2_server.issued_to(subject.client_id)) == before + 1  # the probe's only


def test_digests_on_the_secret_are_keyed_not_plain_hashes(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, subject: Subject
) -> None:
    """Someone who may read the annotations but not the key cannot test guesses offline."""
    apply_token(cluster, oauth2_server, subject)
    value = first_token(cluster, subject)
    annotations = cluster.secret(subject.namespace, subject.target).metadata.annotations
    key_secret = cluster.secret("tokensync-system", "tokensync-digest-key")
    key = base64.b64decode(base64.b64decode(key_secret.data[_DIGEST_KEY_FIELD]))
    assert len(key) >= 32

    def keyed(text: str) -> str:
        return "hmac-sha256:" + hmac.new(key, text.encode(), hashlib.sha256).hexdigest()

    credentials = {"clientId": subject.client_id, "clientSecret": subject.secret}
    canonical = json.dumps(credentials, sort_keys=True, separators=(",", ":"))
    assert annotations["tokensync.dev/token-digest"] == keyed(value)
    assert annotations["tokensync.dev/credentials-digest"] == keyed(canonical)
    plain = {hashlib.sha256(t.encode()).hexdigest() for t in (value, canonical, subject.secret)}
    assert not any(p in str(annotations) for p in plain)
