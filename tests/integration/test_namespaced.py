"""`tokensync run --namespace NS` as its ServiceAccount with deploy/rbac, which grants no
verb on namespaces: it serves the namespaces it is given from the start, and nothing
elsewhere."""

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
def namespaces(cluster: Cluster, oauth2_server: FakeOAuth2Server) -> tuple[str, str, str]:
    """Two namespaces with a ProviderToken each (not served yet: the suite's operator is
    stopped first), and the client both use."""
    client_id, secret = f"nsd-{uuid.uuid4().hex[:8]}", f"s-{uuid.uuid4().hex}"
    oauth2_server.add_client(client_id, secret)
    return cluster.namespace("served"), cluster.namespace("elsewhere"), f"{client_id}:{secret}"


@pytest.fixture
def namespaced_operator(
    operator: OperatorProcess,
    operator_kubeconfig_path: Path,
    operator_logs_dir: Path,
    fakes: Fakes,
    namespaces: tuple[str, str, str],
) -> Iterator[OperatorProcess]:
    operator.stop()
    health = free_port()
    process = OperatorProcess(
        operator_kubeconfig_path,
        operator_logs_dir / "namespaced.log",
        ["--namespace", namespaces[0], *fakes.operator_args(health)],
    )
    process.health_url = f"http://127.0.0.1:{health}"
    try:
        yield process
    finally:
        process.kill()
        operator.start()
        operator.wait_ready(timeout_s=60)


def test_a_namespaced_operator_serves_its_namespace_at_once_and_nothing_else(
    cluster: Cluster,
    oauth2_server: FakeOAuth2Server,
    namespaces: tuple[str, str, str],
    namespaced_operator: OperatorProcess,
) -> None:
    served, elsewhere, client = namespaces
    client_id, _, secret = client.partition(":")
    for namespace in (served, elsewhere):
        cluster.credentials(namespace, "creds", {"clientId": client_id, "clientSecret": secret})
        cluster.apply(
            provider_token(
                "api",
                namespace=namespace,
                provider={"oauth2": {"tokenUrl": oauth2_server.token_url}},
                credentials="creds",
                target="api-token",
            )
        )
    started = time.monotonic()
    namespaced_operator.start()
    cluster.wait_ready(served, "api", timeout_s=45)
    # Listing namespaces is refused to it (deploy/rbac has no such verb); kopf used to retry
    # that for about 54 s before its first watch.
    assert time.monotonic() - started < 20
    assert "Not enough permissions" not in namespaced_operator.logs()

    # A later change in the served namespace, acted on: by then the operator has had every
    # chance to see the other namespace's ProviderToken too.
    first = cluster.secret_value(served, "api-token")
    assert first
    cluster.patch_token(
        served, "api", {"metadata": {"annotations": {"tokensync.dev/renew": uuid.uuid4().hex}}}
    )
    wait_for(
        lambda: cluster.secret_value(served, "api-token") not in (None, first),
        timeout_s=30,
        what=f"a new token in {served}/api-token after the renew annotation",
    )
    cluster.wait_ready(served, "api")

    untouched = cluster.token(elsewhere, "api")
    assert untouched is not None
    assert "status" not in untouched, untouched
    assert cluster.ready(elsewhere, "api") is None
    assert cluster.secret(elsewhere, "api-token") is None
    assert elsewhere not in namespaced_operator.logs()
