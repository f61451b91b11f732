"""Rollout on rotation on the real control plane: an operator started with --rollouts and
the shipped RBAC, namespaces granting it deploy/rollouts/ (or not), real Deployments,
StatefulSets and DaemonSets (the controller manager rolls them; no kubelet runs pods).

A restart changes the pod template, so each one is a new ``metadata.generation``: the
tests count restarts by generation. "Nothing more happened" is shown after the operator
has certainly looked again: a rotation of a second ProviderToken in the namespace (one
no workload names) makes it look, and its log says when that look is done.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from fakes.oauth2_server import FakeOAuth2Server
from support.cluster import REPO
from support.objects import Cluster, provider_token
from support.operator import OperatorProcess
from support.providers import Fakes
from support.waiting import wait_for
from support.workloads import RESTARTED_FOR, ROLLOUT, Workloads, grant_rollouts
from tokensync import names
from tokensync.rollout_policy import token_id
from tokensync_dev.devcluster.cluster import free_port

OPERATOR_ACCOUNT = "system:serviceaccount:tokensync-system:tokensync"
OPTED_IN = (("Deployment", "web"), ("StatefulSet", "db"), ("DaemonSet", "agent"))


@pytest.fixture(scope="module")
def rollouts_operator(
    operator: OperatorProcess,
    operator_kubeconfig_path: Path,
    operator_logs_dir: Path,
    fakes: Fakes,
) -> Iterator[OperatorProcess]:
    """The suite's operator steps aside for one started with --rollouts, as its
    ServiceAccount with deploy/rbac only; its log joins the leak scan."""
    operator.stop()
    health = free_port()
    process = OperatorProcess(
        operator_kubeconfig_path,
        operator_logs_dir / "rollouts.log",
        ["--rollouts", *fakes.operator_args(health)],
    ).start()
    process.health_url = f"http://127.0.0.1:{health}"
    try:
        process.wait_ready(timeout_s=60)
        yield process
    finally:
        process.kill()
        operator.start()
        operator.wait_ready(timeout_s=60)  # the tests after this one read its metrics


@dataclass
class Scene:
    """A namespace with ProviderTokens from one client of the fake OAuth2 server."""

    cluster: Cluster
    workloads: Workloads
    server: FakeOAuth2Server
    operator: OperatorProcess
    namespace: str
    renewals: int = 0

    def token(self, name: str, min_interval: str | None = None) -> None:
        body: dict[str, Any] = provider_token(
            name,
            namespace=self.namespace,
            provider={"oauth2": {"tokenUrl": self.server.token_url}},
            credentials="creds",
            target=f"{name}-token",
        )
        if min_interval:
            body["spec"]["rollout"] = {"minInterval": min_interval}
        self.cluster.apply(body)
        self.cluster.wait_ready(self.namespace, name)

    def token_id(self, name: str) -> str:
        secret = self.cluster.secret(self.namespace, f"{name}-token")
        recorded = token_id(secret.metadata.annotations[names.TOKEN_DIGEST_ANNOTATION])
        assert recorded is not None
        return recorded

    def rotate(self, name: str) -> str:
        """A new token in the ProviderToken's Secret (the renew annotation); its id."""
        before = self.token_id(name)
        self.renewals += 1
        self.cluster.patch_token(
            self.namespace,
            name,
            {"metadata": {"annotations": {"tokensync.dev/renew": str(self.renewals)}}},
        )
        return wait_for(
            lambda: (new := self.token_id(name)) != before and new,
            timeout_s=20,
            what=f"a new token in {self.namespace}/{name}-token",
        )

    def state(self, kind: str, name: str) -> tuple[str | None, str | None]:
        return self.workloads.state(self.namespace, kind, name)

    def wait_record(self, kind: str, name: str, record: str, timeout_s: float = 30) -> str:
        """Wait until the workload is restarted for ``record``; returns its restartedAt."""
        restarted_at, _ = wait_for(
            lambda: (s := self.state(kind, name))[1] == record and s,
            timeout_s=timeout_s,
            what=f"{kind}/{name} restarted for {record}",
        )
        assert restarted_at is not None
        return restarted_at

    def generation(self, kind: str, name: str) -> int:
        return self.workloads.generation(self.namespace, kind, name)

    def opt_in(self, *workloads: tuple[str, str]) -> dict[tuple[str, str], int]:
        """Create workloads opted in to api-token, after its token: the operator's next
        look records that they run it, and restarts none of them for merely opting in.
        Returns each one's generation then: every restart from there on adds one."""
        for kind, name in workloads:
            self.workloads.create(self.namespace, kind, name, secrets="api-token")
        self.barrier()
        record = f"api-token={self.token_id('api')}"
        for kind, name in workloads:
            assert self.state(kind, name) == (None, record), (kind, name)
        # A record alone changes no pod template: one generation more for a Deployment
        # (its annotations count), none for the others.
        baseline = {(kind, name): self.generation(kind, name) for kind, name in workloads}
        for (kind, _), generation in baseline.items():
            assert generation == (2 if kind == "Deployment" else 1)
        return baseline

    def barrier(self) -> None:
        """Return once the operator has looked at the namespace after this moment."""
        start = len(self.operator.logs())
        self.rotate("barrier")
        swept = re.compile(
            rf"rollouts: swept {re.escape(self.namespace)} \(new token in [^)]*barrier-token"
        )
        wait_for(
            lambda: swept.search(self.operator.logs()[start:]),
            timeout_s=30,
            what=f"a look at {self.namespace} after the barrier's rotation",
        )


