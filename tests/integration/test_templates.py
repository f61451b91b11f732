"""spec.target.type and spec.target.template on the real API server: the Secret in the
shape a consumer needs, its drift restored, its template errors reported without values.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from fakes.oauth2_server import FakeOAuth2Server
from support.objects import GROUP, PLURAL, VERSION, Cluster, provider_token
from support.operator import OperatorProcess
from support.waiting import wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@dataclass
class Client:
    namespace: str
    client_id: str
    secret: str


@pytest.fixture
def client(cluster: Cluster, oauth2_server: FakeOAuth2Server, operator: OperatorProcess) -> Client:
    namespace = cluster.namespace("tpl")
    client_id = f"tpl-{uuid.uuid4().hex[:8]}"
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    oauth2_server.add_client(client_id, secret, expires_in=3600, id_token=True)
    cluster.credentials(
        namespace,
        "creds",
        {"clientId": client_id, "clientSecret": secret, "user": f"user-{uuid.uuid4().hex[:6]}"},
    )
    return Client(namespace, client_id, secret)


def data(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    secret = cluster.secret(namespace, name)
    if secret is None or not secret.data:
        return {}
    return {k: base64.b64decode(v).decode() for k, v in secret.data.items()}


def issued(server: FakeOAuth2Server, client: Client) -> list[str]:
    return [i.value for i in server.issued_to(client.client_id) if i.grant != "id_token"]


def templated(
    cluster: Cluster,
    server: FakeOAuth2Server,
    client: Client,
    template: dict[str, Any],
    *,
    secret_type: str | None = None,
    scope: str | None = None,
    name: str = "api",
) -> dict[str, Any]:
    manifest = provider_token(
        name,
        namespace=client.namespace,
        provider={"oauth2": {"tokenUrl": server.token_url, **({"scope": scope} if scope else {})}},
        credentials="creds",
        target="shaped",
    )
    manifest["spec"]["target"]["template"] = template
    if secret_type:
        manifest["spec"]["target"]["type"] = secret_type
    cluster.apply(manifest)
    return manifest


def wait_data(
    cluster: Cluster, namespace: str, check: Callable[[dict[str, str]], bool], what: str
) -> dict[str, str]:
    return wait_for(
        lambda: (d := data(cluster, namespace, "shaped")) and check(d) and d,
        timeout_s=30,
        what=what,
    )


def example_documents(name: str, server: FakeOAuth2Server, client: Client) -> str:
    """The example as a user would apply it, pointed at the suite's fake endpoint."""
    documents = list(yaml.safe_load_all((EXAMPLES / name).read_text()))
    for document in documents:
        if document["kind"] == "Secret":
            document["stringData"].update(clientId=client.client_id, clientSecret=client.secret)
        else:
            document["spec"]["provider"]["oauth2"]["tokenUrl"] = server.token_url
    return "\n---\n".join(yaml.safe_dump(d) for d in documents)


def apply_example(
    name: str, cluster: Cluster, server: FakeOAuth2Server, client: Client
) -> tuple[str, str]:
    """Applies the example; returns (ProviderToken name, target Secret name) once Ready."""
    text = example_documents(name, server, client)
    cluster.plane.kubectl("apply", "-n", client.namespace, "-f", "-", input_text=text)
    token = next(d for d in yaml.safe_load_all(text) if d["kind"] == "ProviderToken")
    cluster.wait_ready(client.namespace, token["metadata"]["name"])
    return token["metadata"]["name"], token["spec"]["target"]["name"]


def test_authorization_header_example(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, client: Client
) -> None:
    name, target = apply_example(
        "template-authorization-header.yaml", cluster, oauth2_server, client
    )
    (token,) = issued(oauth2_server, client)
    secret = cluster.secret(client.namespace, target)
    assert secret.type == "Opaque"
    assert data(cluster, client.namespace, target) == {
        "authorization": f"Authorization: Bearer {token}"
    }
    status = cluster.token(client.namespace, name)["status"]  # type: ignore[index]
    assert secret.metadata.annotations["example.com/token-expires-at"] == status["expiresAt"]


def test_dockerconfigjson_example_parses_as_a_registry_login(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, client: Client
) -> None:
    _, target = apply_example("template-dockerconfigjson.yaml", cluster, oauth2_server, client)
    (token,) = issued(oauth2_server, client)
    secret = cluster.secret(client.namespace, target)
    assert secret.type == "kubernetes.io/dockerconfigjson"
    assert set(secret.data) == {".dockerconfigjson"}
    config = json.loads(data(cluster, client.namespace, target)[".dockerconfigjson"])
    login = config["auths"]["registry.example.com"]
    assert login["username"] == "oauth2accesstoken"
    assert login["password"] == token
    assert base64.b64decode(login["auth"]).decode() == f"oauth2accesstoken:{token}"


