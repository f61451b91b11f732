from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from fakes.basiq import FakeBasiq
from fakes.keycloak import FakeKeycloak
from fakes.microshare import FakeMicroshare
from fakes.oauth2_server import FakeOAuth2Server
from fakes.podero import FakePodero
from support.objects import Cluster
from support.operator import OperatorProcess
from support.providers import Fakes
from tokensync.devcluster.cluster import ControlPlane, free_port


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def cluster(control_plane: ControlPlane, api_client: client.ApiClient) -> Cluster:
    return Cluster(control_plane, api_client)


@pytest.fixture(scope="session")
def operator_logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every operator log of the run lands here, for the leak scan."""
    return tmp_path_factory.mktemp("operator-logs")


@pytest.fixture(scope="session")
def leak_scan_texts() -> list[tuple[str, str]]:
    """(where, text) from control planes gone before the leak scan runs (the fault tests')."""
    return []


@pytest.fixture(scope="session")
def fakes() -> Iterator[Fakes]:
    """One real HTTP server per provider on loopback, shared by the whole run."""
    with contextlib.ExitStack() as stack:
        servers = Fakes(
            oauth2=FakeOAuth2Server(),
            keycloak=FakeKeycloak(),
            microshare=FakeMicroshare(),
            podero=FakePodero(),
            basiq=FakeBasiq(),
        )
        for fake in servers.all():
            stack.enter_context(fake)
        yield servers


@pytest.fixture(scope="session")
def oauth2_server(fakes: Fakes) -> FakeOAuth2Server:
    return fakes.oauth2


@pytest.fixture(scope="session")
def operator(
    operator_kubeconfig_path: Path,
    operator_logs_dir: Path,
    fakes: Fakes,
) -> Iterator[OperatorProcess]:
    """`tokensync run` as its ServiceAccount (deploy/rbac), allowed to reach the fakes.

    One for the whole run; a test that kills it starts it again.
    """
    log = operator_logs_dir / "operator.log"
    metrics_port, health_port = free_port(), free_port()
    process = OperatorProcess(
        operator_kubeconfig_path,
        log,
        [
            "--allowed-hosts",
            ",".join(fake.host for fake in fakes.all()),
            "--allow-insecure-http",
            # Short, so that the fault tests' slow provider costs seconds, not tens.
            "--provider-timeout",
            "3",
            "--metrics-port",
            str(metrics_port),
            "--health-port",
            str(health_port),
        ],
    ).start()
    process.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    process.health_url = f"http://127.0.0.1:{health_port}"
    try:
        yield process
    finally:
        process.stop()
