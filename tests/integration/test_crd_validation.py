"""A bad ProviderToken is refused by `kubectl apply` with a message that says what is wrong."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from support.objects import Cluster, provider_token
from support.waiting import wait_for
from tokensync.providers.base import Provider
from tokensync.providers.registry import PROVIDERS

VALID = provider_token(
    "valid",
    provider={"oauth2": {"tokenUrl": "https://idp.example.com/token"}},
    credentials="creds",
    target="out",
)


def variant(change: dict[str, Any]) -> dict[str, Any]:
    manifest = copy.deepcopy(VALID)
    manifest["metadata"]["name"] = "candidate"
    manifest["spec"].update(change)
    return manifest


@pytest.fixture(scope="module")
def namespace(cluster: Cluster) -> str:
    return cluster.namespace("crd")


REFUSED = [
    (
        "two providers",
        {"provider": {"podero": {}, "basiq": {}}},
        "must name exactly one provider",
    ),
    ("no provider", {"provider": {}}, "must name exactly one provider"),
    (
        "renewBefore and a percentage",
        {"refresh": {"renewBefore": "2m", "renewBeforePercentage": 33}},
        "set renewBefore or renewBeforePercentage, not both",
    ),
    ("not a duration", {"refresh": {"renewBefore": "5 minutes"}}, "must be a duration"),
    ("zero duration", {"refresh": {"renewBefore": "0s"}}, "must be between 1s and 8760h"),
    ("percentage too high", {"refresh": {"renewBeforePercentage": 99}}, "less than or equal to 95"),
    (
        "CLIENT_ACCESS without a user",
        {"provider": {"basiq": {"scope": "CLIENT_ACCESS"}}},
        "basiq.userId is required when scope is CLIENT_ACCESS",
    ),
    (
        "oauth2 without an endpoint",
        {"provider": {"oauth2": {"scope": "x"}}},
        "oauth2 needs exactly one of tokenUrl or issuerUrl",
    ),
    (
        "an endpoint that is not http(s)",
        {"provider": {"oauth2": {"tokenUrl": "file:///etc/passwd"}}},
        "must be an absolute http(s) URL",
    ),
    (
        "an unknown microshare environment",
        {"provider": {"microshare": {"environment": "staging"}}},
        'Unsupported value: "staging"',
    ),
    (
        "the target is the credentials Secret",
        {"target": {"name": "creds"}},
        "spec.target.name must differ from spec.credentialsRef.name",
    ),
    (
        "a credentials Secret in another namespace",
        {"credentialsRef": {"name": "creds", "namespace": "kube-system"}},
        'unknown field "spec.credentialsRef.namespace"',
    ),
    (
        "a target in another namespace",
        {"target": {"name": "out", "namespace": "kube-system"}},
        'unknown field "spec.target.namespace"',
    ),
    ("a Secret name that is not a name", {"target": {"name": "Bad_Name"}}, "spec.target.name"),
    (
        "an id_token without the openid scope",
        {
            "provider": {
                "oauth2": {
                    "tokenUrl": "https://idp.example.com/token",
                    "tokenField": "id_token",
                    "scope": "openidish profile",
                }
            }
        },
        "tokenField id_token needs openid in scope",
    ),
    (
        "an id_token with openid only in another parameter",
        {
            "provider": {
                "oauth2": {
                    "tokenUrl": "https://idp.example.com/token",
                    "tokenField": "id_token",
                    "extraParams": {"audience": "openid"},
                }
            }
        },
        "tokenField id_token needs openid in scope",
    ),
]


@pytest.mark.parametrize(
    ("change", "message"), [(c, m) for _, c, m in REFUSED], ids=[i for i, _, _ in REFUSED]
)
def test_bad_provider_tokens_are_refused_with_a_clear_message(
    cluster: Cluster, namespace: str, change: dict[str, Any], message: str
) -> None:
    manifest = variant(change)
    manifest["metadata"]["namespace"] = namespace
    output = cluster.apply_refused(manifest)
    assert message in output, output
    assert cluster.token(namespace, "candidate") is None


@pytest.mark.parametrize(
    "oauth2",
    [
        {"scope": "profile openid"},
        {"scope": "openid"},
        {"extraParams": {"scope": "openid email"}},
    ],
    ids=["scope", "only openid", "extraParams scope"],
)
def test_an_id_token_with_the_openid_scope_is_accepted(
    cluster: Cluster, namespace: str, oauth2: dict[str, Any]
) -> None:
    manifest = variant(
        {
            "provider": {
                "oauth2": {
                    "tokenUrl": "https://idp.example.com/token",
                    "tokenField": "id_token",
                    **oauth2,
                }
            }
        }
    )
    manifest["metadata"]["namespace"] = namespace
    cluster.apply(manifest)
    assert cluster.token(namespace, "candidate") is not None
    cluster.delete_token(namespace, "candidate")


def test_a_good_provider_token_is_accepted_with_defaults(cluster: Cluster, namespace: str) -> None:
    manifest = copy.deepcopy(VALID)
    manifest["metadata"]["namespace"] = namespace
    cluster.apply(manifest)
    stored = cluster.token(namespace, "valid")
    assert stored is not None
    assert stored["spec"]["target"]["key"] == "token"
    oauth2 = stored["spec"]["provider"]["oauth2"]
    assert oauth2["grantType"] == "client_credentials"
    assert oauth2["clientAuth"] == "client_secret_basic"
    output = cluster.plane.kubectl("get", "ptk", "-n", namespace, "-o", "wide")
    header = output.splitlines()[0].split()
    assert header == ["NAME", "PROVIDER", "READY", "REASON", "EXPIRES", "RENEWS", "AGE"]


EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_every_example_is_accepted_by_the_api_server(
    cluster: Cluster, namespace: str, example: Path
) -> None:
    output = cluster.plane.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(example))
    assert "providertoken.tokensync.dev/" in output and "(server dry run)" in output


def test_there_is_an_example_per_provider() -> None:
    text = "\n".join(e.read_text() for e in EXAMPLES)
    for provider in PROVIDERS.names():
        assert f"    {provider}:" in text, provider


# Every block takes a tokenUrl; for oauth2 it is the one endpoint it needs.
MINIMAL = {"tokenUrl": "https://idp.example.com/token"}


def stored_as(cluster: Cluster, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """The ProviderToken as the API server stored it; deleted again, and gone before the
    next case reuses its name (the suite's operator may hold a revoking one a moment)."""
    cluster.apply(manifest)
    stored = cluster.token(namespace, "candidate")
    cluster.delete_token(namespace, "candidate")
    wait_for(
        lambda: cluster.token(namespace, "candidate") is None,
        timeout_s=45,
        what="the candidate ProviderToken to be gone",
    )
    assert stored is not None
    return stored


@pytest.mark.parametrize("provider", list(PROVIDERS), ids=PROVIDERS.names())
def test_the_api_server_fills_in_the_declared_defaults(
    cluster: Cluster, namespace: str, provider: Provider
) -> None:
    manifest = variant({"provider": {provider.name: dict(MINIMAL)}})
    manifest["metadata"]["namespace"] = namespace
    stored = stored_as(cluster, namespace, manifest)
    fields = provider.spec.fields
    defaults = {f.name: f.default for f in fields if f.default is not None and f.default_in_crd}
    assert stored["spec"]["provider"][provider.name] == {**defaults, **MINIMAL}


ENUMS = [(p.name, f.name) for p in PROVIDERS for f in p.spec.fields if f.enum]


@pytest.mark.parametrize(("provider", "field"), ENUMS, ids=[f"{p}.{f}" for p, f in ENUMS])
def test_a_value_outside_a_declared_enum_is_refused(
    cluster: Cluster, namespace: str, provider: str, field: str
) -> None:
    manifest = variant({"provider": {provider: {**MINIMAL, field: "not-a-declared-value"}}})
    manifest["metadata"]["namespace"] = namespace
    output = cluster.apply_refused(manifest)
    assert 'Unsupported value: "not-a-declared-value"' in output, output
    assert cluster.token(namespace, "candidate") is None


# --- issue 18: keyless client authentication, revocation on delete ---------------------------

TOKEN_URL = "https://idp.example.com/token"
ACCOUNT = {"name": "idp-client", "audience": "https://idp.example.com"}
SERVICE_ACCOUNT_CLIENT = {
    "tokenUrl": TOKEN_URL,
    "clientAuth": "service_account",
    "serviceAccountRef": ACCOUNT,
}
TLS_CLIENT = {
    "tokenUrl": TOKEN_URL,
    "clientAuth": "tls_client_auth",
    "clientId": "app",
    "tlsSecretRef": {"name": "client-cert"},
}
EXCHANGED_ACCOUNT = {
    **SERVICE_ACCOUNT_CLIENT,
    "grantType": "token_exchange",
    "subjectTokenSource": "serviceAccount",
}


def keyless(oauth2: dict[str, Any], name: str = "candidate", **spec: Any) -> dict[str, Any]:
    """A ProviderToken without spec.credentialsRef."""
    manifest = variant({"provider": {"oauth2": oauth2}, **spec})
    manifest["metadata"]["name"] = name
    del manifest["spec"]["credentialsRef"]
    return manifest


def with_secret(oauth2: dict[str, Any]) -> dict[str, Any]:
    return variant({"provider": {"oauth2": oauth2}})


TLS_SECRET_RULE = "tlsSecretRef goes with clientAuth tls_client_auth, which needs it"
CLIENT_ID_RULE = "clientId in the spec is for clientAuth service_account or tls_client_auth"
ACCOUNT_RULE = (
    "serviceAccountRef goes with clientAuth service_account or subjectTokenSource "
    "serviceAccount, and each of them needs it"
)
CREDENTIALS_RULE = "spec.credentialsRef is needed, except by oauth2 with clientAuth service_account"

REFUSED_KEYLESS = [
    (
        "tlsSecretRef without tls_client_auth",
        with_secret({"tokenUrl": TOKEN_URL, "tlsSecretRef": {"name": "client-cert"}}),
        TLS_SECRET_RULE,
    ),
    (
        "tlsSecretRef with client_secret_post",
        with_secret(
            {
                "tokenUrl": TOKEN_URL,
                "clientAuth": "client_secret_post",
                "tlsSecretRef": {"name": "client-cert"},
            }
        ),
        TLS_SECRET_RULE,
    ),
    (
        "tls_client_auth without tlsSecretRef",
        with_secret({k: v for k, v in TLS_CLIENT.items() if k != "tlsSecretRef"}),
        TLS_SECRET_RULE,
    ),
    (
        "clientId in the spec with client_secret_basic",
        with_secret({"tokenUrl": TOKEN_URL, "clientAuth": "client_secret_basic", "clientId": "a"}),
        CLIENT_ID_RULE,
    ),
    (
        "clientId in the spec with the default clientAuth",
        with_secret({"tokenUrl": TOKEN_URL, "clientId": "app"}),
        CLIENT_ID_RULE,
    ),
    (
        "tls_client_auth without clientId",
        with_secret({k: v for k, v in TLS_CLIENT.items() if k != "clientId"}),
        CLIENT_ID_RULE,
    ),
    (
        "subjectTokenSource serviceAccount with client_credentials",
        with_secret(
            {
                "tokenUrl": TOKEN_URL,
                "grantType": "client_credentials",
                "subjectTokenSource": "serviceAccount",
                "serviceAccountRef": ACCOUNT,
            }
        ),
        "subjectTokenSource serviceAccount needs grantType token_exchange",
    ),
    (
        "serviceAccountRef with a client secret",
        with_secret({"tokenUrl": TOKEN_URL, "serviceAccountRef": ACCOUNT}),
        ACCOUNT_RULE,
    ),
    (
        "service_account without serviceAccountRef",
        with_secret({"tokenUrl": TOKEN_URL, "clientAuth": "service_account"}),
        ACCOUNT_RULE,
    ),
    (
        "subjectTokenSource serviceAccount without serviceAccountRef",
        with_secret(
            {
                "tokenUrl": TOKEN_URL,
                "grantType": "token_exchange",
                "subjectTokenSource": "serviceAccount",
            }
        ),
        ACCOUNT_RULE,
    ),
    (
        "revokeOnDelete with tokenUrl and no revocationUrl",
        with_secret({"tokenUrl": TOKEN_URL, "revokeOnDelete": True}),
        "revokeOnDelete needs revocationUrl, or issuerUrl whose discovery names the revocation "
        "endpoint",
    ),
    (
        "a revocationUrl that is not http(s)",
        with_secret(
            {"tokenUrl": TOKEN_URL, "revokeOnDelete": True, "revocationUrl": "file:///revoke"}
        ),
        "must be an absolute http(s) URL",
    ),
    (
        "serviceAccountRef without audience",
        keyless({**SERVICE_ACCOUNT_CLIENT, "serviceAccountRef": {"name": "idp-client"}}),
        "spec.provider.oauth2.serviceAccountRef.audience: Required value",
    ),
    (
        "serviceAccountRef without name",
        keyless({**SERVICE_ACCOUNT_CLIENT, "serviceAccountRef": {"audience": "x"}}),
        "spec.provider.oauth2.serviceAccountRef.name: Required value",
    ),
    (
        "no credentialsRef with service_account but template credentialKeys",
        keyless(
            SERVICE_ACCOUNT_CLIENT,
            target={
                "name": "out",
                "template": {
                    "credentialKeys": ["user"],
                    "data": {"user": "{{ credentials.user }}"},
                },
            },
        ),
        CREDENTIALS_RULE,
    ),
    (
        "no credentialsRef with grantType password",
        keyless({**SERVICE_ACCOUNT_CLIENT, "grantType": "password"}),
        CREDENTIALS_RULE,
    ),
    (
        "no credentialsRef with tls_client_auth and grantType password",
        keyless({**TLS_CLIENT, "grantType": "password"}),
        CREDENTIALS_RULE,
    ),
    (
        "no credentialsRef with a token exchange of a credentials subject token",
        keyless({**SERVICE_ACCOUNT_CLIENT, "grantType": "token_exchange"}),
        CREDENTIALS_RULE,
    ),
    (
        "no credentialsRef with a client secret",
        keyless({"tokenUrl": TOKEN_URL}),
        CREDENTIALS_RULE,
    ),
    (
        "no credentialsRef with clientAuth none",
        keyless({"tokenUrl": TOKEN_URL, "clientAuth": "none"}),
        CREDENTIALS_RULE,
    ),
    (
        "no credentialsRef for another provider",
        keyless({"tokenUrl": TOKEN_URL}, provider={"podero": {}}),
        CREDENTIALS_RULE,
    ),
]


@pytest.mark.parametrize(
    ("manifest", "message"),
    [(m, message) for _, m, message in REFUSED_KEYLESS],
    ids=[i for i, _, _ in REFUSED_KEYLESS],
)
def test_keyless_and_revocation_mistakes_are_refused_with_a_clear_message(
    cluster: Cluster, namespace: str, manifest: dict[str, Any], message: str
) -> None:
    manifest = copy.deepcopy(manifest)
    manifest["metadata"]["namespace"] = namespace
    output = cluster.apply_refused(manifest)
    assert message in output, output
    assert cluster.token(namespace, manifest["metadata"]["name"]) is None


ACCEPTED_KEYLESS = [
    ("service_account client_credentials", keyless(SERVICE_ACCOUNT_CLIENT)),
    (
        "service_account with a clientId",
        keyless({**SERVICE_ACCOUNT_CLIENT, "clientId": "app"}),
    ),
    ("tls_client_auth client_credentials", keyless(TLS_CLIENT)),
    ("token_exchange of a ServiceAccount token", keyless(EXCHANGED_ACCOUNT)),
    (
        "token_exchange of a ServiceAccount token by a secret client",
        with_secret(
            {
                "tokenUrl": TOKEN_URL,
                "grantType": "token_exchange",
                "subjectTokenSource": "serviceAccount",
                "serviceAccountRef": ACCOUNT,
            }
        ),
    ),
    (
        "keyless with a template that reads no credentials",
        keyless(
            SERVICE_ACCOUNT_CLIENT,
            target={"name": "out", "template": {"data": {"t": "{{ token }}"}}},
        ),
    ),
    (
        "revokeOnDelete with revocationUrl",
        with_secret(
            {
                "tokenUrl": TOKEN_URL,
                "grantType": "password",
                "revokeOnDelete": True,
                "revocationUrl": "https://idp.example.com/revoke",
            }
        ),
    ),
    (
        "revokeOnDelete with issuerUrl",
        with_secret({"issuerUrl": "https://idp.example.com", "revokeOnDelete": True}),
    ),
    (
        "revokeOnDelete false without a revocation endpoint",
        with_secret({"tokenUrl": TOKEN_URL, "revokeOnDelete": False}),
    ),
    (
        "keyless with revokeOnDelete",
        keyless(
            {
                **TLS_CLIENT,
                "revokeOnDelete": True,
                "revocationUrl": "https://idp.example.com/revoke",
            }
        ),
    ),
]


@pytest.mark.parametrize(
    "manifest", [m for _, m in ACCEPTED_KEYLESS], ids=[i for i, _ in ACCEPTED_KEYLESS]
)
def test_keyless_and_revocation_specs_are_accepted(
    cluster: Cluster, namespace: str, manifest: dict[str, Any]
) -> None:
    manifest = copy.deepcopy(manifest)
    manifest["metadata"]["namespace"] = namespace
    stored = stored_as(cluster, namespace, manifest)
    oauth2 = manifest["spec"]["provider"]["oauth2"]
    for field, value in oauth2.items():
        assert stored["spec"]["provider"]["oauth2"][field] == value, field
    assert ("credentialsRef" in stored["spec"]) == ("credentialsRef" in manifest["spec"])
    # No default written for the new fields: the stored block is what was applied, plus
    # the defaults the CRD always had.
    assert set(stored["spec"]["provider"]["oauth2"]) - set(oauth2) <= {
        "grantType",
        "clientAuth",
        "tokenField",
    }
