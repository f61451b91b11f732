"""Pinned versions of the control-plane components (docs/decisions/0001-control-plane.md)."""

from __future__ import annotations

# v1.35.7, v1.35.9 and v1.35.10 are refused by the module proxy we reach; v1.35.8 is served.
KUBERNETES_VERSION = "v1.35.8"
ETCD_VERSION = "v3.6.16"
# Only for the chart's tests (helm lint / template); not part of the control plane.
HELM_VERSION = "v3.22.0"

KUBE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kubectl")
ETCD_BINARY = "etcd"
ALL_BINARIES = (*KUBE_BINARIES, ETCD_BINARY)


def staging_version(kubernetes_version: str) -> str:
    """k8s.io/kubernetes v1.X.Y ships its staging modules as v0.X.Y."""
    if not kubernetes_version.startswith("v1."):
        raise ValueError(f"not a Kubernetes 1.x version: {kubernetes_version}")
    return "v0." + kubernetes_version.removeprefix("v1.")
