"""No long-lived secret on the real control plane: a ServiceAccount token as the client's
proof (RFC 7523) or as the subject of a token exchange (RFC 8693), a client certificate on
the TLS connection (RFC 8705), and revocation on delete (RFC 7009).

The suite's operator runs as its ServiceAccount with deploy/rbac only; each namespace's
owner grants it tokens for one ServiceAccount (deploy/service-account-tokens/). The fake
identity provider verifies each assertion for real: the API server's JWKS from its
discovery document, ``iss``, ``aud``, ``sub``, expiry.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from fakes.oauth2_server import FakeOAuth2Server
from support.cluster import OPERATOR_ACCOUNT, OPERATOR_NAMESPACE
from support.grants import (
    create_service_account,
    federated_identity,
    grant_service_account_tokens,
    service_account_subject,
)
from support.objects import GROUP, PLURAL, VERSION, Cluster, provider_token
from support.operator import OperatorProcess
from support.tls import CertificateAuthority, KeyPair, MutualTls, tls_secret
from support.waiting import wait_for

ACCOUNT = "billing-client"
AUDIENCE = "https://idp.example.test/tokensync"
# What the fake's TLS server records when a client certificate's CA is not the one it
# trusts (ssl's reason for the failed handshake; tests/integration/test_fake_federation.py).
UNTRUSTED_CLIENT_CERTIFICATE = "CERTIFICATE_VERIFY_FAILED"


def secrets_in(cluster: Cluster, namespace: str) -> dict[str, dict[str, str]]:
    """Every Secret of the namespace, decoded."""
    return {
        s.metadata.name: {k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()}
        for s in cluster.core.list_namespaced_secret(namespace).items
    }


def renew(cluster: Cluster, namespace: str, name: str) -> None:
    value = uuid.uuid4().hex[:8]
    cluster.patch_token(
        namespace, name, {"metadata": {"annotations": {"tokensync.dev/renew": value}}}
    )


def failed_attempts(cluster: Cluster, namespace: str, name: str) -> int:
    status = (cluster.token(namespace, name) or {}).get("status") or {}
    return int(status.get("failedAttempts", 0))


def operator_may_request_token(cluster: Cluster, namespace: str, account: str) -> bool:
    """Whether the API server lets the operator's ServiceAccount request ``account``'s
    tokens now (what the operator's TokenRequest meets)."""
    operator = service_account_subject(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT)
    answer = cluster.plane.kubectl(
        "auth",
        "can-i",
        "create",
        f"serviceaccounts/{account}",
        "--subresource=token",
        "-n",
        namespace,
        f"--as={operator}",
        check=False,
    )
    return answer.strip().splitlines()[0] == "yes"


def grant_settled(cluster: Cluster, namespace: str, account: str) -> None:
    """The authorizer reads RBAC from informer caches: wait until the grant is in effect."""
    wait_for(
        lambda: operator_may_request_token(cluster, namespace, account),
        timeout_s=10,
        what=f"the operator's grant for {namespace}/{account}'s tokens to be in effect",
    )


def account_token(
    name: str, namespace: str, server: FakeOAuth2Server, audience: str = AUDIENCE, **oauth2: Any
) -> dict[str, Any]:
    block = {
        "tokenUrl": server.token_url,
        "clientAuth": "service_account",
        "serviceAccountRef": {"name": ACCOUNT, "audience": audience},
        **oauth2,
    }
    return provider_token(
        name,
        namespace=namespace,
        provider={"oauth2": block},
        credentials=None,
        target=f"{name}-token",
    )


@pytest.fixture
def granted(cluster: Cluster, operator: OperatorProcess) -> str:
    """A namespace whose owner made a ServiceAccount and granted the operator its tokens."""
    namespace = cluster.namespace("wid")
    create_service_account(cluster.plane, namespace, ACCOUNT)
    grant_service_account_tokens(cluster.plane, namespace, ACCOUNT)
    return namespace


def test_a_service_account_token_is_the_only_proof(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, granted: str
) -> None:
    namespace = granted
    client_id = f"wid-{uuid.uuid4().hex[:8]}"
    identity = federated_identity(cluster.plane, namespace, ACCOUNT, AUDIENCE)
    oauth2_server.add_client(client_id, federated=identity)
    # As Keycloak: no client_id in the request, the client found by the token's subject.
    cluster.apply(account_token("keyless", namespace, oauth2_server))
    cluster.wait_ready(namespace, "keyless")

    (request,) = oauth2_server.requests_from(client_id)
    claims = request.assertion_claims
    assert claims is not None, "the fake verified no assertion"
    assert claims["sub"] == service_account_subject(namespace, ACCOUNT)
    assert claims["iss"] == cluster.plane.service_account_issuer
    assert AUDIENCE in claims["aud"]
    # A TokenRequest of the shortest life the API server grants: ten minutes.
    assert claims["exp"] - claims["iat"] == 600
    assert "client_id" not in request.form
    assert "client_secret" not in request.form and "authorization" not in request.headers

    # Nothing of it is kept: the namespace holds the target Secret, and nothing else.
    stored = secrets_in(cluster, namespace)
    assert set(stored) == {"keyless-token"}
    (issued,) = [i.value for i in oauth2_server.issued_to(client_id)]
    assert stored["keyless-token"]["token"] == issued
    assert all(request.form["client_assertion"] not in v for v in stored["keyless-token"].values())

    # As Entra ID: client_id named in the spec, sent beside the assertion.
    spec = account_token("named", namespace, oauth2_server, clientId=client_id)
    cluster.apply(spec)
    cluster.wait_ready(namespace, "named")
    assert oauth2_server.requests_from(client_id)[-1].form["client_id"] == client_id

    # Each mint asks for a fresh token: never the one before.
    renew(cluster, namespace, "keyless")
    wait_for(lambda: len(oauth2_server.requests_from(client_id)) == 3, timeout_s=20, what="renewal")
    assertions = {r.form["client_assertion"] for r in oauth2_server.requests_from(client_id)}
    assert len(assertions) == 3


def test_without_the_grant_no_token_is_obtained_and_the_reason_says_what_to_grant(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, operator: OperatorProcess
) -> None:
    namespace = cluster.namespace("wid-nogrant")
    create_service_account(cluster.plane, namespace, ACCOUNT)
    client_id = f"wid-{uuid.uuid4().hex[:8]}"
    oauth2_server.add_client(
        client_id, federated=federated_identity(cluster.plane, namespace, ACCOUNT, AUDIENCE)
    )
    cluster.apply(account_token("ungranted", namespace, oauth2_server, clientId=client_id))
    condition = cluster.wait_ready(namespace, "ungranted", status="False")
    assert condition["reason"] == "ServiceAccountTokenNotPermitted"
    for named in (ACCOUNT, namespace, "create", "serviceaccounts/token", "role.yaml"):
        assert named in condition["message"]
    assert oauth2_server.requests_from(client_id) == []
    assert cluster.secret(namespace, "ungranted-token") is None

    # Granted for another ServiceAccount only: still refused, by the API server itself.
    # Attempts counted before that grant is in effect prove nothing: the count is read
    # once it is, and an attempt after it must add one.
    grant_service_account_tokens(cluster.plane, namespace, "someone-else")
    grant_settled(cluster, namespace, "someone-else")
    assert not operator_may_request_token(cluster, namespace, ACCOUNT)
    before = failed_attempts(cluster, namespace, "ungranted")
    assert before >= 1
    renew(cluster, namespace, "ungranted")
    wait_for(
        lambda: failed_attempts(cluster, namespace, "ungranted") > before,
        timeout_s=20,
        what=f"a refused attempt after the other account's grant (failedAttempts > {before})",
    )
    refused = cluster.ready(namespace, "ungranted")
    assert refused is not None and refused["status"] == "False", refused
    assert refused["reason"] == "ServiceAccountTokenNotPermitted", refused
    assert ACCOUNT in refused["message"], refused
    assert oauth2_server.requests_from(client_id) == []
    assert cluster.secret(namespace, "ungranted-token") is None

    # The owner grants it: the next attempt mints.
    grant_service_account_tokens(cluster.plane, namespace, ACCOUNT)
    grant_settled(cluster, namespace, ACCOUNT)
    renew(cluster, namespace, "ungranted")
    cluster.wait_ready(namespace, "ungranted", timeout_s=30)
    assert len(oauth2_server.requests_from(client_id)) == 1


def test_a_wrong_audience_is_refused_by_the_issuer_and_the_apis_own_is_never_asked(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, granted: str
) -> None:
    namespace = granted
    client_id = f"wid-{uuid.uuid4().hex[:8]}"
    oauth2_server.add_client(
        client_id, federated=federated_identity(cluster.plane, namespace, ACCOUNT, AUDIENCE)
    )
    elsewhere = "https://other-idp.example.test"
    cluster.apply(
        account_token("wrong-aud", namespace, oauth2_server, elsewhere, clientId=client_id)
    )
    condition = cluster.wait_ready(namespace, "wrong-aud", status="False")
    assert condition["reason"] == "InvalidCredentials"
    (refused,) = oauth2_server.requests_from(client_id)
    assert refused.assertion_claims is None  # sent, checked, refused: never accepted

    # The API server's own audience (the issuer's URL here) would make a key to the
    # cluster: the operator never requests it.
    api = cluster.plane.service_account_issuer
    cluster.apply(account_token("api-aud", namespace, oauth2_server, api, clientId=client_id))
    condition = cluster.wait_ready(namespace, "api-aud", status="False")
    assert condition["reason"] == "InvalidSpec"
    assert "Kubernetes API" in condition["message"]
    assert len(oauth2_server.requests_from(client_id)) == 1


def test_a_service_account_token_as_the_subject_of_a_token_exchange(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, granted: str
) -> None:
    namespace = granted
    client_id, secret = f"wid-{uuid.uuid4().hex[:8]}", f"s-{uuid.uuid4().hex}"
    identity = federated_identity(cluster.plane, namespace, ACCOUNT, AUDIENCE)
    oauth2_server.add_client(client_id, secret, federated_subject=identity)
    cluster.credentials(namespace, "client", {"clientId": client_id, "clientSecret": secret})
    block = {
        "tokenUrl": oauth2_server.token_url,
        "grantType": "token_exchange",
        "subjectTokenSource": "serviceAccount",
        "serviceAccountRef": {"name": ACCOUNT, "audience": AUDIENCE},
    }
    cluster.apply(
        provider_token(
            "exchanged",
            namespace=namespace,
            provider={"oauth2": block},
            credentials="client",
            target="exchanged-token",
        )
    )
    cluster.wait_ready(namespace, "exchanged")
    (request,) = oauth2_server.requests_from(client_id)
    assert request.form["subject_token_type"] == "urn:ietf:params:oauth:token-type:jwt"
    assert request.subject_claims["sub"] == service_account_subject(namespace, ACCOUNT)


def test_without_a_credentials_secret_the_api_server_refuses_what_needs_one(
    cluster: Cluster, oauth2_server: FakeOAuth2Server
) -> None:
    namespace = cluster.namespace("wid-crd")
    needs_secret = provider_token(
        "secretless",
        namespace=namespace,
        provider={"oauth2": {"tokenUrl": oauth2_server.token_url}},
        credentials=None,
        target="t",
    )
    assert "spec.credentialsRef is needed" in cluster.apply_refused(needs_secret)
    orphan_ref = account_token("half", namespace, oauth2_server, clientAuth="client_secret_post")
    assert "serviceAccountRef goes with clientAuth service_account" in cluster.apply_refused(
        orphan_ref
    )


# Mutual TLS (RFC 8705 tls_client_auth): the fake requires a client certificate from the
# test's own CA and checks its subject; the operator has no other proof to give.


@pytest.fixture
def mtls_namespace(cluster: Cluster, operator: OperatorProcess) -> str:
    return cluster.namespace("mtls")


def client_pair(ca: CertificateAuthority, server: FakeOAuth2Server, name: str) -> KeyPair:
    pair = ca.client_cert(name)
    server.known_secrets |= pair.secret_values()  # the leak scan looks for the key too
    return pair


def put_tls_secret(cluster: Cluster, namespace: str, name: str, pair: KeyPair) -> None:
    body = tls_secret(name, pair)
    existing = cluster.secret(namespace, name)
    if existing is None:
        cluster.core.create_namespaced_secret(namespace, body)
    else:
        cluster.core.replace_namespaced_secret(name, namespace, body)


def mtls_token(
    name: str, namespace: str, server: FakeOAuth2Server, client_id: str
) -> dict[str, Any]:
    return provider_token(
        name,
        namespace=namespace,
        provider={
            "oauth2": {
                "tokenUrl": server.token_url,
                "clientAuth": "tls_client_auth",
                "clientId": client_id,
                "tlsSecretRef": {"name": f"{name}-tls"},
            }
        },
        credentials=None,
        target=f"{name}-token",
    )


def test_mutual_tls_presents_the_secrets_certificate_and_picks_up_its_rotation(
    cluster: Cluster, mutual_tls: MutualTls, mtls_namespace: str
) -> None:
    server, namespace = mutual_tls.server, mtls_namespace
    client_id = f"mtls-{uuid.uuid4().hex[:8]}"
    subject = f"CN={client_id}"
    server.add_client(client_id, tls_subject=subject)
    first = client_pair(mutual_tls.client_ca, server, client_id)
    put_tls_secret(cluster, namespace, "app-tls", first)
    cluster.apply(mtls_token("app", namespace, server, client_id))
    cluster.wait_ready(namespace, "app")
    (request,) = server.requests_from(client_id)
    assert request.peer_fingerprint == first.fingerprint
    assert request.peer_subject == subject
    assert "client_secret" not in request.form

    # The certificate is rotated in its Secret (as cert-manager does): the next mint
    # presents the new one.
    second = client_pair(mutual_tls.client_ca, server, client_id)
    put_tls_secret(cluster, namespace, "app-tls", second)
    renew(cluster, namespace, "app")
    wait_for(lambda: len(server.requests_from(client_id)) == 2, timeout_s=20, what="a second mint")
    assert server.requests_from(client_id)[-1].peer_fingerprint == second.fingerprint
    assert second.fingerprint != first.fingerprint
    cluster.wait_ready(namespace, "app")


def test_mutual_tls_is_required_and_checked(
    cluster: Cluster, mutual_tls: MutualTls, mtls_namespace: str
) -> None:
    server, namespace = mutual_tls.server, mtls_namespace
    client_id = f"mtls-{uuid.uuid4().hex[:8]}"
    server.add_client(client_id, tls_subject=f"CN={client_id}")

    # A certificate from a CA the server does not trust: no TLS connection at all.
    stranger = client_pair(CertificateAuthority.create("stranger-ca"), server, client_id)
    failures_before = len(server.tls_failures)
    put_tls_secret(cluster, namespace, "stranger-tls", stranger)
    cluster.apply(mtls_token("stranger", namespace, server, client_id))
    condition = cluster.wait_ready(namespace, "stranger", status="False")
    assert condition["reason"] == "ProviderUnavailable"
    # The server itself refused the handshake, for that reason only (not the operator
    # refusing the server). The client may see the alert before the server's thread has
    # noted why it sent it.
    refusals = wait_for(
        lambda: server.tls_failures[failures_before:],
        timeout_s=5,
        what="the server's refusal of the stranger's certificate",
    )
    assert set(refusals) == {UNTRUSTED_CLIENT_CERTIFICATE}, refusals
    assert server.requests_from(client_id) == []

    # The right CA, another subject: the server refuses the client.
    impostor = client_pair(mutual_tls.client_ca, server, "someone-else")
    put_tls_secret(cluster, namespace, "impostor-tls", impostor)
    cluster.apply(mtls_token("impostor", namespace, server, client_id))
    condition = cluster.wait_ready(namespace, "impostor", status="False")
    assert condition["reason"] == "InvalidCredentials"

    # No Secret, and a Secret that is not a certificate: named before anything is sent.
    cluster.apply(mtls_token("missing", namespace, server, client_id))
    condition = cluster.wait_ready(namespace, "missing", status="False")
    assert condition["reason"] == "ClientCertificateNotFound"
    cluster.credentials(namespace, "broken-tls", {"tls.crt": "not a certificate", "tls.key": "x"})
    cluster.apply(mtls_token("broken", namespace, server, client_id))
    condition = cluster.wait_ready(namespace, "broken", status="False")
    assert condition["reason"] == "InvalidClientCertificate"
    assert "not a certificate" not in condition["message"]
    # Only the stranger's handshakes failed (retried, the same way each time); the others
    # were refused after the handshake, or before any connection.
    refusals = server.tls_failures[failures_before:]
    assert set(refusals) == {UNTRUSTED_CLIENT_CERTIFICATE}, refusals


# Revocation on delete (RFC 7009).


@pytest.fixture
def revoking(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, operator: OperatorProcess
) -> Iterator[tuple[str, str]]:
    """A namespace and a password-grant client (so there is a refresh token to revoke)."""
    namespace = cluster.namespace("revoke")
    client_id, secret = f"rv-{uuid.uuid4().hex[:8]}", f"s-{uuid.uuid4().hex}"
    user, password = f"u-{uuid.uuid4().hex[:6]}", f"p-{uuid.uuid4().hex}"
    oauth2_server.add_client(client_id, secret, users={user: password})
    cluster.credentials(
        namespace,
        "creds",
        {"clientId": client_id, "clientSecret": secret, "username": user, "password": password},
    )
    yield namespace, client_id
    oauth2_server.revocation_outage(None)


def revoking_token(name: str, namespace: str, server: FakeOAuth2Server) -> dict[str, Any]:
    return provider_token(
        name,
        namespace=namespace,
        provider={
            "oauth2": {
                "tokenUrl": server.token_url,
                "grantType": "password",
                "revokeOnDelete": True,
                "revocationUrl": server.revocation_url,
            }
        },
        credentials="creds",
        target=f"{name}-token",
    )


def finalizers(cluster: Cluster, namespace: str, name: str) -> list[str]:
    body = cluster.token(namespace, name) or {}
    return list(body.get("metadata", {}).get("finalizers") or [])


def gone(cluster: Cluster, namespace: str, name: str) -> bool:
    return cluster.token(namespace, name) is None


def test_deletion_revokes_both_tokens_once_then_lets_go(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, revoking: tuple[str, str]
) -> None:
    namespace, client_id = revoking
    cluster.apply(revoking_token("revoked", namespace, oauth2_server))
    cluster.wait_ready(namespace, "revoked")
    assert "tokensync.dev/revoke-on-delete" in finalizers(cluster, namespace, "revoked")
    access = cluster.secret_value(namespace, "revoked-token")
    assert access is not None and not oauth2_server.is_revoked(access)

    cluster.delete_token(namespace, "revoked")
    wait_for(lambda: gone(cluster, namespace, "revoked"), timeout_s=30, what="the deletion")
    calls = oauth2_server.revocations_by(client_id)
    assert sorted(c.kind or "" for c in calls) == ["access_token", "refresh_token"]
    assert all(c.revoked and c.status == 200 for c in calls)
    assert oauth2_server.is_revoked(access)
    events = {e.reason: e.note for e in cluster.events(namespace, "revoked")}
    assert "Revoked" in events and access not in events["Revoked"]

    # Without revokeOnDelete the finalizer is never added, and a deletion revokes nothing.
    plain = revoking_token("plain", namespace, oauth2_server)
    del plain["spec"]["provider"]["oauth2"]["revokeOnDelete"]
    cluster.apply(plain)
    cluster.wait_ready(namespace, "plain")
    assert finalizers(cluster, namespace, "plain") == []
    plain_access = cluster.secret_value(namespace, "plain-token")
    assert plain_access is not None
    cluster.delete_token(namespace, "plain")
    wait_for(lambda: gone(cluster, namespace, "plain"), timeout_s=10, what="the plain deletion")
    # The operator has seen that deletion once it has acted on what its watch brings
    # after it: another ProviderToken in the namespace, made Ready.
    later = revoking_token("later", namespace, oauth2_server)
    del later["spec"]["provider"]["oauth2"]["revokeOnDelete"]
    cluster.apply(later)
    cluster.wait_ready(namespace, "later")
    assert len(oauth2_server.revocations_by(client_id)) == 2
    assert not oauth2_server.is_revoked(plain_access)
    assert [e.reason for e in cluster.events(namespace, "plain")].count("Revoked") == 0


def test_a_revocation_endpoint_that_is_down_does_not_block_the_deletion_for_long(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, revoking: tuple[str, str]
) -> None:
    namespace, client_id = revoking
    cluster.apply(revoking_token("stuck", namespace, oauth2_server))
    cluster.wait_ready(namespace, "stuck")
    oauth2_server.revocation_outage(503)
    cluster.delete_token(namespace, "stuck")
    # Held while it is retried (30 s from the deletion), then let go with an Event.
    wait_for(lambda: gone(cluster, namespace, "stuck"), timeout_s=60, what="the deletion")
    calls = oauth2_server.revocations_by(client_id)
    assert all(c.status == 503 for c in calls)
    # Tried again while the 30 s ran (not given up at the first 503), one every 3 s at most.
    assert 2 <= len(calls) <= 12
    assert calls[-1].at - calls[0].at >= 20
    reasons = [e.reason for e in cluster.events(namespace, "stuck")]
    assert "RevocationAbandoned" in reasons


def test_a_revocation_endpoint_outside_the_allowlist_is_refused_before_any_mint(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, revoking: tuple[str, str]
) -> None:
    namespace, client_id = revoking
    body = revoking_token("ssrf", namespace, oauth2_server)
    body["spec"]["provider"]["oauth2"]["revocationUrl"] = "https://169.254.169.254/revoke"
    cluster.apply(body)
    condition = cluster.wait_ready(namespace, "ssrf", status="False")
    assert condition["reason"] == "EndpointNotAllowed"
    assert oauth2_server.requests_from(client_id) == []
    # Not held: deleting it goes at once.
    cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "ssrf")
    wait_for(lambda: gone(cluster, namespace, "ssrf"), timeout_s=15, what="the deletion")


