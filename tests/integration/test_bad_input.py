"""Generated ProviderTokens and credentials Secrets, valid and not, through the real API.

Each one is either refused at apply, with a message naming what is wrong, or accepted and
then reported by the operator with a specific Ready reason. The operator never crashes
and never loops: at the end it is still running, logged nothing unexpected, and no
ProviderToken counts more than a few failed attempts.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes.client.rest import ApiException

from support.objects import GROUP, PLURAL, VERSION, Cluster
from support.operator import OperatorProcess
from support.providers import Fakes
from support.waiting import wait_for
from tokensync.providers.base import Provider
from tokensync.providers.registry import PROVIDERS

REASONS = {
    "Minted",
    "InvalidCredentials",
    "UnauthorizedClient",
    "InvalidScope",
    "UnsupportedGrantType",
    "InvalidRequest",
    "EndpointNotAllowed",
    "CredentialsIncomplete",
    "CredentialsNotFound",
    "ExpiryUnknown",
    "ProviderUnavailable",
    "RateLimited",
    "InvalidResponse",
    "TokenExpired",
    "TargetConflict",
    "ProviderNotSupported",
    "InvalidSpec",
}
GOOD_CLIENT, GOOD_SECRET = "generated-good-client", "generated-good-secret-value"
# Every key some spec of the provider needs.
REQUIRED_KEYS = {p.name: list(p.spec.credential_keys()) for p in PROVIDERS}
names = (f"gen-{n}" for n in itertools.count())
outcomes: dict[str, int] = {}


@pytest.fixture(scope="module")
def namespace(cluster: Cluster, fakes: Fakes) -> str:
    fakes.oauth2.add_client(GOOD_CLIENT, GOOD_SECRET, expires_in=3600)
    return cluster.namespace("gen")


@pytest.fixture(scope="module")
def unexpected_before(operator: OperatorProcess) -> Iterator[int]:
    yield operator.logs().count("failed unexpectedly")


any_text = st.text(max_size=40)
duration = st.one_of(
    st.from_regex(r"[1-9][0-9]{0,3}(s|m|h)", fullmatch=True),
    st.sampled_from(["", "1d", "-5s", "0s", "90"]),
)
# Values the declarations cannot offer: a field without enum or default.
EXTRA_OPTIONS = {
    "basiq": {"userId": ["generated-user"]},
    "oauth2": {"scope": ["openid", "read"]},
}


def options(provider: Provider) -> dict[str, list[Any]]:
    """Each field's declared values (its enum, else its default), and the extra ones."""
    declared: dict[str, list[Any]] = {}
    for field in provider.spec.fields:
        values = list(field.enum) or ([field.default] if field.default is not None else [])
        if values:
            declared[field.name] = values
    return {**declared, **EXTRA_OPTIONS.get(provider.name, {})}


OPTIONS = {p.name: options(p) for p in PROVIDERS}
ENDPOINTS_REFUSED = [
    "https://not-allowed.example/token",
    "http://169.254.169.254/latest/meta-data",
    "https://10.0.0.1/token",
]


def fake_for(fakes: Fakes, provider: str) -> str:
    return fakes.for_provider(provider).token_url


@st.composite
def valid_spec(draw: st.DrawFn, fakes: Fakes, name: str) -> dict[str, Any]:
    """A spec the schema's fields accept; a block's rule may refuse it (basiq CLIENT_ACCESS
    without userId, an oauth2 id_token without openid), its endpoint and options may not
    work out."""
    kind = draw(st.sampled_from(list(OPTIONS)))
    fields: dict[str, Any] = {
        "tokenUrl": draw(st.sampled_from([fake_for(fakes, kind), *ENDPOINTS_REFUSED]))
    }
    for field, values in OPTIONS[kind].items():
        if draw(st.booleans()):
            fields[field] = draw(st.sampled_from(values))
    spec: dict[str, Any] = {
        "provider": {kind: fields},
        "credentialsRef": {"name": f"{name}-creds"},
        "target": {"name": draw(st.sampled_from([f"{name}-out", f"{name}-creds"]))},
    }
    if draw(st.booleans()):
        spec["target"]["key"] = draw(st.from_regex(r"[-._a-zA-Z0-9]{1,20}", fullmatch=True))
    if draw(st.booleans()):
        spec["refresh"] = draw(
            st.sampled_from(
                [
                    {"renewBefore": "30s"},
                    {"renewBeforePercentage": 50},
                    {"fallbackLifetime": "10m"},
                    {"fallbackLifetime": "1s"},
                ]
            )
        )
    return spec


def _set(path: tuple[str, ...], value: Any) -> Any:
    def mutate(spec: dict[str, Any]) -> None:
        node = spec
        for part in path[:-1]:
            node = node.setdefault(part, {}) if isinstance(node.get(part), dict) else {}
        node[path[-1]] = value

    return mutate


def _first_provider(spec: dict[str, Any]) -> dict[str, Any]:
    return next(iter(spec["provider"].values()))