def test_json_with_expiry_example(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, client: Client
) -> None:
    name, target = apply_example("template-json-with-expiry.yaml", cluster, oauth2_server, client)
    (token,) = issued(oauth2_server, client)
    values = data(cluster, client.namespace, target)
    assert set(values) == {"token.json", "token"}
    document = json.loads(values["token.json"])
    status = cluster.token(client.namespace, name)["status"]  # type: ignore[index]
    assert document["token"] == values["token"] == token
    assert document["expiresAt"] == status["expiresAt"]
    assert document["tokenType"] == "Bearer"
    assert isinstance(document["expiresAtUnix"], int)


def test_basic_auth_example(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, client: Client
) -> None:
    _, target = apply_example("template-basic-auth.yaml", cluster, oauth2_server, client)
    (token,) = issued(oauth2_server, client)
    secret = cluster.secret(client.namespace, target)
    assert secret.type == "kubernetes.io/basic-auth"
    assert data(cluster, client.namespace, target) == {"username": "svc-reports", "password": token}


def test_other_tokens_of_the_answer_and_named_credential_keys(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, client: Client
) -> None:
    templated(
        cluster,
        oauth2_server,
        client,
        {
            "credentialKeys": ["user"],
            "data": {
                "id": "{{ tokens.id_token }}",
                "who": "{{ credentials.user }}",
                "scope": "{{ scope }}",
            },
        },
        scope="openid",
    )
    values = wait_data(cluster, client.namespace, lambda d: "id" in d, "the rendered keys")
    id_tokens = [
        i.value for i in oauth2_server.issued_to(client.client_id) if i.grant == "id_token"
    ]
    assert values["id"] == id_tokens[-1]
    assert values["who"].startswith("user-")
    assert values["scope"] == "openid"


def test_a_template_naming_an_unknown_value_is_refused_before_any_mint(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, client: Client
) -> None:
    templated(cluster, oauth2_server, client, {"data": {"auth": "Bearer {{ tokn }}"}})
    condition = cluster.wait_ready(client.namespace, "api", "False")
    assert condition["reason"] == "InvalidTemplate"
    assert 'data["auth"]' in condition["message"] and "tokn" in condition["message"]
    assert oauth2_server.requests_from(client.client_id) == []
    assert cluster.secret(client.namespace, "shaped") is None


def test_a_template_that_fails_while_rendering_keeps_the_last_good_secret(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, client: Client
) -> None:
    templated(cluster, oauth2_server, client, {"data": {"auth": "Bearer {{ token }}"}})
    good = wait_data(cluster, client.namespace, lambda d: "auth" in d, "the first rendering")
    (token,) = issued(oauth2_server, client)
    # Fails only with the value in hand; Jinja would quote the missing key, the token.
    templated(cluster, oauth2_server, client, {"data": {"auth": "{{ {}[token] }}"}})
    condition = cluster.wait_ready(client.namespace, "api", "False")
    assert condition["reason"] == "InvalidTemplate"
    assert 'data["auth"]' in condition["message"]
    assert token not in json.dumps(cluster.token(client.namespace, "api"))
    assert all(token not in f"{e.reason} {e.note}" for e in cluster.events(client.namespace))
    assert data(cluster, client.namespace, "shaped") == good

    # Fixed: rendered from the token in hand, no new mint.
    templated(cluster, oauth2_server, client, {"data": {"auth": "Token {{ token }}"}})
    wait_data(
        cluster, client.namespace, lambda d: d.get("auth") == f"Token {token}", "the fixed template"
    )
    cluster.wait_ready(client.namespace, "api")
    assert issued(oauth2_server, client) == [token]


def test_a_changed_template_renders_again_without_a_mint(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, client: Client
) -> None:
    templated(cluster, oauth2_server, client, {"data": {"auth": "Bearer {{ token }}"}})
    wait_data(cluster, client.namespace, lambda d: "auth" in d, "the first rendering")
    (token,) = issued(oauth2_server, client)
    templated(
        cluster,
        oauth2_server,
        client,
        {"data": {"header": "Authorization: Bearer {{ token }}", "raw": "{{ token }}"}},
    )
    values = wait_data(cluster, client.namespace, lambda d: "header" in d, "the new keys")
    assert values == {"header": f"Authorization: Bearer {token}", "raw": token}
    assert issued(oauth2_server, client) == [token]


