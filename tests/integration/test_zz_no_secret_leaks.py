"""Runs last: everything the suite made the operator say must be free of secrets.

Scans the operator's logs (exception texts included), every Event and every
ProviderToken status in the cluster for each credential and token value the fake
providers ever handed out or accepted, and, when the real Keycloak ran, every password,
client secret, private key and token its tests set or saw in a Secret.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from kubernetes import client

from support.objects import Cluster
from support.operator import FAULT_PLANE_LOG, OperatorProcess
from support.providers import Fakes
from support.workloads import Workloads

# test_rollouts.py runs an operator in namespaces that have not granted it the rollout
# Role ("nogrant-..."): its refusal there, and only there, is by design.
_REFUSED_BY_DESIGN = re.compile(
    r"rollouts: (list|patch) of workloads in namespace nogrant-[0-9a-f]{8} refused \(403 "
)


def test_no_credential_or_token_value_anywhere(
    cluster: Cluster,
    fakes: Fakes,
    operator_logs_dir: Path,
    operator: OperatorProcess,
    leak_scan_texts: list[tuple[str, str]],
    keycloak_secrets: set[str],
    keycloak_report: dict[str, object],
    api_client: client.ApiClient,
) -> None:
    secrets = {value for value in fakes.every_secret() if len(value) >= 8}
    assert len(secrets) > 20, "the suite should have produced tokens to look for"
    if "events" in keycloak_report:  # the Keycloak tests ran
        assert len(keycloak_secrets) > 20, "the Keycloak tests should have recorded values"
    secrets |= {value for value in keycloak_secrets if len(value) >= 8}

    logs = "\n".join(p.read_text(errors="replace") for p in operator_logs_dir.glob("*.log"))
    assert "minted" in logs, "the operator logs should have been captured"
    output = dict(cluster.operator_output())
    assert "Minted" in output["events"], "the suite should have produced Events"
    metrics_text = httpx.get(operator.metrics_url, timeout=5).text
    assert "tokensync_mint_total" in metrics_text
    sources = (
        ("logs", logs),
        *output.items(),
        ("metrics", metrics_text),
        # Rollouts write annotations on workloads: a token must never land there.
        ("workload metadata", Workloads(api_client).everywhere_metadata()),
        *leak_scan_texts,
    )
    for where, text in sources:
        leaked = [s[:6] + "…" for s in secrets if s in text]
        assert not leaked, f"secret values found in {where}: {leaked}"


# A kube-apiserver just restarted answers before its RBAC caches are filled: the fault
# tests' operator (test_control_plane_faults.py, whose API server is stopped and started)
# may be refused while it retries its watches (kopf's, and the Secret watch's). Those
# retries, on that plane only, are the API server's start, not a missing verb (the suite's
# own operator has the same RBAC).
_RETRIED_AFTER_RESTART = re.compile(
    r"Request attempt #\d+/\d+ failed; will retry"
    r"|Secret watch [^;]* failed \(403 Forbidden\); trying again after a pause"
)


def test_the_shipped_rbac_was_enough(operator_logs_dir: Path) -> None:
    """The operator ran with deploy/rbac only; not one request of its was refused."""
    refused = []
    for log in operator_logs_dir.glob("*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if "forbidden" not in line.lower() or _REFUSED_BY_DESIGN.search(line):
                continue
            if log.name == FAULT_PLANE_LOG and _RETRIED_AFTER_RESTART.search(line):
                continue
            refused.append(f"{log.name}: {line}")
    logs = "\n".join(p.read_text(errors="replace") for p in operator_logs_dir.glob("*.log"))
    assert "minted" in logs
    assert refused == []
