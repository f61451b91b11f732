"""The fake identity provider itself: it must refuse what a real one refuses.

The operator's federation, mTLS and revocation tests prove something only if the fake
can say no: a ServiceAccount token is verified against the suite's control plane's real
JWKS (a forged, misdirected, foreign or expired one is refused), a TLS client without the
right certificate is turned away, and a revoked token stops working.
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from fakes.base import ServerTls
from fakes.oauth2_server import JWT_BEARER, JWT_TOKEN_TYPE, TOKEN_EXCHANGE, FakeOAuth2Server
from support.cluster import OPERATOR_ACCOUNT, OPERATOR_NAMESPACE
from support.grants import (
    SERVICE_ACCOUNT_TOKENS_ROLE,
    create_service_account,
    federated_identity,
    grant_service_account_tokens,
    service_account_subject,
    service_account_token,
    withdraw_grant,
)
from support.tls import CertificateAuthority, KeyPair
from support.waiting import wait_for
from tokensync_dev.devcluster.cluster import ControlPlane

AUDIENCE = "https://idp.test/federation"
ACCOUNT = "workload"


@pytest.fixture(scope="module")
def namespace(control_plane: ControlPlane) -> str:
    name = f"fed-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name)
    create_service_account(control_plane, name, ACCOUNT)
    create_service_account(control_plane, name, "intruder")
    return name


@pytest.fixture
def idp() -> Iterator[FakeOAuth2Server]:
    with FakeOAuth2Server() as server:
        yield server


def assertion_form(token: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": token,
        **extra,
    }


def refused(answer: httpx.Response, token: str, status: int = 401) -> str:
    """The error_description of a refusal, which must never quote the token."""
    assert answer.status_code == status, answer.text
    assert token not in answer.text
    body: dict[str, Any] = answer.json()
    assert body["error"] == ("invalid_client" if status == 401 else "invalid_grant")
    return str(body.get("error_description", ""))


def forge(token: str, *, kid: str | None) -> str:
    """The same claims, signed by a key of our own instead of the cluster's."""
    claims = jwt.decode(token, options={"verify_signature": False})
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, key, algorithm="RS256", headers=headers)


# --- ServiceAccount tokens as client assertions -------------------------------------------


def test_a_real_service_account_token_is_verified_and_accepted(
    control_plane: ControlPlane, namespace: str, idp: FakeOAuth2Server
) -> None:
    identity = federated_identity(control_plane, namespace, ACCOUNT, AUDIENCE)
    idp.add_client("fed", federated=identity)
    token = service_account_token(control_plane, namespace, ACCOUNT, AUDIENCE)

    # No client_id: the assertion's sub names the client (Keycloak), then with it (Entra ID).
    first = httpx.post(idp.token_url, data=assertion_form(token))
    second = httpx.post(idp.token_url, data=assertion_form(token, client_id="fed"))

    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    assert [i.value for i in idp.issued_to("fed")] == [
        first.json()["access_token"],
        second.json()["access_token"],
    ]
    claims = idp.requests_from("fed")[0].assertion_claims
    assert claims is not None
    assert claims["iss"] == control_plane.service_account_issuer == control_plane.server
    assert claims["sub"] == service_account_subject(namespace, ACCOUNT)
    assert AUDIENCE in claims["aud"]
    assert idp.jwks_fetches == 1, "the issuer's keys are cached between requests"
    assert token in set(idp.every_secret()), "the leak scan looks for every assertion"


def test_a_self_signed_token_with_the_same_claims_is_refused(
    control_plane: ControlPlane, namespace: str, idp: FakeOAuth2Server
) -> None:
    idp.add_client("fed", federated=federated_identity(control_plane, namespace, ACCOUNT, AUDIENCE))
    real = service_account_token(control_plane, namespace, ACCOUNT, AUDIENCE)
    real_kid = jwt.get_unverified_header(real)["kid"]

    same_kid = forge(real, kid=real_kid)
    assert "signature" in refused(
        httpx.post(idp.token_url, data=assertion_form(same_kid)), same_kid
    )
    assert idp.jwks_fetches == 1

    # A key id the issuer does not publish: fetched once more (a rotation?), then refused.
    other_kid = forge(real, kid="not-the-cluster-key")
    description = refused(httpx.post(idp.token_url, data=assertion_form(other_kid)), other_kid)
    assert "key" in description
    assert idp.jwks_fetches == 2
    assert idp.issued_to("fed") == []
    assert {same_kid, other_kid} <= set(idp.every_secret())


