from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from fakes.oauth2_server import FakeOAuth2Server
from support.objects import Cluster
from support.operator import OperatorProcess
from tokensync.devcluster.cluster import ControlPlane


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
def oauth2_server() -> Iterator[FakeOAuth2Server]:
    with FakeOAuth2Server() as server:
        yield server


@pytest.fixture(scope="session")
def operator(
    operator_kubeconfig_path: Path,
    operator_logs_dir: Path,
    oauth2_server: FakeOAuth2Server,
) -> Iterator[OperatorProcess]:
    """`tokensync run` as its ServiceAccount (deploy/rbac), allowed to reach the fakes.

    One for the whole run; a test that kills it starts it again.
    """
    log = operator_logs_dir / "operator.log"
    process = OperatorProcess(
        operator_kubeconfig_path,
        log,
        [
            "--allowed-hosts",
            oauth2_server.host,
            "--allow-insecure-http",
            "--metrics-port",
            "0",
            "--health-port",
            "0",
        ],
    ).start()
    try:
        yield process
    finally:
        process.stop()
