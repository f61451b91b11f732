"""Accounts on the suite's control plane: admin for the tests, least privilege for the operator."""

from __future__ import annotations

from pathlib import Path

from tokensync.devcluster.cluster import ControlPlane
from tokensync.devcluster.kubeconfig import write_kubeconfig

REPO = Path(__file__).resolve().parents[2]
OPERATOR_NAMESPACE = "tokensync-system"
OPERATOR_ACCOUNT = "tokensync"


def service_account_kubeconfig(
    plane: ControlPlane, namespace: str, account: str, path: Path, duration: str = "4h"
) -> Path:
    """A kubeconfig for ``namespace/account`` with a token from the TokenRequest API."""
    token = plane.kubectl("create", "token", account, "-n", namespace, f"--duration={duration}")
    return write_kubeconfig(
        path,
        server=plane.server,
        ca_pem=plane.ca_cert.read_bytes(),
        user=f"{namespace}-{account}",
        token=token.strip(),
        namespace=namespace,
    )


def operator_kubeconfig(plane: ControlPlane, path: Path) -> Path:
    """Apply deploy/rbac exactly as shipped and return a kubeconfig for its ServiceAccount."""
    plane.kubectl("apply", "-k", str(REPO / "deploy" / "rbac"))
    return service_account_kubeconfig(plane, OPERATOR_NAMESPACE, OPERATOR_ACCOUNT, path)