@pytest.fixture
def scene_factory(
    cluster: Cluster,
    api_client: client.ApiClient,
    oauth2_server: FakeOAuth2Server,
    rollouts_operator: OperatorProcess,
) -> Any:
    def make(prefix: str, *, granted: bool = True) -> Scene:
        namespace = cluster.namespace(prefix)
        if granted:
            grant_rollouts(cluster.plane, namespace)
        client_id = f"rollouts-{uuid.uuid4().hex[:8]}"
        secret = f"s3cr3t-{uuid.uuid4().hex}"
        oauth2_server.add_client(client_id, secret, expires_in=3600)
        cluster.credentials(namespace, "creds", {"clientId": client_id, "clientSecret": secret})
        scene = Scene(cluster, Workloads(api_client), oauth2_server, rollouts_operator, namespace)
        scene.token("barrier")
        return scene

    return make


def test_each_rotation_restarts_each_opted_in_workload_exactly_once(scene_factory: Any) -> None:
    scene: Scene = scene_factory("rollouts")
    scene.token("api", min_interval="1s")
    # Named, but without the label: not opted in, never listed, never touched.
    scene.workloads.create(
        scene.namespace, "Deployment", "unlabelled", secrets="api-token", labelled=False
    )
    baseline = scene.opt_in(*OPTED_IN)

    for rotation in (1, 2):
        new = scene.rotate("api")
        for kind, name in OPTED_IN:
            scene.wait_record(kind, name, f"api-token={new}")
            assert scene.generation(kind, name) == baseline[kind, name] + rotation
    scene.barrier()
    for kind, name in OPTED_IN:
        assert scene.generation(kind, name) == baseline[kind, name] + 2, (kind, name)
    untouched = scene.workloads.read(scene.namespace, "Deployment", "unlabelled")
    assert untouched.metadata.annotations == {ROLLOUT: "api-token"}
    assert not untouched.spec.template.metadata.annotations
    assert untouched.metadata.generation == 1

    logs = scene.operator.logs()
    for kind, name in OPTED_IN:
        assert logs.count(f"rollouts: restarted {kind} {scene.namespace}/{name} ") == 2
    notes = [e.note for e in scene.cluster.events(scene.namespace, "api")]
    expected = (
        "restarted DaemonSet/agent, Deployment/web, StatefulSet/db for the new token in "
        "Secret api-token"
    )
    assert notes.count(expected) == 2, notes


