"""A real Keycloak takes a Kubernetes ServiceAccount token as a client's only credential
(issue 18): Keycloak 26's federated client authentication against the suite's control plane.

What Keycloak 26.7.3 needs (its features client-auth-federated and
kubernetes-service-accounts are both on by default; nothing to enable or rebuild):

- the realm names the cluster as an identity provider: ``providerId: kubernetes`` with
  ``config.issuer`` = the API server's ``--service-account-issuer``. Keycloak finds it by the
  assertion's ``iss``, reads ``<issuer>/.well-known/openid-configuration`` and its
  ``jwks_uri`` anonymously over HTTPS it trusts (``--truststore-paths``: the cluster CA,
  support/keycloak.py ``KeycloakPlan.trust``), and checks the signature;
- the client has ``clientAuthenticatorType: federated-jwt`` and the attributes
  ``jwt.credential.issuer`` (the provider's alias) and ``jwt.credential.sub``
  (``system:serviceaccount:NS:NAME``): Keycloak finds the client by that pair, so the form
  need not name it (a ``client_id`` that names another client is refused);
- ``aud``: exactly one audience, the realm's issuer URL as the request reached Keycloak
  (``https://127.0.0.1:<port>/realms/<realm>``); not the token endpoint;
- the token may live at most an hour (the TokenRequest minimum, 10 minutes, is fine).

Part A asks Keycloak directly with tokens the test requests from the TokenRequest API (as
admin). Part B is the operator's ``clientAuth: service_account``: a ProviderToken with no
credentials Secret at all, granted by the shipped deploy/service-account-tokens/role.yaml.
"""

from __future__ import annotations

import base64
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from support.grants import (
    create_service_account,
    grant_service_account_tokens,
    service_account_subject,
)
from support.keycloak import JwksVerifier, KeycloakAdmin, KeycloakPlan
from support.objects import GROUP, VERSION, Cluster
from support.operator import OperatorProcess
from tokensync_dev.devcluster.cluster import ControlPlane

REALM = "tokensync-federation"
IDENTITY_PROVIDER = "suite-cluster"
API_AUDIENCE = "tokensync-api"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Long enough that no scheduled renewal comes during a test: the events count mints.
LIFESPAN_S = 600


def now_ms() -> int:
    return int(time.time() * 1000)


def unverified(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


@dataclass
class Federation:
    """The suite's Keycloak with one realm trusting the suite's control plane."""

    plan: KeycloakPlan
    plane: ControlPlane
    cluster: Cluster
    admin: KeycloakAdmin
    cluster_issuer: str
    secrets: set[str]
    verifier: JwksVerifier = field(init=False)

    def __post_init__(self) -> None:
        self.verifier = JwksVerifier(self.plan.http_url)

    @property
    def issuer(self) -> str:
        """The realm's issuer over HTTPS: the audience Keycloak asks of an assertion there."""
        return f"{self.plan.https_url}/realms/{REALM}"

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/token"

    def remember(self, *values: str) -> None:
        self.secrets.update(v for v in values if v)

    def service_account(self, namespace: str, name: str) -> None:
        create_service_account(self.plane, namespace, name)

    def client(self, namespace: str, service_account: str) -> str:
        """A client of the realm whose credential is that ServiceAccount's token."""
        client_id = f"fed-{uuid.uuid4().hex[:8]}"
        internal = self.admin.federated_client(
            REALM,
            client_id,
            identity_provider=IDENTITY_PROVIDER,
            subject=service_account_subject(namespace, service_account),
        )
        self.admin.audience_mapper(REALM, internal, API_AUDIENCE)
        return client_id

    def service_account_token(
        self, namespace: str, name: str, audiences: list[str], seconds: int = 600
    ) -> str:
        """A token for the ServiceAccount from the TokenRequest API, as the operator gets one."""
        answer = self.cluster.core.create_namespaced_service_account_token(
            name,
            namespace,
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=audiences, expiration_seconds=seconds)
            ),
        )
        assert answer.status is not None
        token = str(answer.status.token)
        self.remember(token)
        return token

    def ask(self, assertion: str, **form: str) -> httpx.Response:
        """client_credentials at the realm's token endpoint with ``assertion`` as the proof."""
        trust = ssl.create_default_context(cafile=str(self.plan.ca_cert))
        answer = httpx.post(
            self.token_url,
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion,
                **form,
            },
            verify=trust,
            timeout=30,
        )
        if answer.status_code == 200:
            self.remember(answer.json()["access_token"])
        return answer

    def verify(self, token: str) -> dict[str, Any]:
        self.remember(token)
        return self.verifier.verify(token, realm=REALM, issuer=self.issuer, audience=API_AUDIENCE)

    def events(self, client_id: str, since: int) -> list[dict[str, Any]]:
        events = self.admin.events(
            REALM, types=("CLIENT_LOGIN", "CLIENT_LOGIN_ERROR"), client_id=client_id
        )
        return [e for e in events if int(e["time"]) >= since]


