"""The Helm chart: every toggle lints, renders what it says and is accepted by the API server;
wrong values are refused with a message naming them; namespace users get ProviderTokens
through the built-in admin, edit and view roles."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.objects import Cluster
from support.waiting import wait_for
from tokensync_dev.devcluster.build import helm_binary

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "tokensync"
USER_ROLES = REPO / "deploy" / "user-roles" / "clusterroles.yaml"
ROLLOUTS_KUSTOMIZE = REPO / "deploy" / "rollouts"
SHIPPED_CLUSTER_ROLE = REPO / "deploy" / "rbac" / "clusterrole.yaml"
RELEASE = "tsc"
# Kinds whose CRDs (Prometheus operator) the suite's API server does not serve: rendered
# and checked here, left out of the server dry run.
NOT_SERVED = {"ServiceMonitor", "PrometheusRule"}
API_SERVER_CIDRS = ["10.0.0.12/32", "10.0.0.13/32"]

NETWORK_POLICY: dict[str, Any] = {
    "enabled": True,
    "apiServer": {"cidrs": API_SERVER_CIDRS},
    "providers": {
        "cidrs": [
            {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32", "10.0.0.0/8"]},
            "203.0.113.0/24",
        ],
        "ports": [443, 8443],
    },
    "ingress": {
        "from": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ]
    },
    "extraEgress": [
        {"to": [{"podSelector": {"matchLabels": {"app": "idp"}}}], "ports": [{"port": 8080}]}
    ],
}
EXTRA_OBJECTS: list[Any] = [
    {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "{{ .Release.Name }}-extra", "namespace": "{{ .Release.Namespace }}"},
        "data": {"workers": "{{ .Values.workers }}", "plain": "as is"},
    },
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-from-string\n"
    "  namespace: {{ .Release.Namespace }}\ndata:\n  release: {{ .Release.Name | quote }}\n",
]

COMBINATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "replicas-2": {"replicaCount": 2},
    "network-policy": {"networkPolicy": NETWORK_POLICY},
    "no-aggregate-roles": {"aggregateRoles": {"enabled": False}},
    "extra-objects": {"extraObjects": EXTRA_OBJECTS},
    # Namespaces every API server has, so that the dry run finds them.
    "rollouts": {"rollouts": {"enabled": True, "namespaces": ["default", "kube-public"]}},
    "service-account-tokens": {
        "serviceAccountTokens": [
            {"namespace": "default", "serviceAccounts": ["billing-api", "reports"]},
            {"namespace": "kube-public", "serviceAccounts": ["ledger"]},
        ]
    },
    "everything": {
        "replicaCount": 3,
        "watchNamespaces": ["team-a", "team-b"],
        "allowedHosts": ["idp.example.com", "10.0.0.5:8443", "[fd00::5]:8443"],
        "allowPrivateNetworks": True,
        "caBundle": {"configMapName": "corp-ca"},
        "providerTimeoutSeconds": 2.5,
        "workers": 8,
        "logFormat": "text",
        "logLevel": "DEBUG",
        "networkPolicy": NETWORK_POLICY,
        "extraObjects": EXTRA_OBJECTS,
        "podDisruptionBudget": {"maxUnavailable": "50%"},
        "podLabels": {"team": "platform"},
        "podAnnotations": {"example.com/owner": "platform"},
        "priorityClassName": "tokensync-high",
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/t"}},
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "tokensync"}},
            }
        ],
        "metrics": {"port": 9090, "serviceMonitor": {"enabled": True}},
        "health": {"port": 9091},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
    },
}

# What each combination adds, so that its dry run is known to have covered it.
ALSO_RENDERED: dict[str, set[str]] = {
    "defaults": {"CustomResourceDefinition", "Deployment", "ClusterRole", "Role"},
    "replicas-2": {"PodDisruptionBudget"},
    "network-policy": {"NetworkPolicy"},
    "no-aggregate-roles": {"ClusterRole"},
    "extra-objects": {"ConfigMap"},
    "rollouts": {"Role", "RoleBinding"},
    "service-account-tokens": {"Role", "RoleBinding"},
    "everything": {"PodDisruptionBudget", "NetworkPolicy", "ConfigMap", *NOT_SERVED},
}


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_binary()


def helm_run(
    helm: Path, *args: str, values: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    """helm with ``values`` as a values file on stdin, as users give them (--set cannot
    express objects in lists)."""
    return subprocess.run(
        [str(helm), *args, *(["-f", "-"] if values is not None else [])],
        input=json.dumps(values) if values is not None else None,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def render(helm: Path, values: dict[str, Any], namespace: str = "tokensync-system") -> list[Any]:
    result = helm_run(
        helm,
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "--include-crds",
        values=values,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def only(documents: list[Any], kind: str) -> dict[str, Any]:
    found = [d for d in documents if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} rendered"
    return dict(found[0])


def kinds(documents: list[Any]) -> list[str]:
    return [d["kind"] for d in documents]


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_chart_lints_strictly(helm: Path, combination: str) -> None:
    result = helm_run(helm, "lint", str(CHART), "--strict", values=COMBINATIONS[combination])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_every_combination_is_accepted_by_the_api_server(
    cluster: Cluster, helm: Path, combination: str
) -> None:
    # Objects of a server dry run find their namespace missing unless it exists for real.
    namespace = cluster.namespace("chart")
    documents = render(helm, COMBINATIONS[combination], namespace)
    served = [d for d in documents if d["kind"] not in NOT_SERVED]
    output = cluster.plane.kubectl(
        "apply", "--dry-run=server", "-f", "-", input_text=yaml.safe_dump_all(served)
    )
    accepted = [line for line in output.splitlines() if line.endswith("(server dry run)")]
    assert len(accepted) == len(served), output
    for document in served:
        # kubectl names each object kind.group/name (core objects: kind/name).
        group = document["apiVersion"].rpartition("/")[0]
        kind = document["kind"].lower() + (f".{group}" if group else "")
        assert f"{kind}/{document['metadata']['name']} " in output, output
    assert set(kinds(documents)) >= ALSO_RENDERED[combination]


# A wrong value, and what the refusal must say: the value's path and what is wrong.
WRONG_VALUES: list[tuple[list[str], str]] = [
    (["--set", "replicaCount=-1"], "at '/replicaCount': minimum: got -1, want 0"),
    (["--set", "caBundle.configMapName=My_Bundle"], "at '/caBundle/configMapName': 'My_Bundle'"),
    (["--set", "logFormat=xml"], "at '/logFormat': value must be one of 'json', 'text'"),
    (["--set", "replicacount=2"], "at '': additional properties 'replicacount' not allowed"),
    (["--set", "workers=many"], "at '/workers': got string, want integer"),
    (["--set", "workers=5000"], "at '/workers': maximum"),
    (["--set", "allowedHosts={https://x/}"], "at '/allowedHosts/0': 'https://x/' does not"),
    (["--set", "watchNamespaces={Team_A}"], "at '/watchNamespaces/0': 'Team_A' does not"),
    (["--set", "providerTimeoutSeconds=301"], "at '/providerTimeoutSeconds': maximum"),
    (["--set", "providerTimeoutSeconds=0"], "at '/providerTimeoutSeconds': exclusiveMin"),
    (["--set", "metrics.port=70000"], "at '/metrics/port': maximum"),
    (["--set", "image.pullPolicy=Sometimes"], "at '/image/pullPolicy': value must be one of"),
    (
        ["--set", "networkPolicy.enable=true"],
        "at '/networkPolicy': additional properties 'enable'",
    ),
    (["--set", "podDisruptionBudget.maxUnavailable=0"], "'/podDisruptionBudget/maxUnavail"),
    (
        ["--set", "networkPolicy.enabled=true", "--set", "networkPolicy.apiServer.cidrs={x}"],
        "at '/networkPolicy/apiServer/cidrs/0': 'x' does not match",
    ),
    (["--set", "rollouts.namespaces=x"], "at '/rollouts/namespaces': got string, want array"),
    (["--set", "rollouts.namespaces={Team_A}"], "at '/rollouts/namespaces/0': 'Team_A' does not"),
    (["--set", "rollouts.enabled=yes"], "at '/rollouts/enabled': got string, want boolean"),
    (["--set", "rollouts.enable=true"], "at '/rollouts': additional properties 'enable'"),
    (["--set", "serviceAccountTokens=x"], "at '/serviceAccountTokens': got string, want array"),
    (
        ["--set-json", 'serviceAccountTokens=[{"namespace": "team-a"}]'],
        "at '/serviceAccountTokens/0': missing property 'serviceAccounts'",
    ),
    (
        ["--set-json", 'serviceAccountTokens=[{"serviceAccounts": ["a"]}]'],
        "at '/serviceAccountTokens/0': missing property 'namespace'",
    ),
    (
        ["--set-json", 'serviceAccountTokens=[{"namespace": "team-a", "serviceAccounts": []}]'],
        "at '/serviceAccountTokens/0/serviceAccounts': minItems: got 0, want 1",
    ),
    (
        ["--set-json", 'serviceAccountTokens=[{"namespace": "team-a", "serviceAccounts": "a"}]'],
        "at '/serviceAccountTokens/0/serviceAccounts': got string, want array",
    ),
    (
        [
            "--set-json",
            'serviceAccountTokens=[{"namespace": "team-a", "serviceAccounts": ["Billing_API"]}]',
        ],
        "at '/serviceAccountTokens/0/serviceAccounts/0': 'Billing_API' does not match",
    ),
    (
        ["--set-json", 'serviceAccountTokens=[{"namespace": "team-a", "serviceAccounts": [""]}]'],
        "at '/serviceAccountTokens/0/serviceAccounts/0': '' does not match",
    ),
    (
        [
            "--set-json",
            'serviceAccountTokens=[{"namespace": "team-a", "serviceAccounts": ["a", "a"]}]',
        ],
        "at '/serviceAccountTokens/0/serviceAccounts': items at 0 and 1 are equal",
    ),
    (
        ["--set-json", 'serviceAccountTokens=[{"namespace": "Team_A", "serviceAccounts": ["a"]}]'],
        "at '/serviceAccountTokens/0/namespace': 'Team_A' does not match",
    ),
    (
        ["--set-json", 'serviceAccountTokens=[{"namespace": "team-a", "serviceAccount": ["a"]}]'],
        "at '/serviceAccountTokens/0': additional properties 'serviceAccount' not allowed",
    ),
    # Checked by the templates: the schema cannot say these.
    (
        ["--set", "rollouts.namespaces={team-a,team-b}"],
        "rollouts.namespaces lists team-a, team-b but rollouts.enabled is false",
    ),
    (
        [
            "--set",
            "rollouts.enabled=true",
            "--set",
            "watchNamespaces={team-a}",
            "--set",
            "rollouts.namespaces={team-a,team-b}",
        ],
        "rollouts.namespaces: team-b is not in watchNamespaces (team-a)",
    ),
    (
        [
            "--set",
            "watchNamespaces={team-a}",
            "--set-json",
            'serviceAccountTokens=[{"namespace": "team-a", "serviceAccounts": ["a"]},'
            ' {"namespace": "team-b", "serviceAccounts": ["b"]}]',
        ],
        "serviceAccountTokens: team-b is not in watchNamespaces (team-a)",
    ),
    (
        [
            "--set-json",
            'serviceAccountTokens=[{"namespace": "team-a", "serviceAccounts": ["a"]},'
            ' {"namespace": "team-a", "serviceAccounts": ["b"]}]',
        ],
        "serviceAccountTokens: namespace team-a is listed twice",
    ),
    (["--set", "networkPolicy.enabled=true"], "networkPolicy.apiServer.cidrs: give the API"),
    (["--set", "metrics.port=8081"], "metrics.port and health.port are both 8081"),
]


@pytest.mark.parametrize(
    ("values", "named"), WRONG_VALUES, ids=[" ".join(v[1::2]) for v, _ in WRONG_VALUES]
)
def test_a_wrong_value_fails_with_a_message_naming_it(
    helm: Path, values: list[str], named: str
) -> None:
    result = helm_run(helm, "template", RELEASE, str(CHART), *values)
    assert result.returncode != 0, result.stdout
    assert named in result.stderr, result.stderr
    assert not result.stdout


def test_install_refuses_a_wrong_value(cluster: Cluster, helm: Path) -> None:
    # What users run. helm install reaches the cluster first (even with --dry-run=client),
    # so it runs against the suite's API server; the schema refuses before anything else.
    namespace = cluster.namespace("chart")
    result = helm_run(
        helm,
        "install",
        RELEASE,
        str(CHART),
        "--dry-run=server",
        "--kubeconfig",
        str(cluster.plane.admin_kubeconfig),
        "--namespace",
        namespace,
        "--set",
        "logFormat=xml",
    )
    assert result.returncode != 0, result.stdout
    assert "INSTALLATION FAILED" in result.stderr, result.stderr
    assert "at '/logFormat': value must be one of 'json', 'text'" in result.stderr


@pytest.mark.parametrize(
    ("replicas", "enabled", "budget"),
    [(0, True, False), (1, True, False), (2, True, True), (3, True, True), (3, False, False)],
)
def test_a_disruption_budget_only_with_several_replicas(
    helm: Path, replicas: int, enabled: bool, budget: bool
) -> None:
    documents = render(
        helm, {"replicaCount": replicas, "podDisruptionBudget": {"enabled": enabled}}
    )
    deployment = only(documents, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert ("--leader-election" in args) is (replicas > 1)
    assert ("PodDisruptionBudget" in kinds(documents)) is budget
    if budget:
        pdb = only(documents, "PodDisruptionBudget")
        assert pdb["apiVersion"] == "policy/v1"
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


def test_network_policy_opens_exactly_the_operator_s_ports(helm: Path) -> None:
    assert "NetworkPolicy" not in kinds(render(helm, {}))
    documents = render(
        helm,
        {"networkPolicy": NETWORK_POLICY, "metrics": {"port": 9090}, "health": {"port": 9091}},
    )
    deployment = only(documents, "Deployment")
    policy = only(documents, "NetworkPolicy")["spec"]
    container_ports = {
        p["containerPort"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert container_ports == {9090, 9091}
    assert policy["podSelector"] == deployment["spec"]["selector"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    [ingress] = policy["ingress"]
    assert {p["port"] for p in ingress["ports"]} == container_ports
    assert ingress["from"] == NETWORK_POLICY["ingress"]["from"]

    dns, api_server, providers, extra = policy["egress"]
    assert sorted((p["protocol"], p["port"]) for p in dns["ports"]) == [("TCP", 53), ("UDP", 53)]
    assert dns["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}
    ]
    assert [t["ipBlock"]["cidr"] for t in api_server["to"]] == API_SERVER_CIDRS
    assert [p["port"] for p in api_server["ports"]] == [443, 6443]
    assert providers["to"] == [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32", "10.0.0.0/8"]}},
        {"ipBlock": {"cidr": "203.0.113.0/24"}},
    ]
    assert [p["port"] for p in providers["ports"]] == [443, 8443]
    assert extra == NETWORK_POLICY["extraEgress"][0]


def test_network_policy_defaults_reach_any_provider_over_https(helm: Path) -> None:
    documents = render(
        helm,
        {"networkPolicy": {"enabled": True, "apiServer": {"cidrs": API_SERVER_CIDRS}}},
    )
    policy = only(documents, "NetworkPolicy")["spec"]
    assert "from" not in policy["ingress"][0]
    assert len(policy["egress"]) == 3
    providers = policy["egress"][2]
    assert providers == {
        "ports": [{"protocol": "TCP", "port": 443}],
        "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
    }


def test_aggregated_roles_are_the_single_source_with_the_release_s_names(helm: Path) -> None:
    shipped = [d for d in yaml.safe_load_all(USER_ROLES.read_text()) if d]
    assert [d["metadata"]["name"] for d in shipped] == ["tokensync-edit", "tokensync-view"]
    rendered = {d["metadata"]["name"]: d for d in render(helm, {}) if d["kind"] == "ClusterRole"}
    assert set(rendered) == {RELEASE, f"{RELEASE}-edit", f"{RELEASE}-view"}
    for source in shipped:
        role = rendered[source["metadata"]["name"].replace("tokensync", RELEASE)]
        assert role["rules"] == source["rules"]
        aggregation = {k: v for k, v in role["metadata"]["labels"].items() if k.startswith("rbac.")}
        assert aggregation == {
            k: v for k, v in source["metadata"]["labels"].items() if k.startswith("rbac.")
        }
    prefix = "rbac.authorization.k8s.io/aggregate-to-"
    edit_labels = rendered[f"{RELEASE}-edit"]["metadata"]["labels"]
    assert edit_labels[prefix + "admin"] == edit_labels[prefix + "edit"] == "true"
    assert rendered[f"{RELEASE}-view"]["metadata"]["labels"][prefix + "view"] == "true"
    assert prefix + "edit" not in rendered[f"{RELEASE}-view"]["metadata"]["labels"]

    off = render(helm, {"aggregateRoles": {"enabled": False}})
    assert [d["metadata"]["name"] for d in off if d["kind"] == "ClusterRole"] == [RELEASE]


def test_extra_objects_are_rendered_through_tpl(helm: Path) -> None:
    documents = render(helm, {"extraObjects": EXTRA_OBJECTS, "workers": 7}, "apps")
    config_maps = {d["metadata"]["name"]: d for d in documents if d["kind"] == "ConfigMap"}
    assert config_maps[f"{RELEASE}-extra"]["metadata"]["namespace"] == "apps"
    assert config_maps[f"{RELEASE}-extra"]["data"] == {"workers": "7", "plain": "as is"}
    assert config_maps[f"{RELEASE}-from-string"]["data"] == {"release": RELEASE}


def test_pod_extras_never_replace_the_selector(helm: Path) -> None:
    defaults = only(render(helm, {}), "Deployment")["spec"]["template"]
    for absent in ("priorityClassName", "topologySpreadConstraints"):
        assert absent not in defaults["spec"]
    labels = {"team": "platform", "app.kubernetes.io/name": "something-else"}
    documents = render(helm, COMBINATIONS["everything"] | {"podLabels": labels})
    template = only(documents, "Deployment")["spec"]["template"]
    assert template["metadata"]["labels"] == {
        "app.kubernetes.io/name": "tokensync",
        "app.kubernetes.io/instance": RELEASE,
        "team": "platform",
    }
    assert template["spec"]["priorityClassName"] == "tokensync-high"
    assert template["spec"]["topologySpreadConstraints"][0]["maxSkew"] == 1
    account = only(documents, "ServiceAccount")
    assert account["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/t"
    }
    # The lock-down is not a value: no combination loosens it.
    assert template["spec"]["securityContext"]["runAsNonRoot"] is True
    container = template["spec"]["containers"][0]["securityContext"]
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False


def test_the_crd_is_kept_on_uninstall(helm: Path) -> None:
    crd = only(render(helm, {}), "CustomResourceDefinition")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


# --- the aggregated roles for real: who may do what through admin, edit and view ---


@pytest.fixture(scope="module")
def aggregation(cluster: Cluster) -> None:
    """The suite's controller manager runs the clusterrole aggregation controller, which
    fills admin, edit and view; a test of what they grant waits until it has."""
    wait_for(
        lambda: "pods" in cluster.plane.kubectl("get", "clusterrole", "view", "-o", "json"),
        timeout_s=60,
        what="the clusterrole aggregation controller to fill the built-in view role",
    )


def can_i(cluster: Cluster, user: str, namespace: str, verb: str, *resource: str) -> bool:
    answer = cluster.plane.kubectl(
        "auth", "can-i", verb, *resource, "--as", user, "-n", namespace, check=False
    )
    first = answer.strip().splitlines()[0] if answer.strip() else ""
    assert first in ("yes", "no"), answer
    return first == "yes"


@pytest.mark.parametrize("source", ["chart", "kustomize"])
def test_namespace_users_get_provider_tokens_through_the_built_in_roles(
    cluster: Cluster, helm: Path, aggregation: None, source: str
) -> None:
    namespace = cluster.namespace("roles")
    suffix = uuid.uuid4().hex[:6]
    users = {role: f"{role}-user-{suffix}" for role in ("admin", "edit", "view")}
    for role, user in users.items():
        cluster.plane.kubectl(
            "create",
            "rolebinding",
            f"{role}-{suffix}",
            f"--clusterrole={role}",
            f"--user={user}",
            "-n",
            namespace,
        )
    ptk = "providertokens.tokensync.dev"
    # Nothing else grants it: without the roles, even a namespace admin may not.
    assert not can_i(cluster, users["admin"], namespace, "create", ptk)

    if source == "chart":
        roles = [
            d
            for d in render(helm, {})
            if d["kind"] == "ClusterRole" and d["metadata"]["name"] != RELEASE
        ]
        manifest = ["-f", "-"]
        text: str | None = yaml.safe_dump_all(roles)
    else:
        manifest = ["-k", str(USER_ROLES.parent)]
        text = None
    cluster.plane.kubectl("apply", *manifest, input_text=text)
    try:
        wait_for(
            lambda: (
                can_i(cluster, users["admin"], namespace, "create", ptk)
                and can_i(cluster, users["view"], namespace, "list", ptk)
            ),
            timeout_s=30,
            what="the ProviderToken rules to be aggregated into admin and view",
        )
        for user in (users["admin"], users["edit"]):
            for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
                assert can_i(cluster, user, namespace, verb, ptk), (user, verb)
            assert can_i(cluster, user, namespace, "deletecollection", ptk), user
            assert can_i(cluster, user, namespace, "get", ptk, "--subresource=status")
            # The status is the operator's: a user who could write it could fake Ready.
            assert not can_i(cluster, user, namespace, "patch", ptk, "--subresource=status")
        viewer = users["view"]
        for verb in ("get", "list", "watch"):
            assert can_i(cluster, viewer, namespace, verb, ptk), verb
        assert can_i(cluster, viewer, namespace, "get", ptk, "--subresource=status")
        for verb in ("create", "update", "patch", "delete"):
            assert not can_i(cluster, viewer, namespace, verb, ptk), verb
        # A RoleBinding grants within its namespace only.
        other = cluster.namespace("roles-other")
        assert not can_i(cluster, users["admin"], other, "create", ptk)
    finally:
        cluster.plane.kubectl("delete", *manifest, input_text=text)
    # Gone with the roles: the grant came from them, and the next source starts clean.
    wait_for(
        lambda: not can_i(cluster, users["admin"], namespace, "create", ptk),
        timeout_s=30,
        what="the ProviderToken rules to leave admin once the roles are deleted",
    )


# --- rollout on rotation: list and patch on workloads, only where a namespace grants it ---

ROLLOUT_RULES = [
    {
        "apiGroups": ["apps"],
        "resources": ["deployments", "statefulsets", "daemonsets"],
        "verbs": ["list", "patch"],
    }
]


def operator_args(documents: list[Any]) -> list[str]:
    return list(only(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"])


def rollout_objects(documents: list[Any], release: str = RELEASE) -> list[dict[str, Any]]:
    return [
        d
        for d in documents
        if d["kind"] in ("Role", "RoleBinding") and d["metadata"]["name"] == f"{release}-rollouts"
    ]


def granted(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(group, resource, verb) for each right the rules give, however they are written."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def cluster_scoped(documents: list[Any]) -> list[Any]:
    return [d for d in documents if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def test_rollouts_are_off_by_default(helm: Path) -> None:
    documents = render(helm, {})
    assert "--rollouts" not in operator_args(documents)
    assert not rollout_objects(documents)
    # The only Role is the leader election's, in the operator's own namespace.
    assert [d["metadata"]["name"] for d in documents if d["kind"] in ("Role", "RoleBinding")] == [
        f"{RELEASE}-leader-election",
        f"{RELEASE}-leader-election",
    ]
    # The flag alone grants nothing: namespace owners may apply deploy/rollouts/ themselves.
    flag_only = render(helm, {"rollouts": {"enabled": True}})
    assert operator_args(flag_only).count("--rollouts") == 1
    assert not rollout_objects(flag_only)
    assert cluster_scoped(flag_only) == cluster_scoped(documents)


def test_rollouts_grant_list_and_patch_in_each_listed_namespace_only(helm: Path) -> None:
    off = render(helm, {}, "ops")
    documents = render(
        helm,
        {
            "watchNamespaces": ["team-a", "team-b", "team-c"],
            "rollouts": {"enabled": True, "namespaces": ["team-a", "team-b"]},
        },
        "ops",
    )
    assert operator_args(documents).count("--rollouts") == 1
    # Nothing cluster-wide: the ClusterRoles and their bindings are those without rollouts.
    assert cluster_scoped(documents) == cluster_scoped(off)
    objects = rollout_objects(documents)
    assert sorted((d["kind"], d["metadata"]["namespace"]) for d in objects) == [
        ("Role", "team-a"),
        ("Role", "team-b"),
        ("RoleBinding", "team-a"),
        ("RoleBinding", "team-b"),
    ]
    labels = only(documents, "Deployment")["metadata"]["labels"]
    for document in objects:
        assert document["apiVersion"] == "rbac.authorization.k8s.io/v1"
        assert document["metadata"]["labels"] == labels
        if document["kind"] == "Role":
            assert document["rules"] == ROLLOUT_RULES
        else:
            assert document["roleRef"] == {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": f"{RELEASE}-rollouts",
            }
            assert document["subjects"] == [
                {"kind": "ServiceAccount", "name": RELEASE, "namespace": "ops"}
            ]
    # The subject is the chart's own ServiceAccount, the one the operator runs as.
    account = only(documents, "ServiceAccount")["metadata"]
    assert (account["name"], account["namespace"]) == (RELEASE, "ops")
    # With every namespace watched, any namespace may be listed.
    everywhere = render(helm, {"rollouts": {"enabled": True, "namespaces": ["team-z"]}}, "ops")
    assert [d["metadata"]["namespace"] for d in rollout_objects(everywhere)] == ["team-z"] * 2


def test_rollout_rules_are_those_a_namespace_owner_applies(helm: Path) -> None:
    """deploy/rollouts/ (kustomize, applied by a namespace owner) and the chart grant the
    same verbs to the same operator."""
    shipped = [
        d
        for d in yaml.safe_load_all((ROLLOUTS_KUSTOMIZE / "role.yaml").read_text())
        if d and d.get("kind") in ("Role", "RoleBinding")
    ]
    [role] = [d for d in shipped if d["kind"] == "Role"]
    [binding] = [d for d in shipped if d["kind"] == "RoleBinding"]
    assert granted(role["rules"]) == granted(ROLLOUT_RULES)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    # The kustomize install's operator: ServiceAccount tokensync in tokensync-system, what
    # the chart binds for a release named tokensync there.
    account = yaml.safe_load((REPO / "deploy" / "rbac" / "serviceaccount.yaml").read_text())
    chart = rollout_objects(
        [
            d
            for d in yaml.safe_load_all(
                helm_run(
                    helm,
                    "template",
                    "tokensync",
                    str(CHART),
                    "--namespace",
                    account["metadata"]["namespace"],
                    values={"rollouts": {"enabled": True, "namespaces": ["team-a"]}},
                ).stdout
            )
            if d
        ],
        "tokensync",
    )
    [chart_binding] = [d for d in chart if d["kind"] == "RoleBinding"]
    assert [
        {k: s.get(k) for k in ("kind", "name", "namespace")} for s in binding["subjects"]
    ] == chart_binding["subjects"]
    assert chart_binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]


def test_rollout_grant_on_the_api_server_is_list_and_patch_in_listed_namespaces(
    cluster: Cluster, helm: Path
) -> None:
    """What the rendered Roles grant, asked of a real API server as the operator's
    ServiceAccount: list and patch on the three workload kinds in the listed namespaces,
    nothing else, nowhere else; and nothing once they are deleted."""
    home = cluster.namespace("chart")
    granting = [cluster.namespace("rollouts"), cluster.namespace("rollouts")]
    other = cluster.namespace("rollouts-other")
    objects = rollout_objects(
        render(helm, {"rollouts": {"enabled": True, "namespaces": granting}}, home)
    )
    assert len(objects) == 4
    text = yaml.safe_dump_all(objects)
    operator = f"system:serviceaccount:{home}:{RELEASE}"
    workloads = ("deployments.apps", "statefulsets.apps", "daemonsets.apps")
    cluster.plane.kubectl("apply", "-f", "-", input_text=text)
    try:
        wait_for(
            lambda: all(can_i(cluster, operator, n, "patch", workloads[0]) for n in granting),
            timeout_s=30,
            what="the rollout Roles to take effect",
        )
        for namespace in granting:
            for workload in workloads:
                for verb in ("list", "patch"):
                    assert can_i(cluster, operator, namespace, verb, workload), (verb, workload)
                for verb in ("get", "watch", "create", "update", "delete", "deletecollection"):
                    assert not can_i(cluster, operator, namespace, verb, workload), (verb, workload)
                # No scaling: the subresource is not granted with its parent.
                assert not can_i(
                    cluster, operator, namespace, "patch", workload, "--subresource=scale"
                )
            for resource in ("pods", "replicasets.apps", "secrets", "jobs.batch"):
                for verb in ("list", "patch", "delete"):
                    assert not can_i(cluster, operator, namespace, verb, resource), (verb, resource)
        for workload in workloads:
            for verb in ("list", "patch"):
                assert not can_i(cluster, operator, other, verb, workload), (verb, workload)
                assert not can_i(cluster, operator, home, verb, workload), (verb, workload)
                assert not can_i(cluster, operator, other, verb, workload, "--all-namespaces")
    finally:
        cluster.plane.kubectl("delete", "-f", "-", input_text=text)
    # Revoked with the objects: the grant came from them only.
    wait_for(
        lambda: not any(can_i(cluster, operator, n, "patch", workloads[0]) for n in granting),
        timeout_s=30,
        what="the rollout grant to go with its Roles",
    )


# --- ServiceAccount tokens: create on serviceaccounts/token, named accounts, per namespace ---

SERVICE_ACCOUNT_TOKENS_KUSTOMIZE = REPO / "deploy" / "service-account-tokens"
GRANT = "service-account-tokens"
# Given per namespace only, for named ServiceAccounts: never in the cluster-wide rules.
TOKEN_RIGHT = ("", "serviceaccounts/token", "create")


def service_account_token_rules(accounts: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "apiGroups": [""],
            "resources": ["serviceaccounts/token"],
            "verbs": ["create"],
            "resourceNames": accounts,
        }
    ]


def token_grant_objects(documents: list[Any], release: str = RELEASE) -> list[dict[str, Any]]:
    return [
        d
        for d in documents
        if d["kind"] in ("Role", "RoleBinding") and d["metadata"]["name"] == f"{release}-{GRANT}"
    ]


def test_service_account_tokens_are_granted_nowhere_by_default(helm: Path) -> None:
    assert not token_grant_objects(render(helm, {}))


def test_service_account_tokens_grant_create_on_the_named_accounts_only(helm: Path) -> None:
    watched: dict[str, Any] = {"watchNamespaces": ["team-a", "team-b", "team-c"]}
    off = render(helm, watched, "ops")
    documents = render(
        helm,
        watched
        | {
            "serviceAccountTokens": [
                {"namespace": "team-a", "serviceAccounts": ["billing-api", "reports"]},
                {"namespace": "team-b", "serviceAccounts": ["ledger"]},
            ],
        },
        "ops",
    )
    # Nothing cluster-wide, no flag: only the Roles and RoleBindings are new.
    assert cluster_scoped(documents) == cluster_scoped(off)
    assert operator_args(documents) == operator_args(off)
    objects = token_grant_objects(documents)
    assert len(documents) == len(off) + len(objects)
    assert sorted((d["kind"], d["metadata"]["namespace"]) for d in objects) == [
        ("Role", "team-a"),
        ("Role", "team-b"),
        ("RoleBinding", "team-a"),
        ("RoleBinding", "team-b"),
    ]
    rules = {d["metadata"]["namespace"]: d["rules"] for d in objects if d["kind"] == "Role"}
    assert rules == {
        "team-a": service_account_token_rules(["billing-api", "reports"]),
        "team-b": service_account_token_rules(["ledger"]),
    }
    labels = only(documents, "Deployment")["metadata"]["labels"]
    for document in objects:
        assert document["apiVersion"] == "rbac.authorization.k8s.io/v1"
        assert document["metadata"]["labels"] == labels
        if document["kind"] == "RoleBinding":
            assert document["roleRef"] == {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": f"{RELEASE}-{GRANT}",
            }
            assert document["subjects"] == [
                {"kind": "ServiceAccount", "name": RELEASE, "namespace": "ops"}
            ]
    # The subject is the chart's own ServiceAccount, the one the operator runs as.
    account = only(documents, "ServiceAccount")["metadata"]
    assert (account["name"], account["namespace"]) == (RELEASE, "ops")
    # With every namespace watched, any namespace may be listed.
    everywhere = render(
        helm, {"serviceAccountTokens": [{"namespace": "team-z", "serviceAccounts": ["a"]}]}, "ops"
    )
    assert [d["metadata"]["namespace"] for d in token_grant_objects(everywhere)] == ["team-z"] * 2


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_no_value_widens_the_operator_s_cluster_wide_rules(helm: Path, combination: str) -> None:
    """Whatever the values, the operator's ClusterRole is deploy/rbac/clusterrole.yaml's
    (the chart adds no verb to it), and ServiceAccount tokens are not in it."""
    shipped = yaml.safe_load(SHIPPED_CLUSTER_ROLE.read_text())
    documents = render(helm, COMBINATIONS[combination])
    [role] = [
        d for d in documents if d["kind"] == "ClusterRole" and d["metadata"]["name"] == RELEASE
    ]
    assert role["rules"] == shipped["rules"]
    rights = granted(role["rules"])
    assert TOKEN_RIGHT not in rights
    assert not any(resource.startswith("serviceaccounts") for _, resource, _ in rights)
    assert not any("*" in right for right in rights)
    # The operator is bound to nothing else cluster-wide.
    bindings = [d for d in documents if d["kind"] == "ClusterRoleBinding"]
    assert [b["roleRef"]["name"] for b in bindings] == [RELEASE]


def test_service_account_token_rules_are_those_a_namespace_owner_applies(
    cluster: Cluster, helm: Path
) -> None:
    """deploy/service-account-tokens/ (kustomize, applied by a namespace owner) and the
    chart grant the same right to the same operator; the directory builds and is accepted
    by the API server in a namespace, as its comments tell an owner to apply it."""
    built = cluster.plane.kubectl("kustomize", str(SERVICE_ACCOUNT_TOKENS_KUSTOMIZE))
    shipped = [d for d in yaml.safe_load_all(built) if d]
    assert sorted(d["kind"] for d in shipped) == ["Role", "RoleBinding"]
    [role] = [d for d in shipped if d["kind"] == "Role"]
    [binding] = [d for d in shipped if d["kind"] == "RoleBinding"]
    assert role["metadata"]["name"] == binding["metadata"]["name"] == f"tokensync-{GRANT}"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    [rule] = role["rules"]
    # The chart as the kustomize install's operator: release tokensync in tokensync-system,
    # the ServiceAccount deploy/rbac makes; for the ServiceAccounts the shipped file names.
    account = yaml.safe_load((REPO / "deploy" / "rbac" / "serviceaccount.yaml").read_text())
    result = helm_run(
        helm,
        "template",
        "tokensync",
        str(CHART),
        "--namespace",
        account["metadata"]["namespace"],
        values={
            "serviceAccountTokens": [
                {"namespace": "team-a", "serviceAccounts": rule["resourceNames"]}
            ]
        },
    )
    assert result.returncode == 0, result.stderr
    chart = token_grant_objects([d for d in yaml.safe_load_all(result.stdout) if d], "tokensync")
    [chart_role] = [d for d in chart if d["kind"] == "Role"]
    [chart_binding] = [d for d in chart if d["kind"] == "RoleBinding"]
    assert chart_role["rules"] == role["rules"]
    assert (
        chart_binding["subjects"]
        == binding["subjects"]
        == [
            {
                "kind": "ServiceAccount",
                "name": account["metadata"]["name"],
                "namespace": account["metadata"]["namespace"],
            }
        ]
    )
    namespace = cluster.namespace("grant")
    for source in (
        ["-k", str(SERVICE_ACCOUNT_TOKENS_KUSTOMIZE)],
        ["-f", str(SERVICE_ACCOUNT_TOKENS_KUSTOMIZE / "role.yaml")],
    ):
        output = cluster.plane.kubectl("apply", "--dry-run=server", "-n", namespace, *source)
        assert f"role.rbac.authorization.k8s.io/tokensync-{GRANT} created" in output, output
        assert f"rolebinding.rbac.authorization.k8s.io/tokensync-{GRANT} created" in output, output


def test_service_account_token_grant_on_the_api_server_is_create_for_named_accounts_only(
    cluster: Cluster, helm: Path
) -> None:
    """What the rendered Roles grant, asked of a real API server as the operator's
    ServiceAccount: a token of the named ServiceAccounts, where listed; nothing more,
    nowhere else; and nothing once they are deleted."""
    home = cluster.namespace("chart")
    granting = [cluster.namespace("sa-tokens"), cluster.namespace("sa-tokens")]
    other = cluster.namespace("sa-tokens-other")
    objects = token_grant_objects(
        render(
            helm,
            {
                "serviceAccountTokens": [
                    {"namespace": granting[0], "serviceAccounts": ["billing-api", "reports"]},
                    {"namespace": granting[1], "serviceAccounts": ["ledger"]},
                ]
            },
            home,
        )
    )
    assert len(objects) == 4
    text = yaml.safe_dump_all(objects)
    operator = f"system:serviceaccount:{home}:{RELEASE}"

    def token(namespace: str, account: str) -> bool:
        return can_i(
            cluster,
            operator,
            namespace,
            "create",
            f"serviceaccounts/{account}",
            "--subresource=token",
        )

    cluster.plane.kubectl("apply", "-f", "-", input_text=text)
    try:
        wait_for(
            lambda: token(granting[0], "billing-api") and token(granting[1], "ledger"),
            timeout_s=30,
            what="the ServiceAccount token Roles to take effect",
        )
        assert token(granting[0], "reports")
        # Only the accounts named in each namespace, only their tokens.
        assert not token(granting[0], "ledger")
        assert not token(granting[1], "billing-api")
        for namespace in granting:
            assert not token(namespace, "default")
            assert not can_i(cluster, operator, namespace, "create", "serviceaccounts/token")
            for verb in ("get", "list", "watch", "create", "patch", "delete"):
                assert not can_i(cluster, operator, namespace, verb, "serviceaccounts"), verb
            assert not can_i(cluster, operator, namespace, "get", "secrets")
        for namespace in (other, home):
            assert not token(namespace, "billing-api"), namespace
        assert not can_i(
            cluster,
            operator,
            other,
            "create",
            "serviceaccounts/token",
            "--all-namespaces",
        )
    finally:
        cluster.plane.kubectl("delete", "-f", "-", input_text=text)
    # Revoked with the objects: the grant came from them only.
    wait_for(
        lambda: not (token(granting[0], "billing-api") or token(granting[1], "ledger")),
        timeout_s=30,
        what="the ServiceAccount token grant to go with its Roles",
    )