def test_drift_on_a_templated_key_is_restored_with_the_same_token(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, client: Client
) -> None:
    templated(
        cluster,
        oauth2_server,
        client,
        {"data": {"auth": "Bearer {{ token }}", "exp": "{{ expiresAt }}"}},
    )
    good = wait_data(cluster, client.namespace, lambda d: "auth" in d, "the first rendering")
    # Someone edits the key that does not hold the token, and adds one of their own.
    cluster.core.patch_namespaced_secret(
        "shaped", client.namespace, {"stringData": {"exp": "never", "extra": "x"}}
    )
    wait_data(cluster, client.namespace, lambda d: d == good, "the edit undone")
    cluster.core.delete_namespaced_secret("shaped", client.namespace)
    wait_data(cluster, client.namespace, lambda d: d == good, "the Secret written again")
    assert len(issued(oauth2_server, client)) == 1


def test_template_metadata_is_kept_apart_from_the_operators_and_from_others(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, client: Client
) -> None:
    templated(
        cluster,
        oauth2_server,
        client,
        {
            "data": {"t": "{{ token }}"},
            "labels": {"team": "payments", "kind": "api-{{ tokenType | lower }}"},
            "annotations": {"example.com/expires": "{{ expiresAt }}"},
        },
    )
    wait_data(cluster, client.namespace, lambda d: "t" in d, "the first rendering")
    secret = cluster.secret(client.namespace, "shaped")
    assert secret.metadata.labels["team"] == "payments"
    assert secret.metadata.labels["kind"] == "api-bearer"
    assert secret.metadata.labels["tokensync.dev/role"] == "token"
    assert secret.metadata.annotations["example.com/expires"].endswith("Z")
    # Someone else's label stays; the one the template drops goes.
    cluster.core.patch_namespaced_secret(
        "shaped", client.namespace, {"metadata": {"labels": {"theirs": "yes"}}}
    )
    templated(
        cluster, oauth2_server, client, {"data": {"t": "{{ token }}"}, "labels": {"team": "x"}}
    )

    def relabelled() -> Any:
        labels = cluster.secret(client.namespace, "shaped").metadata.labels
        return labels.get("team") == "x" and "kind" not in labels and labels

    labels = wait_for(relabelled, timeout_s=30, what="the dropped template label removed")
    assert labels["theirs"] == "yes"
    annotations = cluster.secret(client.namespace, "shaped").metadata.annotations
    assert "example.com/expires" not in annotations


def test_a_type_change_says_what_to_do_and_follows_once_the_secret_is_deleted(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, client: Client
) -> None:
    template = {"credentialKeys": ["user"], "data": {"username": "{{ credentials.user }}"}}
    template["data"]["password"] = "{{ token }}"
    templated(cluster, oauth2_server, client, template)
    wait_data(cluster, client.namespace, lambda d: "password" in d, "the Opaque Secret")
    templated(cluster, oauth2_server, client, template, secret_type="kubernetes.io/basic-auth")
    condition = cluster.wait_ready(client.namespace, "api", "False")
    assert condition["reason"] == "TargetTypeImmutable"
    assert "delete Secret shaped" in condition["message"]
    cluster.core.delete_namespaced_secret("shaped", client.namespace)
    wait_for(
        lambda: (s := cluster.secret(client.namespace, "shaped")) and s.type.endswith("basic-auth"),
        timeout_s=30,
        what="the Secret written again as basic-auth",
    )
    cluster.wait_ready(client.namespace, "api")
    assert len(issued(oauth2_server, client)) == 1


@pytest.mark.parametrize(
    ("target", "refusal"),
    [
        (
            {"type": "kubernetes.io/dockerconfigjson", "template": {"data": {"x": "{{ token }}"}}},
            "needs the key .dockerconfigjson",
        ),
        ({"type": "kubernetes.io/basic-auth"}, "needs the key username or password"),
        ({"type": "kubernetes.io/service-account-token"}, "Unsupported value"),
        (
            {"template": {"labels": {"tokensync.dev/role": "x"}, "data": {"a": "b"}}},
            "the operator's own",
        ),
        ({"template": {"data": {"bad/key": "x"}}}, "must be Secret keys"),
    ],
    ids=["dockerconfigjson-key", "basic-auth-keys", "type", "own-label", "data-key"],
)
def test_the_crd_refuses_targets_the_api_server_or_the_operator_would(
    cluster: Cluster, target: dict[str, Any], refusal: str
) -> None:
    namespace = cluster.namespace("tplcrd")
    manifest = provider_token(
        "refused",
        namespace=namespace,
        provider={"oauth2": {"tokenUrl": "https://idp.example.com/token"}},
        credentials="creds",
        target="out",
    )
    manifest["spec"]["target"].update(target)
    assert refusal in cluster.apply_refused(manifest)
    assert (
        cluster.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        == []
    )