def discovered_issuer(plane: ControlPlane) -> str:
    """The API server's issuer, read the way Keycloak reads it: anonymously, over TLS."""
    trust = ssl.create_default_context(cafile=str(plane.ca_cert))
    answer = httpx.get(f"{plane.server}/.well-known/openid-configuration", verify=trust)
    assert answer.status_code == 200, (
        f"the control plane's issuer discovery is not readable anonymously ({answer.status_code}"
        f" {answer.text[:200]}): devcluster start() binds system:service-account-issuer-discovery"
        " to system:unauthenticated"
    )
    issuer: str = answer.json()["issuer"]
    assert issuer.startswith("https://127.0.0.1:"), (
        f"the control plane's first --service-account-issuer is {issuer}: Keycloak could not"
        " fetch its discovery document there"
    )
    return issuer


@pytest.fixture(scope="module")
def federation(
    cluster: Cluster,
    control_plane: ControlPlane,
    keycloak_plan: KeycloakPlan,
    keycloak_secrets: set[str],
    request: pytest.FixtureRequest,
) -> Iterator[Federation]:
    if control_plane.ca_cert not in keycloak_plan.trust:
        pytest.fail(
            "the suite's Keycloak does not trust the control plane's CA, so it cannot fetch"
            " the API server's JWKS: conftest's keycloak_plan must be"
            " plan(workdir, trust=(control_plane.ca_cert,))"
        )
    issuer = discovered_issuer(control_plane)
    request.getfixturevalue("keycloak")
    admin = KeycloakAdmin(
        keycloak_plan.http_url, keycloak_plan.admin_username, keycloak_plan.admin_password
    )
    keycloak_secrets.add(keycloak_plan.admin_password)
    admin.create_realm(REALM, access_token_lifespan_s=LIFESPAN_S)
    admin.kubernetes_identity_provider(REALM, IDENTITY_PROVIDER, issuer)
    try:
        yield Federation(keycloak_plan, control_plane, cluster, admin, issuer, keycloak_secrets)
    finally:
        admin.close()


@dataclass(frozen=True)
class Workload:
    """A namespace, a ServiceAccount in it, and the realm's client that account is."""

    namespace: str
    service_account: str
    client_id: str


@pytest.fixture
def workload(federation: Federation) -> Workload:
    namespace = federation.cluster.namespace("kcfed")
    federation.service_account(namespace, "minter")
    return Workload(namespace, "minter", federation.client(namespace, "minter"))


# --- Part A: Keycloak's side, with tokens the test requests --------------------------------


def test_a_service_account_token_is_the_client_credential(
    federation: Federation, workload: Workload
) -> None:
    since = now_ms()
    assertion = federation.service_account_token(
        workload.namespace, workload.service_account, [federation.issuer]
    )
    assert unverified(assertion)["iss"] == federation.cluster_issuer

    answer = federation.ask(assertion)
    assert answer.status_code == 200, answer.text
    claims = federation.verify(answer.json()["access_token"])
    assert claims["azp"] == workload.client_id

    # client_id is optional; when sent it must be the client the assertion names.
    assert federation.ask(assertion, client_id=workload.client_id).status_code == 200
    other = federation.ask(assertion, client_id=f"{workload.client_id}-not")
    assert other.status_code == 401, other.text
    assert other.json()["error"] == "invalid_client"

    events = federation.events(workload.client_id, since)
    logins = [e for e in events if e["type"] == "CLIENT_LOGIN"]
    assert len(logins) == 2, events
    for login in logins:
        assert login["details"]["client_auth_method"] == "federated-jwt", login
        assert login["details"]["client_assertion_issuer"] == federation.cluster_issuer
        assert login["details"]["client_assertion_sub"] == service_account_subject(
            workload.namespace, workload.service_account
        )


