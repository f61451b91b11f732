"""Deployments, StatefulSets and DaemonSets for the rollout tests (as admin, real API)."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client

from support.cluster import REPO
from tokensync_dev.devcluster.cluster import ControlPlane

ROLLOUT = "tokensync.dev/restart-on-rotation"
RESTARTED_AT = "tokensync.dev/restartedAt"
RESTARTED_FOR = "tokensync.dev/restarted-for"
ROLE_FILE = REPO / "deploy" / "rollouts" / "role.yaml"
KINDS = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}
# The suite's control plane runs no workload controllers, kubelet or scheduler: no pod is
# made, nothing pulls this image.
_IMAGE = "registry.invalid/tokensync-test/app:1"


def grant_rollouts(plane: ControlPlane, namespace: str) -> str:
    """What a namespace's owner does to let the operator restart workloads there."""
    return plane.kubectl("apply", "-n", namespace, "-f", str(ROLE_FILE))


def workload_body(
    kind: str, name: str, *, secrets: str | None, labelled: bool = True
) -> dict[str, Any]:
    """A one-replica workload; ``secrets`` for the opt-in annotation, ``labelled`` for
    the opt-in label (both are needed to opt in)."""
    metadata: dict[str, Any] = {"name": name, "labels": {"app": name}}
    if labelled:
        metadata["labels"][ROLLOUT] = "true"
    if secrets is not None:
        metadata["annotations"] = {ROLLOUT: secrets}
    pod = {
        "metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": _IMAGE}]},
    }
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": name}}, "template": pod}
    if kind != "DaemonSet":
        spec["replicas"] = 1
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": metadata, "spec": spec}


class Workloads:
    def __init__(self, api_client: client.ApiClient) -> None:
        self.apps = client.AppsV1Api(api_client)

    def create(
        self, namespace: str, kind: str, name: str, *, secrets: str | None, labelled: bool = True
    ) -> None:
        body = workload_body(kind, name, secrets=secrets, labelled=labelled)
        getattr(self.apps, f"create_namespaced_{_snake(kind)}")(namespace, body)

    def read(self, namespace: str, kind: str, name: str) -> Any:
        return getattr(self.apps, f"read_namespaced_{_snake(kind)}")(name, namespace)

    def patch(self, namespace: str, kind: str, name: str, patch: dict[str, Any]) -> None:
        getattr(self.apps, f"patch_namespaced_{_snake(kind)}")(name, namespace, patch)

    def state(self, namespace: str, kind: str, name: str) -> tuple[str | None, str | None]:
        """(the pod template's restartedAt, the restarted-for record)."""
        body = self.read(namespace, kind, name)
        template = body.spec.template.metadata.annotations or {}
        return template.get(RESTARTED_AT), (body.metadata.annotations or {}).get(RESTARTED_FOR)

    def generation(self, namespace: str, kind: str, name: str) -> int:
        """Every change of the pod template (a restart) is a new generation. The suite's
        controller manager runs no workload controllers, so there are no ReplicaSets or
        ControllerRevisions to count: the generation is the record of what changed. A
        Deployment's also counts changes of its annotations alone."""
        return int(self.read(namespace, kind, name).metadata.generation)

    def everywhere_metadata(self) -> str:
        """The labels and annotations of every workload in the cluster, pod templates
        included, as text: a token must never land on a workload."""
        found = []
        for kind in KINDS:
            listing = getattr(self.apps, f"list_{_snake(kind)}_for_all_namespaces")()
            for item in listing.items:
                template = item.spec.template.metadata
                found.append(
                    [
                        item.metadata.labels,
                        item.metadata.annotations,
                        template.labels if template else None,
                        template.annotations if template else None,
                    ]
                )
        return json.dumps(found, default=str)


def _snake(kind: str) -> str:
    return {"Deployment": "deployment", "StatefulSet": "stateful_set", "DaemonSet": "daemon_set"}[
        kind
    ]