def test_a_restored_token_restarts_nothing(scene_factory: Any, cluster: Cluster) -> None:
    scene: Scene = scene_factory("rollouts")
    scene.token("api", min_interval="1s")
    baseline = scene.opt_in(("Deployment", "web"))[("Deployment", "web")]
    new = scene.rotate("api")
    restarted_at = scene.wait_record("Deployment", "web", f"api-token={new}")

    # Deleted: the operator writes the same token back (a "different" write to an absent
    # Secret, so it looks at the namespace), and the record already names that token.
    cluster.core.delete_namespaced_secret("api-token", scene.namespace)
    wait_for(
        lambda: cluster.secret(scene.namespace, "api-token") is not None,
        timeout_s=20,
        what="the Secret restored",
    )
    assert scene.token_id("api") == new
    cluster.core.patch_namespaced_secret(
        "api-token", scene.namespace, {"data": {"token": "dGFtcGVyZWQ="}}
    )
    wait_for(
        lambda: cluster.secret_value(scene.namespace, "api-token") != "tampered",
        timeout_s=20,
        what="the edited Secret restored",
    )
    assert scene.token_id("api") == new
    scene.barrier()
    assert scene.state("Deployment", "web") == (restarted_at, f"api-token={new}")
    assert scene.generation("Deployment", "web") == baseline + 1


def test_rotations_inside_min_interval_restart_once_now_and_once_after_it(
    scene_factory: Any,
) -> None:
    scene: Scene = scene_factory("rollouts")
    scene.token("api", min_interval="20s")
    baseline = scene.opt_in(("Deployment", "web"))[("Deployment", "web")]
    first = scene.rotate("api")
    first_at = scene.wait_record("Deployment", "web", f"api-token={first}")
    # Two more rotations inside the interval: one restart, deferred, for the last token.
    scene.rotate("api")
    last = scene.rotate("api")
    # Once the operator has looked at the namespace after both rotations (inside the
    # interval), the restart is still the first one: deferred, not done.
    scene.barrier()
    assert scene.state("Deployment", "web") == (first_at, f"api-token={first}")
    second_at = scene.wait_record("Deployment", "web", f"api-token={last}", timeout_s=45)
    gap = _seconds(second_at) - _seconds(first_at)
    assert 20 <= gap <= 30, (first_at, second_at)
    assert scene.generation("Deployment", "web") == baseline + 2
    scene.barrier()
    assert scene.generation("Deployment", "web") == baseline + 2
    logs = scene.operator.logs()
    assert logs.count(f"rollouts: restarted Deployment {scene.namespace}/web ") == 2


def test_an_operator_restart_restarts_nothing_and_finds_a_lost_restart(
    scene_factory: Any, rollouts_operator: OperatorProcess
) -> None:
    scene: Scene = scene_factory("rollouts")
    scene.token("api", min_interval="1s")
    baseline = scene.opt_in(("Deployment", "web"), ("Deployment", "lost"))
    new = scene.rotate("api")
    for name in ("web", "lost"):
        scene.wait_record("Deployment", name, f"api-token={new}")

    rollouts_operator.kill()
    # As if the process had died between the Secret write and this workload's restart:
    # its record still names the token before.
    scene.workloads.patch(
        scene.namespace,
        "Deployment",
        "lost",
        {"metadata": {"annotations": {RESTARTED_FOR: "api-token=00000000deadbeef"}}},
    )
    restarted = len(rollouts_operator.logs())
    rollouts_operator.start()
    rollouts_operator.wait_ready(timeout_s=60)
    scene.wait_record("Deployment", "lost", f"api-token={new}")
    scene.barrier()
    # web: its restart; lost: its restart, the record edited above, the restart found.
    assert scene.generation("Deployment", "web") == baseline["Deployment", "web"] + 1
    assert scene.generation("Deployment", "lost") == baseline["Deployment", "lost"] + 3
    after = rollouts_operator.logs()[restarted:]
    assert f"rollouts: restarted Deployment {scene.namespace}/web " not in after
    assert after.count(f"rollouts: restarted Deployment {scene.namespace}/lost ") == 1