def test_a_token_for_another_audience_is_refused(
    control_plane: ControlPlane, namespace: str, idp: FakeOAuth2Server
) -> None:
    idp.add_client("fed", federated=federated_identity(control_plane, namespace, ACCOUNT, AUDIENCE))
    token = service_account_token(control_plane, namespace, ACCOUNT, "https://elsewhere.test")
    answer = httpx.post(idp.token_url, data=assertion_form(token, client_id="fed"))
    assert "aud" in refused(answer, token)
    # Default audience: the API server's own (what a pod's mounted token carries).
    api_token = control_plane.kubectl("create", "token", ACCOUNT, "-n", namespace).strip()
    answer = httpx.post(idp.token_url, data=assertion_form(api_token, client_id="fed"))
    assert "aud" in refused(answer, api_token)
    assert idp.issued_to("fed") == []


def test_a_token_of_another_service_account_is_refused(
    control_plane: ControlPlane, namespace: str, idp: FakeOAuth2Server
) -> None:
    idp.add_client("fed", federated=federated_identity(control_plane, namespace, ACCOUNT, AUDIENCE))
    token = service_account_token(control_plane, namespace, "intruder", AUDIENCE)
    # Named as the client: verified as it, and its sub is not the client's.
    answer = httpx.post(idp.token_url, data=assertion_form(token, client_id="fed"))
    assert "sub" in refused(answer, token)
    # Unnamed: no client has that subject.
    refused(httpx.post(idp.token_url, data=assertion_form(token)), token)
    assert idp.issued_to("fed") == []


def test_an_expired_token_is_refused(
    control_plane: ControlPlane, namespace: str, idp: FakeOAuth2Server
) -> None:
    idp.add_client("fed", federated=federated_identity(control_plane, namespace, ACCOUNT, AUDIENCE))
    token = service_account_token(control_plane, namespace, ACCOUNT, AUDIENCE)
    # TokenRequest's shortest lifetime is 10 minutes: the fake's clock moves instead.
    idp.clock_offset_s = 11 * 60
    answer = httpx.post(idp.token_url, data=assertion_form(token, client_id="fed"))
    assert "expired" in refused(answer, token)
    idp.clock_offset_s = 0
    assert httpx.post(idp.token_url, data=assertion_form(token)).status_code == 200


def test_a_federated_client_takes_no_secret_and_no_other_assertion_type(
    control_plane: ControlPlane, namespace: str, idp: FakeOAuth2Server
) -> None:
    idp.add_client("fed", federated=federated_identity(control_plane, namespace, ACCOUNT, AUDIENCE))
    token = service_account_token(control_plane, namespace, ACCOUNT, AUDIENCE)
    wrong_type = assertion_form(token, client_assertion_type="urn:example:other")
    refused(httpx.post(idp.token_url, data=wrong_type), token)
    with_secret = httpx.post(
        idp.token_url, data={"grant_type": "client_credentials"}, auth=("fed", "")
    )
    assert with_secret.status_code == 401
    assert idp.issued_to("fed") == []


# --- ServiceAccount tokens as the subject of a token exchange ----------------------------


def test_a_service_account_token_is_exchanged_for_a_token_about_it(
    control_plane: ControlPlane, namespace: str, idp: FakeOAuth2Server
) -> None:
    identity = federated_identity(control_plane, namespace, ACCOUNT, AUDIENCE)
    idp.add_client("exchanger", "exchanger-secret", federated_subject=identity)
    token = service_account_token(control_plane, namespace, ACCOUNT, AUDIENCE)
    form = {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": token,
        "subject_token_type": JWT_TOKEN_TYPE,
        "audience": "downstream",
    }
    auth = ("exchanger", "exchanger-secret")

    answer = httpx.post(idp.token_url, data=form, auth=auth)

    assert answer.status_code == 200, answer.text
    issued = jwt.decode(answer.json()["access_token"], options={"verify_signature": False})
    assert issued["sub"] == identity.subject
    assert issued["client_id"] == "exchanger"
    recorded = idp.requests_from("exchanger")[-1]
    assert recorded.subject_claims and recorded.subject_claims["sub"] == identity.subject
    assert token in set(idp.every_secret())

    access_type = {**form, "subject_token_type": "urn:ietf:params:oauth:token-type:access_token"}
    assert httpx.post(idp.token_url, data=access_type, auth=auth).status_code == 400
    forged = forge(token, kid=jwt.get_unverified_header(token)["kid"])
    answer = httpx.post(idp.token_url, data={**form, "subject_token": forged}, auth=auth)
    assert "signature" in refused(answer, forged, status=400)
    assert len(idp.issued_to("exchanger")) == 1


# --- Mutual TLS (RFC 8705 tls_client_auth) --------------------------------------------------


