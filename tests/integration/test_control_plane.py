"""The suite's control plane is a real one: version, readiness, CRDs, GC, RBAC, cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from support.cluster import REPO
from support.waiting import wait_for
from tokensync_dev.devcluster.cluster import ControlPlane
from tokensync_dev.devcluster.versions import KUBERNETES_VERSION

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.tokensync.dev"},
    "spec": {
        "group": "test.tokensync.dev",
        "scope": "Namespaced",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"size": {"type": "integer", "minimum": 1}},
                            }
                        },
                    }
                },
            }
        ],
    },
}


def _namespace(api_client: client.ApiClient) -> str:
    name = f"cp-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api_client).create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture(scope="module")
def widget_crd(api_client: client.ApiClient) -> str:
    extensions = client.ApiextensionsV1Api(api_client)
    extensions.create_custom_resource_definition(WIDGET_CRD)

    def established() -> bool:
        crd = extensions.read_custom_resource_definition("widgets.test.tokensync.dev")
        conditions = crd.status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_for(established, timeout_s=30, what="the Widget CRD to be established")
    return "widgets"


def test_server_reports_the_version_we_built(control_plane: ControlPlane) -> None:
    version = json.loads(control_plane.kubectl("version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"] == KUBERNETES_VERSION
    assert version["clientVersion"]["gitVersion"] == KUBERNETES_VERSION
    assert control_plane.kubectl("get", "--raw", "/readyz").strip() == "ok"


def test_project_crd_is_installed_and_served(control_plane: ControlPlane) -> None:
    names = control_plane.kubectl("api-resources", "--api-group=tokensync.dev", "-o", "name")
    assert names.split() == ["providertokens.tokensync.dev"]


def test_custom_object_round_trip(api_client: client.ApiClient, widget_crd: str) -> None:
    namespace = _namespace(api_client)
    objects = client.CustomObjectsApi(api_client)
    body = {
        "apiVersion": "test.tokensync.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"size": 3},
    }
    objects.create_namespaced_custom_object("test.tokensync.dev", "v1", namespace, widget_crd, body)
    read = objects.get_namespaced_custom_object(
        "test.tokensync.dev", "v1", namespace, widget_crd, "w1"
    )
    assert read["spec"] == {"size": 3}
    assert read["metadata"]["uid"]
    with pytest.raises(ApiException) as refused:
        objects.create_namespaced_custom_object(
            "test.tokensync.dev",
            "v1",
            namespace,
            widget_crd,
            {**body, "metadata": {"name": "w2"}, "spec": {"size": 0}},
        )
    assert refused.value.status == 422


def test_garbage_collector_deletes_dependents_of_a_deleted_owner(
    api_client: client.ApiClient,
) -> None:
    """The owner is a ProviderToken: exactly the relation tokensync's Secrets rely on."""
    namespace = _namespace(api_client)
    objects = client.CustomObjectsApi(api_client)
    core = client.CoreV1Api(api_client)
    owner = objects.create_namespaced_custom_object(
        "tokensync.dev",
        "v1alpha1",
        namespace,
        "providertokens",
        {
            "apiVersion": "tokensync.dev/v1alpha1",
            "kind": "ProviderToken",
            "metadata": {"name": "owner"},
            "spec": {
                "provider": {"podero": {}},
                "credentialsRef": {"name": "creds"},
                "target": {"name": "token"},
            },
        },
    )
    reference = {
        "apiVersion": "tokensync.dev/v1alpha1",
        "kind": "ProviderToken",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
    }
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "dependent", "ownerReferences": [reference]}}
    )
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "bystander"}})
    objects.delete_namespaced_custom_object(
        "tokensync.dev", "v1alpha1", namespace, "providertokens", "owner"
    )

    def dependent_gone() -> bool:
        names = {cm.metadata.name for cm in core.list_namespaced_config_map(namespace).items}
        return "dependent" not in names

    wait_for(dependent_gone, timeout_s=60, what="the garbage collector to delete the dependent")
    assert core.read_namespaced_config_map("bystander", namespace).metadata.name == "bystander"