def test_a_forged_token_is_refused(federation: Federation, workload: Workload) -> None:
    """The same claims and key id, signed by a key of the test's own: only the cluster's
    JWKS makes a token count."""
    genuine = federation.service_account_token(
        workload.namespace, workload.service_account, [federation.issuer]
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        unverified(genuine),
        key,
        algorithm="RS256",
        headers={"kid": jwt.get_unverified_header(genuine)["kid"]},
    )
    since = now_ms()
    answer = federation.ask(forged)
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == "invalid_client"
    # Unsigned, the same claims: refused too.
    unsigned = jwt.encode(unverified(genuine), "", algorithm="none")
    assert federation.ask(unsigned).status_code in (400, 401)
    errors = federation.events(workload.client_id, since)
    assert errors and {e["type"] for e in errors} == {"CLIENT_LOGIN_ERROR"}, errors
    # The genuine token still works: the refusals were about the signature, nothing else.
    assert federation.ask(genuine).status_code == 200


def test_another_service_accounts_token_is_refused(
    federation: Federation, workload: Workload
) -> None:
    """Really signed by the cluster, for the right audience, but of another ServiceAccount
    of the same namespace: no client is that account."""
    federation.service_account(workload.namespace, "neighbour")
    token = federation.service_account_token(workload.namespace, "neighbour", [federation.issuer])
    answer = federation.ask(token)
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == "invalid_client"
    refused = federation.ask(token, client_id=workload.client_id)
    assert refused.status_code == 401, refused.text


@pytest.mark.parametrize(
    "audiences",
    [
        pytest.param(lambda f: [f.token_url], id="the-token-endpoint"),
        pytest.param(lambda f: [f.issuer.replace(f.plan.https_url, f.plan.http_url)], id="http"),
        pytest.param(lambda f: [f.issuer + "-other"], id="another-realm"),
        pytest.param(lambda f: [f.plane.server], id="the-api-server"),
        pytest.param(lambda f: [f.issuer, API_AUDIENCE], id="two-audiences"),
    ],
)
def test_a_wrong_audience_is_refused(
    federation: Federation, workload: Workload, audiences: Any
) -> None:
    token = federation.service_account_token(
        workload.namespace, workload.service_account, audiences(federation)
    )
    since = now_ms()
    answer = federation.ask(token)
    assert answer.status_code in (400, 401), answer.text
    assert answer.json()["error"] == "invalid_client"
    assert "audience" in answer.json().get("error_description", "").lower(), answer.text
    events = federation.events(workload.client_id, since)
    assert [e["type"] for e in events] == ["CLIENT_LOGIN_ERROR"], events


# --- Part B: the operator's clientAuth: service_account against it -------------------------


def service_account_token_spec(
    federation: Federation,
    workload: Workload,
    name: str,
    *,
    audience: str | None = None,
    client_id: str | None = None,
) -> dict[str, Any]:
    """A ProviderToken with no credentialsRef: the ServiceAccount is the whole credential."""
    oauth2: dict[str, Any] = {
        "issuerUrl": federation.issuer,
        "grantType": "client_credentials",
        "clientAuth": "service_account",
        "serviceAccountRef": {
            "name": workload.service_account,
            "audience": audience or federation.issuer,
        },
    }
    if client_id:
        oauth2["clientId"] = client_id
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ProviderToken",
        "metadata": {"name": name, "namespace": workload.namespace},
        "spec": {"provider": {"oauth2": oauth2}, "target": {"name": f"{name}-token"}},
    }


@pytest.fixture
def cleanup(cluster: Cluster) -> Iterator[list[tuple[str, str]]]:
    """ProviderTokens to delete at the end: left behind, they keep renewing."""
    made: list[tuple[str, str]] = []
    yield made
    for namespace, name in made:
        try:
            cluster.delete_token(namespace, name)
        except ApiException as error:
            if error.status != 404:
                raise