class Mtls:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca = CertificateAuthority.create("fed-test-ca")
        self.ca_file = self.ca.write(directory / "ca.crt")
        server_cert, server_key = self.ca.server_cert().write(directory, "server")
        self.server = FakeOAuth2Server(
            tls=ServerTls(str(server_cert), str(server_key), client_ca_file=str(self.ca_file))
        )

    def client(self, pair: KeyPair | None, stem: str = "client") -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if pair is not None:
            cert, key = pair.write(self.directory, stem)
            context.load_cert_chain(str(cert), str(key))
        return httpx.Client(verify=context, timeout=5.0)

    def post(self, pair: KeyPair | None, path: str, form: dict[str, str]) -> httpx.Response:
        with self.client(pair) as http:
            return http.post(self.server.base_url + path, data=form)


@pytest.fixture
def mtls(tmp_path: Path) -> Iterator[Mtls]:
    setup = Mtls(tmp_path)
    with setup.server:
        setup.server.add_client("mtls-app", tls_subject="CN=mtls-app")
        yield setup


CLIENT_CREDENTIALS = {"grant_type": "client_credentials", "client_id": "mtls-app"}


def test_mtls_urls_are_https_and_discovery_names_both_endpoints(mtls: Mtls) -> None:
    server = mtls.server
    assert server.token_url.startswith("https://127.0.0.1:")
    with mtls.client(mtls.ca.client_cert("anyone")) as http:
        document = http.get(server.issuer + "/.well-known/openid-configuration").json()
    assert document["issuer"] == server.issuer
    assert document["token_endpoint"] == server.token_url
    assert document["revocation_endpoint"] == server.revocation_url
    assert "tls_client_auth" in document["token_endpoint_auth_methods_supported"]


def test_mtls_without_a_certificate_fails_the_handshake(mtls: Mtls) -> None:
    with pytest.raises(httpx.TransportError):
        mtls.post(None, "/oauth/token", CLIENT_CREDENTIALS)
    # The client may see the alert before the server's thread has noted why it sent it.
    wait_for(
        lambda: mtls.server.tls_failures == ["PEER_DID_NOT_RETURN_A_CERTIFICATE"],
        timeout_s=5,
        what="the server's refusal",
    )
    assert mtls.server.requests == []


def test_mtls_with_a_certificate_of_another_ca_fails_the_handshake(mtls: Mtls) -> None:
    stranger = CertificateAuthority.create("stranger-ca").client_cert("mtls-app")
    with pytest.raises(httpx.TransportError):
        mtls.post(stranger, "/oauth/token", CLIENT_CREDENTIALS)
    wait_for(
        lambda: mtls.server.tls_failures == ["CERTIFICATE_VERIFY_FAILED"],
        timeout_s=5,
        what="the server's refusal",
    )
    assert mtls.server.requests == []


def test_mtls_checks_the_subject_and_wants_the_client_id(mtls: Mtls) -> None:
    other = mtls.post(mtls.ca.client_cert("someone-else"), "/oauth/token", CLIENT_CREDENTIALS)
    assert other.status_code == 401
    assert "subject" in other.json()["error_description"]
    pair = mtls.ca.client_cert("mtls-app")
    anonymous = mtls.post(pair, "/oauth/token", {"grant_type": "client_credentials"})
    assert anonymous.status_code == 401
    with_secret = mtls.post(pair, "/oauth/token", {**CLIENT_CREDENTIALS, "client_secret": "x"})
    assert with_secret.status_code == 401
    assert mtls.server.issued_to("mtls-app") == []


def test_mtls_with_the_right_certificate_gets_a_token_and_a_rotation_shows(mtls: Mtls) -> None:
    first, rotated = mtls.ca.client_cert("mtls-app"), mtls.ca.client_cert("mtls-app")

    answers = [mtls.post(pair, "/oauth/token", CLIENT_CREDENTIALS) for pair in (first, rotated)]

    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    recorded = mtls.server.requests_from("mtls-app")
    assert [r.peer_fingerprint for r in recorded] == [first.fingerprint, rotated.fingerprint]
    assert recorded[0].peer_subject == "CN=mtls-app"
    assert len(mtls.server.issued_to("mtls-app")) == 2

    # Revocation authenticates the same way.
    access = answers[0].json()["access_token"]
    form = {"token": access, "token_type_hint": "access_token", "client_id": "mtls-app"}
    assert mtls.post(rotated, "/oauth/revoke", form).status_code == 200
    assert mtls.server.is_revoked(access)


# --- Revocation (RFC 7009) -----------------------------------------------------------------