def test_a_namespace_holding_a_revoking_token_is_deleted_without_getting_stuck(
    cluster: Cluster,
    oauth2_server: FakeOAuth2Server,
    operator: OperatorProcess,
    revoking: tuple[str, str],
) -> None:
    """The namespace's deletion takes its RoleBindings and Secrets in the same sweep as its
    ProviderTokens: the finalizer must still come off (the operator's patch is cluster-wide
    for this), whether or not the tokens could still be revoked."""
    namespace, client_id = revoking
    cluster.apply(revoking_token("swept", namespace, oauth2_server))
    cluster.wait_ready(namespace, "swept")
    assert "tokensync.dev/revoke-on-delete" in finalizers(cluster, namespace, "swept")
    cluster.core.delete_namespace(namespace)

    def namespace_gone() -> bool:
        names = {n.metadata.name for n in cluster.core.list_namespace().items}
        return namespace not in names

    wait_for(namespace_gone, timeout_s=120, what=f"namespace {namespace} to be deleted")
    # Revoked if its Secrets were still there when the operator looked; never twice.
    calls = oauth2_server.revocations_by(client_id)
    kinds = [c.kind for c in calls]
    assert len(kinds) == len(set(kinds)), kinds
    assert set(kinds) <= {"refresh_token", "access_token"}, kinds
    # Which it was, its Event says; the namespace is terminating, so the API server
    # refuses that Event and the operator's log names it instead.
    said = re.compile(
        rf"event (Revoked|RevocationFailed|RevocationAbandoned) for {re.escape(namespace)}/swept "
    )
    outcome = wait_for(
        lambda: said.search(operator.logs()),
        timeout_s=15,
        what=f"the operator's word on revoking {namespace}/swept",
    ).group(1)
    if outcome == "Revoked":
        assert sorted(k or "" for k in kinds) == ["access_token", "refresh_token"], calls
        assert all(c.revoked and c.status == 200 for c in calls), calls
    elif outcome == "RevocationFailed":  # given up before asking: nothing sent
        assert kinds == [], (outcome, calls)
    else:  # given up after asking in vain
        assert not any(c.revoked for c in calls), (outcome, calls)
