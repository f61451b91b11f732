"""Accounts on the suite's control plane: admin for the tests, least privilege for the operator."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tokensync_dev.devcluster.cluster import ControlPlane, start

REPO = Path(__file__).resolve().parents[2]
OPERATOR_NAMESPACE = "tokensync-system"
OPERATOR_ACCOUNT = "tokensync"


def operator_kubeconfig(plane: ControlPlane, path: Path) -> Path:
    """Apply deploy/rbac exactly as shipped and return a kubeconfig for its ServiceAccount."""
    plane.kubectl("apply", "-k", str(REPO / "deploy" / "rbac"))
    return plane.service_account_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT, path)


@contextlib.contextmanager
def control_plane_in(directory: Path, *, crds: bool = True) -> Iterator[ControlPlane]:
    """A fresh control plane, with the CRDs installed unless told not to, stopped on leaving."""
    plane = start(directory / "cluster", crd_dir=REPO / "crds" if crds else None)
    try:
        yield plane
    finally:
        plane.stop()