def test_revocation_records_each_call_and_a_revoked_refresh_token_is_refused(
    idp: FakeOAuth2Server,
) -> None:
    idp.add_client("app", "app-secret", users={"alice": "wonderland"})
    idp.add_client("other", "other-secret")
    auth = ("app", "app-secret")
    password = {"grant_type": "password", "username": "alice", "password": "wonderland"}
    minted = httpx.post(idp.token_url, data=password, auth=auth).json()
    refresh, access = minted["refresh_token"], minted["access_token"]
    assert httpx.get(idp.issuer + "/.well-known/openid-configuration").json()[
        "revocation_endpoint"
    ] == (idp.revocation_url)

    def revoke(token: str, hint: str | None, who: tuple[str, str] = auth) -> int:
        form = {"token": token, **({"token_type_hint": hint} if hint else {})}
        return httpx.post(idp.revocation_url, data=form, auth=who).status_code

    # Down: the attempt is recorded, nothing is revoked.
    idp.revocation_outage(503)
    assert revoke(refresh, "refresh_token") == 503
    idp.revocation_outage(None)
    assert not idp.is_revoked(refresh)

    assert revoke(refresh, "access_token", who=("app", "wrong")) == 401
    assert revoke(refresh, "refresh_token", who=("other", "other-secret")) == 200
    assert not idp.is_revoked(refresh), "only the client it was issued to revokes it"
    assert revoke(refresh, "refresh_token") == 200
    assert revoke(access, "access_token") == 200
    assert revoke("never-issued-token", None) == 200

    assert [(r.client_id, r.token_type_hint, r.known, r.kind, r.revoked, r.status) for r in
            idp.revocations] == [
        ("app", "refresh_token", True, "refresh_token", False, 503),
        ("app", "access_token", True, "refresh_token", False, 401),
        ("other", "refresh_token", True, "refresh_token", False, 200),
        ("app", "refresh_token", True, "refresh_token", True, 200),
        ("app", "access_token", True, "access_token", True, 200),
        ("app", None, False, None, False, 200),
    ]  # fmt: skip
    assert idp.is_revoked(refresh) and idp.is_revoked(access)
    again = httpx.post(
        idp.token_url, data={"grant_type": "refresh_token", "refresh_token": refresh}, auth=auth
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert refresh in set(idp.every_secret()), "a revoked refresh token is still a secret"


def test_a_federated_client_revokes_with_a_service_account_token(
    control_plane: ControlPlane, namespace: str, idp: FakeOAuth2Server
) -> None:
    idp.add_client("fed", federated=federated_identity(control_plane, namespace, ACCOUNT, AUDIENCE))
    token = service_account_token(control_plane, namespace, ACCOUNT, AUDIENCE)
    access = httpx.post(idp.token_url, data=assertion_form(token)).json()["access_token"]
    form = {"token": access, "client_assertion_type": JWT_BEARER, "client_assertion": token}
    assert httpx.post(idp.revocation_url, data=form).status_code == 200
    forged = forge(token, kid=jwt.get_unverified_header(token)["kid"])
    refused(httpx.post(idp.revocation_url, data={**form, "client_assertion": forged}), forged)
    assert [(r.client_id, r.kind, r.revoked, r.status) for r in idp.revocations_by("fed")] == [
        ("fed", "access_token", True, 200),
        ("fed", "access_token", False, 401),
    ]


# --- The grant helpers the operator's tests use ---------------------------------------------


def test_the_grants_name_each_service_account_and_only_in_their_namespace(
    control_plane: ControlPlane, namespace: str
) -> None:
    operator = service_account_subject(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT)
    elsewhere = f"fed-other-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", elsewhere)

    def may(verb: str, resource: str, where: str, *extra: str) -> bool:
        answer = control_plane.kubectl(
            "auth", "can-i", verb, resource, "-n", where, f"--as={operator}", *extra, check=False
        )
        return answer.strip().splitlines()[0] == "yes"

    def may_token(account: str, where: str = namespace) -> bool:
        return may("create", f"serviceaccounts/{account}", where, "--subresource=token")

    def settled(probe: Callable[[], bool], what: str) -> None:
        # The authorizer reads RBAC from informer caches: a change shows within moments.
        wait_for(probe, timeout_s=10, what=what)

    assert not may_token(ACCOUNT)
    assert grant_service_account_tokens(control_plane, namespace, ACCOUNT) == [ACCOUNT]
    settled(lambda: may_token(ACCOUNT), "the token grant")
    assert not may_token("intruder") and not may_token(ACCOUNT, elsewhere)
    # A second account joins the first; withdrawn, neither is granted.
    granted = grant_service_account_tokens(control_plane, namespace, "intruder")
    assert granted == ["intruder", ACCOUNT]
    settled(lambda: may_token("intruder"), "the second account's grant")
    assert may_token(ACCOUNT)
    withdraw_grant(control_plane, namespace, SERVICE_ACCOUNT_TOKENS_ROLE)
    settled(lambda: not may_token(ACCOUNT), "the withdrawal")
