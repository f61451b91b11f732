"""Two replicas with leader election: one writes, one stands by (ready), the standby takes over."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.oauth2_server import FakeOAuth2Server
from support.objects import Cluster, provider_token
from support.operator import OperatorProcess
from support.providers import Fakes
from support.waiting import wait_for
from tokensync_dev.devcluster.cluster import free_port


@pytest.fixture
def replicas(
    operator: OperatorProcess,
    operator_kubeconfig_path: Path,
    operator_logs_dir: Path,
    fakes: Fakes,
) -> Iterator[list[OperatorProcess]]:
    """The suite's standalone operator steps aside; two electing replicas replace it."""
    operator.stop()
    started = []
    for name in ("replica-a", "replica-b"):
        health = free_port()
        replica = OperatorProcess(
            operator_kubeconfig_path,
            operator_logs_dir / f"{name}.log",
            ["--leader-election", "--identity", name, *fakes.operator_args(health)],
        ).start()
        replica.health_url = f"http://127.0.0.1:{health}"
        started.append(replica)
    try:
        yield started
    finally:
        for replica in started:
            replica.kill()
        operator.start()
        operator.wait_ready(timeout_s=60)  # the tests after this one use it


def test_one_replica_writes_and_the_other_takes_over_without_minting_again(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, replicas: list[OperatorProcess]
) -> None:
    # Both ready (a not-ready standby would stall rolling updates and PDB drains), and
    # exactly one of them leads.
    for replica in replicas:
        replica.wait_ready(timeout_s=60)
    wait_for(
        lambda: (
            sorted(r.readiness() for r in replicas) == [(200, "ok: leading"), (200, "ok: standby")]
        ),
        timeout_s=60,
        what="one ready leader and one ready standby",
    )
    leader = next(r for r in replicas if r.readiness()[1] == "ok: leading")
    standby = next(r for r in replicas if r is not leader)

    namespace = cluster.namespace("ha")
    client_id = f"ha-{uuid.uuid4().hex[:8]}"
    oauth2_server.add_client(client_id, "ha-secret-value", expires_in=600)
    cluster.credentials(
        namespace, "creds", {"clientId": client_id, "clientSecret": "ha-secret-value"}
    )
    provider = {"oauth2": {"tokenUrl": oauth2_server.token_url}}
    cluster.apply(
        provider_token(
            "first",
            namespace=namespace,
            provider=provider,
            credentials="creds",
            target="first-token",
        )
    )
    cluster.wait_ready(namespace, "first")
    assert len(oauth2_server.issued_to(client_id)) == 1
    assert "minted " + namespace in leader.logs() and namespace not in standby.logs()

    killed = time.monotonic()
    leader.kill()
    wait_for(
        lambda: standby.readiness() == (200, "ok: leading"),
        timeout_s=40,
        what="the standby to take over",
    )
    handover = time.monotonic() - killed
    assert handover < 30, f"handover took {handover:.1f}s"

    cluster.apply(
        provider_token(
            "second",
            namespace=namespace,
            provider=provider,
            credentials="creds",
            target="second-token",
        )
    )
    cluster.wait_ready(namespace, "second")
    # The new leader minted the new token only: the valid one was not minted twice.
    assert len(oauth2_server.issued_to(client_id)) == 2
    assert f"minted {namespace}/first " not in standby.logs()