def test_a_namespace_without_the_grant_is_told_what_to_apply_and_keeps_its_token(
    scene_factory: Any, cluster: Cluster
) -> None:
    # "nogrant-": test_zz_no_secret_leaks knows these refusals are by design.
    scene: Scene = scene_factory("nogrant", granted=False)
    scene.token("api", min_interval="1s")
    scene.workloads.create(scene.namespace, "Deployment", "web", secrets="api-token")
    scene.rotate("api")

    def warning() -> Any:
        events = cluster.events(scene.namespace, "api")
        return next((e for e in events if e.reason == "RolloutNotPermitted"), None)

    event = wait_for(warning, timeout_s=30, what="a RolloutNotPermitted Event")
    assert event.type == "Warning"
    assert f"kubectl apply -n {scene.namespace} -f deploy/rollouts/role.yaml" in event.note
    assert "list and patch on apps deployments, statefulsets and daemonsets" in event.note
    assert cluster.ready(scene.namespace, "api")["status"] == "True"
    # One Event for the refusal, not one per workload or per look's Secret.
    reasons = [e.reason for e in cluster.events(scene.namespace, "api")]
    assert reasons.count("RolloutNotPermitted") == 1, reasons
    # The next rotation still writes a token, and nothing is restarted. That it is told
    # once per ProviderToken, not at every rotation, cannot show here: a namespace that
    # refused is not asked again for 5 minutes. tests/unit/test_rollouts_sweeper.py
    # (test_a_namespace_without_the_role_is_told_once_and_not_hammered) asks it again
    # after those 5 minutes with an injected clock and asserts no second Event.
    scene.rotate("api")
    cluster.wait_ready(scene.namespace, "api")
    assert scene.state("Deployment", "web") == (None, None)
    assert scene.generation("Deployment", "web") == 1


def test_the_grant_is_list_and_patch_on_workloads_only(cluster: Cluster) -> None:
    namespace = cluster.namespace("rollouts-grant")
    grant_rollouts(cluster.plane, namespace)

    def may(verb: str, resource: str, where: str = namespace, *extra: str) -> bool:
        answer = cluster.plane.kubectl(
            "auth",
            "can-i",
            verb,
            resource,
            "-n",
            where,
            "--as",
            OPERATOR_ACCOUNT,
            *extra,
            check=False,
        )
        return answer.strip().startswith("yes")

    for resource in ("deployments.apps", "statefulsets.apps", "daemonsets.apps"):
        assert may("list", resource) and may("patch", resource)
        for verb in ("get", "watch", "update", "delete", "create"):
            assert not may(verb, resource), (verb, resource)
        assert not may("list", resource, "default")  # only where granted
        assert not may("patch", resource, namespace, "--subresource=scale")
    for resource in ("pods", "replicasets.apps", "controllerrevisions.apps"):
        assert not may("patch", resource), resource


def test_the_component_adds_the_flag_and_the_base_does_not(
    cluster: Cluster, tmp_path: Path
) -> None:
    def operator_args(rendered: str) -> list[str]:
        documents = [d for d in yaml.safe_load_all(rendered) if d]
        [deployment] = [d for d in documents if d["kind"] == "Deployment"]
        return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])

    base = operator_args(cluster.plane.kubectl("kustomize", str(REPO / "deploy")))
    assert "--rollouts" not in base
    deploy = Path(os.path.relpath(REPO / "deploy", tmp_path))
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{deploy}]\ncomponents: [{deploy / 'components' / 'rollouts'}]\n"
    )
    assert operator_args(cluster.plane.kubectl("kustomize", str(tmp_path))) == [
        *base,
        "--rollouts",
    ]


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