@pytest.mark.parametrize("send_client_id", [False, True], ids=["no-client-id", "client-id"])
def test_operator_mints_with_a_service_account_and_no_credentials_secret(
    federation: Federation,
    workload: Workload,
    operator: OperatorProcess,
    cleanup: list[tuple[str, str]],
    send_client_id: bool,
) -> None:
    grant_service_account_tokens(federation.plane, workload.namespace, workload.service_account)
    since = now_ms()
    federation.cluster.apply(
        service_account_token_spec(
            federation,
            workload,
            "federated",
            client_id=workload.client_id if send_client_id else None,
        ),
    )
    cleanup.append((workload.namespace, "federated"))
    federation.cluster.wait_ready(workload.namespace, "federated", timeout_s=60)

    token = federation.cluster.secret_value(workload.namespace, "federated-token")
    assert token, "Ready=True but no token in the target Secret"
    claims = federation.verify(token)
    assert claims["azp"] == workload.client_id

    events = federation.events(workload.client_id, since)
    assert events and {e["type"] for e in events} == {"CLIENT_LOGIN"}, events
    assert {e["details"]["client_auth_method"] for e in events} == {"federated-jwt"}
    # Nothing in the namespace holds a credential: its only Secrets are the operator's own.
    secrets = federation.cluster.core.list_namespaced_secret(workload.namespace).items
    for secret in secrets:
        assert secret.metadata is not None
        labels = secret.metadata.labels or {}
        assert labels.get("tokensync.dev/role") in ("token", "state"), secret.metadata.name
        for raw in (secret.data or {}).values():
            federation.remember(base64.b64decode(raw).decode())


def test_operator_without_the_grant_asks_keycloak_nothing_and_says_what_to_grant(
    federation: Federation,
    workload: Workload,
    operator: OperatorProcess,
    cleanup: list[tuple[str, str]],
) -> None:
    since = now_ms()
    federation.cluster.apply(service_account_token_spec(federation, workload, "ungranted"))
    cleanup.append((workload.namespace, "ungranted"))
    refused = federation.cluster.wait_ready(
        workload.namespace, "ungranted", status="False", timeout_s=60
    )
    assert refused["reason"] == "ServiceAccountTokenNotPermitted", refused
    for word in (workload.service_account, "serviceaccounts/token", "create", "role.yaml"):
        assert word in refused["message"], (word, refused)
    assert federation.cluster.secret(workload.namespace, "ungranted-token") is None
    assert federation.events(workload.client_id, since) == []

    # The owner grants it; the next mint (asked for now) works.
    grant_service_account_tokens(federation.plane, workload.namespace, workload.service_account)
    federation.cluster.patch_token(
        workload.namespace,
        "ungranted",
        {"metadata": {"annotations": {"tokensync.dev/renew": uuid.uuid4().hex}}},
    )
    federation.cluster.wait_ready(workload.namespace, "ungranted", timeout_s=60)
    token = federation.cluster.secret_value(workload.namespace, "ungranted-token")
    assert token and federation.verify(token)["azp"] == workload.client_id


def test_operator_with_the_token_endpoint_as_audience_is_told_keycloaks_refusal(
    federation: Federation,
    workload: Workload,
    operator: OperatorProcess,
    cleanup: list[tuple[str, str]],
) -> None:
    """The likeliest mistake (other providers want the token endpoint as ``aud``): Keycloak
    refuses the assertion, and the ProviderToken says so."""
    grant_service_account_tokens(federation.plane, workload.namespace, workload.service_account)
    since = now_ms()
    federation.cluster.apply(
        service_account_token_spec(federation, workload, "misaimed", audience=federation.token_url)
    )
    cleanup.append((workload.namespace, "misaimed"))
    refused = federation.cluster.wait_ready(
        workload.namespace, "misaimed", status="False", timeout_s=60
    )
    assert refused["reason"] == "InvalidCredentials", refused
    # Keycloak's own words, passed on: what to fix is the audience.
    assert "invalid_client: Invalid token audience" in refused["message"], refused
    assert federation.cluster.secret(workload.namespace, "misaimed-token") is None
    events = federation.events(workload.client_id, since)
    assert events and {e["type"] for e in events} == {"CLIENT_LOGIN_ERROR"}, events