MUTATIONS: dict[str, Any] = {
    "credentials in another namespace": _set(("credentialsRef", "namespace"), "kube-system"),
    "target in another namespace": _set(("target", "namespace"), "kube-system"),
    "an unknown spec field": _set(("owner",), "me"),
    "no provider": lambda spec: spec.update(provider={}),
    "two providers": lambda spec: spec["provider"].update(basiq={}, oauth2={"tokenUrl": "x"}),
    "an unknown provider": lambda spec: spec.update(provider={"acme": {}}),
    "provider not an object": lambda spec: spec.update(provider="oauth2"),
    "no credentialsRef": lambda spec: spec.pop("credentialsRef"),
    "no target": lambda spec: spec.pop("target"),
    "an upper-case Secret name": _set(("target", "name"), "Token"),
    "a Secret name with a slash": _set(("credentialsRef", "name"), "../kube-system/x"),
    "a Secret key with a space": _set(("target", "key"), "my token"),
    "a tokenUrl with a query": lambda spec: _first_provider(spec).update(
        tokenUrl="https://x.example/t?password=p"
    ),
    "a tokenUrl not a URL": lambda spec: _first_provider(spec).update(tokenUrl="token"),
    "a number for a string": lambda spec: _first_provider(spec).update(tokenUrl=42),
    "an unknown enum value": lambda spec: _first_provider(spec).update(environment="staging"),
    "an unknown provider field": lambda spec: _first_provider(spec).update(secret="x"),
    "both renewal settings": _set(("refresh",), {"renewBefore": "1m", "renewBeforePercentage": 50}),
    "renewBefore not a duration": _set(("refresh",), {"renewBefore": "soon"}),
    "renewBeforePercentage out of range": _set(("refresh",), {"renewBeforePercentage": 100}),
    "fallbackLifetime of a day in d": _set(("refresh",), {"fallbackLifetime": "1d"}),
    "a 10,000-character tokenUrl": lambda spec: _first_provider(spec).update(
        tokenUrl="https://x.example/" + "a" * 10_000
    ),
    "basiq CLIENT_ACCESS without userId": lambda spec: spec.update(
        provider={"basiq": {"scope": "CLIENT_ACCESS"}}
    ),
}


@st.composite
def credentials(draw: st.DrawFn, spec: dict[str, Any]) -> dict[str, bytes] | None:
    """A credentials Secret's data, or None: no such Secret."""
    provider = spec.get("provider")
    kind = next(iter(provider), "oauth2") if isinstance(provider, dict) and provider else "oauth2"
    keys = REQUIRED_KEYS.get(kind, REQUIRED_KEYS["oauth2"])
    form = draw(st.sampled_from(["good", "complete", "generated", "missing"]))
    if form == "missing":
        return None
    if form == "good" and kind == "oauth2":
        return {"clientId": GOOD_CLIENT.encode(), "clientSecret": GOOD_SECRET.encode()}
    values = st.one_of(
        st.text(min_size=1, max_size=60).map(str.encode),
        st.binary(max_size=60),
        st.just(b"x" * 100_000),
    )
    if form in ("good", "complete"):
        # Every key the provider may need, with values the provider will not know.
        return {key: draw(values) for key in keys}
    chosen = draw(st.lists(st.sampled_from([*keys, "extra.key"]), unique=True, max_size=6))
    return {key: draw(values) for key in chosen}


@st.composite
def manifests(draw: st.DrawFn, fakes: Fakes) -> tuple[dict[str, Any], dict[str, bytes] | None]:
    name = next(names)
    spec = draw(valid_spec(fakes, name))
    creds = draw(credentials(spec))
    if draw(st.sampled_from(["as is", "as is", "mutated"])) == "mutated":
        MUTATIONS[draw(st.sampled_from(list(MUTATIONS)))](spec)
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ProviderToken",
        "metadata": {"name": name},
        "spec": spec,
    }
    return manifest, creds


def outcome_of(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    condition = cluster.ready(namespace, name)
    return condition if condition and condition.get("reason") else None


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_generated_provider_tokens_are_refused_or_reported(
    cluster: Cluster,
    fakes: Fakes,
    operator: OperatorProcess,
    namespace: str,
    unexpected_before: int,
    data: st.DataObject,
) -> None:
    manifest, creds = data.draw(manifests(fakes))
    name = manifest["metadata"]["name"]
    credentials_name = manifest["spec"].get("credentialsRef", {}).get("name")
    if creds is not None and credentials_name == f"{name}-creds":
        cluster.core.create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": credentials_name},
                "data": {k: base64.b64encode(v).decode() for k, v in creds.items()},
            },
        )
    try:
        cluster.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, manifest, field_validation="Strict"
        )
    except ApiException as refused:
        assert refused.status in (400, 422), refused
        assert "spec" in str(refused.body), refused.body
        outcomes["refused at apply"] = outcomes.get("refused at apply", 0) + 1
        return
    condition = wait_for(
        lambda: outcome_of(cluster, namespace, name),
        timeout_s=30,
        what=f"a Ready condition on {name}",
    )
    assert condition["reason"] in REASONS, condition
    assert condition["message"], condition
    if condition["status"] == "True":
        secret = cluster.secret(namespace, manifest["spec"]["target"]["name"])
        assert secret is not None and secret.data
    key = f"{condition['status']} {condition['reason']}"
    outcomes[key] = outcomes.get(key, 0) + 1


def test_the_operator_survived_without_looping(
    cluster: Cluster, operator: OperatorProcess, namespace: str, unexpected_before: int
) -> None:
    assert operator.running()
    assert operator.logs().count("failed unexpectedly") == unexpected_before
    tokens = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    attempts = {
        t["metadata"]["name"]: (t.get("status") or {}).get("failedAttempts", 0)
        for t in tokens["items"]
    }
    assert attempts, "the generated ProviderTokens should be there"
    assert max(attempts.values()) <= 4, attempts
    print("outcomes of the generated ProviderTokens:", sorted(outcomes.items()))
