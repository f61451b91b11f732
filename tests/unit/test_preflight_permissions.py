"""The verbs the startup check asks for are exactly the ones deploy/rbac grants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tokensync.config import OperatorConfig
from tokensync.preflight import Permission, required_permissions

RBAC = Path(__file__).resolve().parents[2] / "deploy" / "rbac"


def granted(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    out = set()
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                plural, _, sub = resource.partition("/")
                out |= {(verb, group, plural, sub) for verb in rule["verbs"]}
    return out


def asked(permissions: list[Permission]) -> set[tuple[str, str, str, str]]:
    return {(p.verb, p.group, p.resource, p.subresource) for p in permissions}


def test_cluster_role_matches_what_is_checked() -> None:
    cluster_role = yaml.safe_load((RBAC / "clusterrole.yaml").read_text())
    lease_role = next(yaml.safe_load_all((RBAC / "leader-election.yaml").read_text()))
    wanted = required_permissions(OperatorConfig(leader_election=True))
    leases = {p for p in wanted if p.resource == "leases"}
    assert asked([p for p in wanted if p not in leases]) == granted(cluster_role["rules"])
    assert asked(list(leases)) == granted(lease_role["rules"])
    assert {p.namespace for p in leases} == {"tokensync-system"}


def test_namespaced_scope_is_checked_in_each_namespace() -> None:
    wanted = required_permissions(OperatorConfig(namespaces=("a", "b")))
    patch_status = [p for p in wanted if p.subresource == "status"]
    assert sorted(str(p.namespace) for p in patch_status) == ["a", "b"]
    assert not [p for p in wanted if p.resource == "leases"]
    assert Permission("get", "secrets", namespace="tokensync-system") in wanted
    assert patch_status[0].describe() == (
        "patch providertokens/status (tokensync.dev) in namespace a"
    )