def test_namespace_deletion_finishes(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    namespace = _namespace(api_client)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "content"}})
    core.delete_namespace(namespace)

    def gone() -> bool:
        try:
            core.read_namespace(namespace)
        except ApiException as error:
            return error.status == 404
        return False

    wait_for(gone, timeout_s=60, what="the namespace controller to finish deleting")


def test_rbac_is_enforced_for_an_account_without_bindings(
    api_client: client.ApiClient, control_plane: ControlPlane, tmp_path: Path
) -> None:
    namespace = _namespace(api_client)
    core = client.CoreV1Api(api_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    kubeconfig = control_plane.service_account_kubeconfig(
        namespace, "nobody", tmp_path / "nobody.kubeconfig"
    )
    from kubernetes import config

    with config.new_client_from_config(config_file=str(kubeconfig)) as unprivileged:
        with pytest.raises(ApiException) as refused:
            client.CoreV1Api(unprivileged).list_namespaced_secret(namespace)
        assert refused.value.status == 403
        # The token itself is valid: the server knows who is asking, and says no.
        review = client.AuthenticationV1Api(unprivileged).create_self_subject_review(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        )
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:nobody"


def test_operator_account_gets_exactly_the_shipped_rbac(
    api_client: client.ApiClient, operator_kubeconfig_path: Path
) -> None:
    from kubernetes import config

    with config.new_client_from_config(config_file=str(operator_kubeconfig_path)) as operator:
        authz = client.AuthorizationV1Api(operator)

        def allowed(verb: str, resource: str, group: str = "", sub: str = "") -> bool:
            review = authz.create_self_subject_access_review(
                {
                    "spec": {
                        "resourceAttributes": {
                            "verb": verb,
                            "resource": resource,
                            "group": group,
                            "subresource": sub,
                            "namespace": "default",
                        }
                    }
                }
            )
            return bool(review.status.allowed)

        assert allowed("watch", "providertokens", "tokensync.dev")
        assert not allowed("get", "providertokens", "tokensync.dev")
        assert allowed("patch", "providertokens", "tokensync.dev", "status")
        assert allowed("create", "secrets")
        assert not allowed("delete", "secrets")
        assert not allowed("update", "providertokens", "tokensync.dev")
        assert not allowed("list", "configmaps")
        assert not allowed("create", "pods")


def _component_pids(state_dir: Path) -> list[int]:
    state = json.loads((state_dir / "state.json").read_text())
    return [c["pid"] for c in state["components"]]


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def test_a_killed_test_run_leaves_no_control_plane_behind(tmp_path: Path) -> None:
    """SIGKILL the process that started a control plane: the kernel ends its children."""
    workdir = tmp_path / "orphan"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from tokensync_dev.devcluster.cluster import start\n"
        f"start(Path({str(workdir)!r}))\n"
        "print('ready', flush=True)\n"
        "time.sleep(3600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{REPO / 'operator'}{os.pathsep}{REPO / 'dev'}"},
    )
    assert parent.stdout is not None
    assert parent.stdout.readline().strip() == "ready"
    pids = _component_pids(workdir)
    assert len(pids) == 3 and all(_running(pid) for pid in pids)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    wait_for(
        lambda: not any(_running(pid) for pid in pids),
        timeout_s=30,
        what="etcd, kube-apiserver and kube-controller-manager to exit with their parent",
    )


def test_cluster_up_and_down_from_the_command_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'operator'}{os.pathsep}{REPO / 'dev'}"}
    local = tmp_path / "local"
    up = subprocess.run(
        [
            sys.executable,
            "-m",
            "tokensync_dev.devcluster",
            "--dir",
            str(local),
            "up",
            "--crds",
            str(REPO / "crds"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
        timeout=180,
    )
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == f"export KUBECONFIG={local / 'kubeconfig'}"
    pids = _component_pids(local / "cluster")
    assert all(_running(pid) for pid in pids)
    down = subprocess.run(
        [sys.executable, "-m", "tokensync_dev.devcluster", "--dir", str(local), "down"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
        timeout=60,
    )
    assert down.returncode == 0, down.stderr
    assert not any(_running(pid) for pid in pids)
