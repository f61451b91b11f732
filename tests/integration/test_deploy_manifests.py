"""What ships in deploy/ is accepted by the real API server; the chart matches its sources."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.objects import Cluster
from tokensync_dev.devcluster.build import helm_binary

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "tokensync"


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_binary()


def run(*command: str, input_text: str | None = None) -> str:
    result = subprocess.run(
        list(command), capture_output=True, text=True, input=input_text, check=False, timeout=120
    )
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def documents(text: str) -> Iterator[dict[str, Any]]:
    yield from (d for d in yaml.safe_load_all(text) if d)


def test_kustomize_base_is_accepted_by_the_api_server(cluster: Cluster) -> None:
    # A server-side dry run creates nothing, so objects in the new namespace would find
    # it missing: the namespace itself is applied for real first.
    cluster.plane.kubectl("apply", "-f", str(REPO / "deploy" / "rbac" / "namespace.yaml"))
    output = cluster.plane.kubectl("apply", "--dry-run=server", "-k", str(REPO / "deploy"))
    for expected in (
        "customresourcedefinition.apiextensions.k8s.io/providertokens.tokensync.dev",
        "clusterrole.rbac.authorization.k8s.io/tokensync ",
        # deploy/user-roles: ProviderTokens for namespace admins, editors and viewers.
        "clusterrole.rbac.authorization.k8s.io/tokensync-edit ",
        "clusterrole.rbac.authorization.k8s.io/tokensync-view ",
        "deployment.apps/tokensync",
        "service/tokensync-metrics",
    ):
        assert expected in output, output


def test_the_deployment_is_locked_down(cluster: Cluster) -> None:
    rendered = cluster.plane.kubectl("kustomize", str(REPO / "deploy"))
    deployment = next(d for d in documents(rendered) if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_chart_lints(helm: Path) -> None:
    output = run(str(helm), "lint", str(CHART), "--strict")
    assert "0 chart(s) failed" in output


@pytest.mark.parametrize(
    "values",
    [
        [],
        [
            "--set",
            "replicaCount=2",
            "--set",
            "watchNamespaces={team-a,team-b}",
            "--set",
            "allowedHosts={idp.example.com,10.0.0.5:8443}",
            "--set",
            "caBundle.configMapName=corp-ca",
        ],
    ],
    ids=["defaults", "ha-namespaces-hosts-ca"],
)
def test_chart_output_is_accepted_by_the_api_server(
    cluster: Cluster, helm: Path, values: list[str]
) -> None:
    namespace = cluster.namespace("helm")
    rendered = run(
        str(helm),
        "template",
        "tokensync",
        str(CHART),
        "--namespace",
        namespace,
        "--include-crds",
        *values,
    )
    # Every namespaced object names its namespace (helm template --namespace).
    output = cluster.plane.kubectl("apply", "--dry-run=server", "-f", "-", input_text=rendered)
    assert "deployment.apps/tokensync" in output, output
    deployment = next(d for d in documents(rendered) if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    if values:
        assert "--leader-election" in args and "--namespace=team-a" in args
        env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": "TOKENSYNC_ALLOWED_HOSTS", "value": "idp.example.com,10.0.0.5:8443"} in env


def test_chart_crd_and_rbac_are_the_single_sources(helm: Path) -> None:
    rendered = list(documents(run(str(helm), "template", "t", str(CHART), "--include-crds")))
    crd = next(
        d
        for d in rendered
        if d["kind"] == "CustomResourceDefinition"
        and d["metadata"]["name"].endswith("tokensync.dev")
    )
    assert crd == yaml.safe_load((REPO / "crds" / "tokensync.dev_providertokens.yaml").read_text())
    # The chart also renders the user roles (t-edit, t-view): the operator's is named "t".
    role = next(d for d in rendered if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "t")
    shipped = yaml.safe_load((REPO / "deploy" / "rbac" / "clusterrole.yaml").read_text())
    assert role["rules"] == shipped["rules"]
    user_roles = {d["metadata"]["name"]: d["rules"] for d in rendered if d["kind"] == "ClusterRole"}
    for source in documents((REPO / "deploy" / "user-roles" / "clusterroles.yaml").read_text()):
        assert user_roles[source["metadata"]["name"].replace("tokensync", "t")] == source["rules"]
    lease_role = next(d for d in rendered if d["kind"] == "Role")
    shipped_lease = next(
        yaml.safe_load_all((REPO / "deploy" / "rbac" / "leader-election.yaml").read_text())
    )
    assert lease_role["rules"] == shipped_lease["rules"]


def test_monitoring_toggles(helm: Path) -> None:
    rendered = list(
        documents(
            run(
                str(helm),
                "template",
                "t",
                str(CHART),
                "--set",
                "prometheusRule.enabled=true",
                "--set",
                "grafanaDashboard.enabled=true",
                "--set",
                "metrics.serviceMonitor.enabled=true",
            )
        )
    )
    kinds = {d["kind"] for d in rendered}
    assert {"PrometheusRule", "ServiceMonitor", "ConfigMap"} <= kinds
    rule = next(d for d in rendered if d["kind"] == "PrometheusRule")
    alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert rule["spec"] == alerts
    dashboard = next(d for d in rendered if d["kind"] == "ConfigMap")
    assert json.loads(dashboard["data"]["tokensync.json"])["uid"] == "tokensync"
    plain = {d["kind"] for d in documents(run(str(helm), "template", "t", str(CHART)))}
    assert not {"PrometheusRule", "ServiceMonitor"} & plain


def test_the_network_policy_component_as_an_overlay_uses_it(
    cluster: Cluster, helm: Path, tmp_path: Path
) -> None:
    """deploy/components/network-policy, used exactly as its comment tells a user to."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # kustomize takes only relative paths, as a user's overlay would have.
                "resources": [os.path.relpath(REPO / "deploy", overlay)],
                "components": [
                    os.path.relpath(REPO / "deploy" / "components" / "network-policy", overlay)
                ],
                "patches": [
                    {
                        "target": {"kind": "NetworkPolicy", "name": "tokensync"},
                        "patch": "- op: replace\n  path: /spec/egress/1/to\n"
                        "  value: [{ipBlock: {cidr: 10.0.0.12/32}}]\n",
                    }
                ],
            }
        )
    )
    rendered = list(documents(cluster.plane.kubectl("kustomize", str(overlay))))
    policy = next(d for d in rendered if d["kind"] == "NetworkPolicy")
    deployment = next(d for d in rendered if d["kind"] == "Deployment")
    assert policy["spec"]["egress"][1]["to"] == [{"ipBlock": {"cidr": "10.0.0.12/32"}}]
    assert policy["spec"]["podSelector"] == deployment["spec"]["selector"]
    container_ports = {
        p["containerPort"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert {p["port"] for p in policy["spec"]["ingress"][0]["ports"]} == container_ports
    # The same rules as the chart's policy with the same API server address.
    chart = documents(
        run(
            str(helm),
            "template",
            "tokensync",
            str(CHART),
            "--namespace",
            "tokensync-system",
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "networkPolicy.apiServer.cidrs={10.0.0.12/32}",
        )
    )
    chart_policy = next(d for d in chart if d["kind"] == "NetworkPolicy")
    ours = policy["spec"]["egress"]
    theirs = chart_policy["spec"]["egress"]
    assert ours[:2] == theirs[:2]
    assert ours[2]["ports"] == theirs[2]["ports"]
    assert [t["ipBlock"]["cidr"] for t in ours[2]["to"]] == [
        t["ipBlock"]["cidr"] for t in theirs[2]["to"]
    ]
    cluster.plane.kubectl("apply", "-f", str(REPO / "deploy" / "rbac" / "namespace.yaml"))
    output = cluster.plane.kubectl("apply", "--dry-run=server", "-k", str(overlay))
    assert "networkpolicy.networking.k8s.io/tokensync" in output, output
