"""What a namespace's owner grants the operator, and the ServiceAccounts it acts for.

As a namespace owner would: ``kubectl apply -n NS`` of the Role the project ships in
deploy/service-account-tokens/ (the ServiceAccounts' names set in ``resourceNames``),
bound to the ServiceAccount the suite runs the operator as (the file's own RoleBinding,
the same one deploy/rbac makes). Never cluster-wide.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from fakes.oauth2_server import FederatedIdentity
from support.cluster import REPO
from tokensync_dev.devcluster.cluster import ControlPlane

SERVICE_ACCOUNT_TOKENS_FILE = REPO / "deploy" / "service-account-tokens" / "role.yaml"
SERVICE_ACCOUNT_TOKENS_ROLE = "tokensync-service-account-tokens"
_TOKEN_RESOURCE = "serviceaccounts/token"


def service_account_subject(namespace: str, account: str) -> str:
    """The ``sub`` of the account's tokens."""
    return f"system:serviceaccount:{namespace}:{account}"


def create_service_account(plane: ControlPlane, namespace: str, name: str) -> None:
    """A ServiceAccount (applied: calling it again is harmless)."""
    body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}
    plane.kubectl("apply", "-n", namespace, "-f", "-", input_text=json.dumps(body))


def grant_service_account_tokens(plane: ControlPlane, namespace: str, *accounts: str) -> list[str]:
    """Let the operator request tokens for ``accounts`` (and those granted before) in
    ``namespace``: ``create`` on ``serviceaccounts/token``, those names only.

    Returns the names the Role now lists.
    """
    granted = sorted({*_granted_names(plane, namespace), *accounts})
    documents = _documents(SERVICE_ACCOUNT_TOKENS_FILE)
    for document in documents:
        if document.get("kind") != "Role":
            continue
        for rule in document.get("rules") or []:
            if _TOKEN_RESOURCE in (rule.get("resources") or []):
                rule["resourceNames"] = granted
    _apply(plane, namespace, documents)
    return granted


def withdraw_grant(plane: ControlPlane, namespace: str, role: str) -> None:
    """Delete a grant's Role and RoleBinding (both named ``role``), as its owner may."""
    for kind in ("rolebinding", "role"):
        plane.kubectl("delete", kind, role, "-n", namespace, "--ignore-not-found")


def service_account_token(
    plane: ControlPlane, namespace: str, account: str, audience: str, duration: str = "10m"
) -> str:
    """A token for ``account`` from the TokenRequest API, as admin (10 min: its minimum)."""
    token = plane.kubectl(
        "create", "token", account, "-n", namespace, "--audience", audience, "--duration", duration
    )
    return token.strip()


def federated_identity(
    plane: ControlPlane, namespace: str, account: str, audience: str
) -> FederatedIdentity:
    """What the fake identity provider trusts for ``account``: the control plane's issuer
    (its discovery and JWKS, verified with the cluster CA), that subject, that audience."""
    return FederatedIdentity(
        issuer=plane.service_account_issuer,
        ca_file=str(plane.ca_cert),
        subject=service_account_subject(namespace, account),
        audience=audience,
    )


def _granted_names(plane: ControlPlane, namespace: str) -> list[str]:
    found = plane.kubectl(
        "get",
        "role",
        SERVICE_ACCOUNT_TOKENS_ROLE,
        "-n",
        namespace,
        "--ignore-not-found",
        "-o",
        "json",
    )
    if not found.strip():
        return []
    rules = json.loads(found).get("rules") or []
    return [name for rule in rules for name in rule.get("resourceNames") or []]


def _documents(path: Path) -> list[dict[str, Any]]:
    """The shipped Role and RoleBinding (a missing file is an error, not a default)."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _apply(plane: ControlPlane, namespace: str, documents: list[dict[str, Any]]) -> None:
    items = {"apiVersion": "v1", "kind": "List", "items": documents}
    plane.kubectl("apply", "-n", namespace, "-f", "-", input_text=json.dumps(items))
