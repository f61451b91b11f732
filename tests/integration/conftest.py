from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from fakes.base import ServerTls
from fakes.basiq import FakeBasiq
from fakes.keycloak import FakeKeycloak
from fakes.microshare import FakeMicroshare
from fakes.oauth2_server import FakeOAuth2Server
from fakes.podero import FakePodero
from support.keycloak import BackgroundKeycloak, KeycloakPlan, KeycloakServer
from support.keycloak import plan as plan_keycloak
from support.objects import Cluster
from support.operator import OperatorProcess
from support.providers import Fakes
from support.tls import CertificateAuthority, MutualTls
from tokensync_dev.devcluster.cluster import ControlPlane, free_port

KEYCLOAK_TESTS = ("test_keycloak.py", "test_keycloak_federation.py")
MUTUAL_TLS = "oauth2-mutual-tls"
_KEYCLOAK_REPORT = pytest.StashKey[dict[str, object]]()


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
def mutual_tls_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create("tokensync-test-client-ca")


@pytest.fixture(scope="session")
def fakes(
    keycloak_plan: KeycloakPlan,
    mutual_tls_ca: CertificateAuthority,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fakes]:
    """One real HTTP server per provider on loopback, shared by the whole run; and one
    OAuth2 server over mutual TLS, its certificate from the CA the suite's operator trusts
    (Keycloak's: one --ca-file), its clients' from a CA of the test's own."""
    directory = tmp_path_factory.mktemp("mutual-tls")
    server_ca = CertificateAuthority.from_files(
        keycloak_plan.ca_cert, keycloak_plan.workdir / "pki" / "ca.key"
    )
    cert, key = server_ca.server_cert().write(directory, "server")
    tls = ServerTls(
        str(cert), str(key), client_ca_file=str(mutual_tls_ca.write(directory / "ca.pem"))
    )
    with contextlib.ExitStack() as stack:
        servers = Fakes(
            oauth2=FakeOAuth2Server(),
            keycloak=FakeKeycloak(),
            microshare=FakeMicroshare(),
            podero=FakePodero(),
            basiq=FakeBasiq(),
            others={MUTUAL_TLS: FakeOAuth2Server(tls=tls)},
        )
        for fake in servers.all():
            stack.enter_context(fake)
        yield servers


@pytest.fixture(scope="session")
def mutual_tls(fakes: Fakes, mutual_tls_ca: CertificateAuthority) -> MutualTls:
    server = fakes.others[MUTUAL_TLS]
    assert isinstance(server, FakeOAuth2Server)
    return MutualTls(server, mutual_tls_ca)


@pytest.fixture(scope="session")
def oauth2_server(fakes: Fakes) -> FakeOAuth2Server:
    return fakes.oauth2


@pytest.fixture(scope="session")
def keycloak_plan(
    tmp_path_factory: pytest.TempPathFactory, control_plane: ControlPlane
) -> KeycloakPlan:
    """Keycloak's ports and CA, made whether or not Keycloak runs: the operator needs them.

    Keycloak trusts the control plane's CA (read once, at its boot): it fetches the API
    server's issuer discovery and JWKS to verify ServiceAccount tokens as client assertions.
    """
    return plan_keycloak(tmp_path_factory.mktemp("keycloak"), trust=(control_plane.ca_cert,))


@pytest.fixture(scope="session")
def keycloak_launch(keycloak_plan: KeycloakPlan) -> Iterator[BackgroundKeycloak]:
    background = BackgroundKeycloak(keycloak_plan).start()
    try:
        yield background
    finally:
        background.stop()


@pytest.fixture(scope="session", autouse=True)
def _keycloak_head_start(request: pytest.FixtureRequest) -> None:
    """Keycloak boots in the background from the first integration test on, if any of its
    tests will run: its ten-odd seconds of start-up then overlap the tests before it."""
    if any(Path(item.path).name in KEYCLOAK_TESTS for item in request.session.items):
        request.getfixturevalue("keycloak_launch")


@pytest.fixture(scope="session")
def keycloak_report(request: pytest.FixtureRequest) -> dict[str, object]:
    """Start-up times and per-flow event counts, printed at the end of the run."""
    report: dict[str, object] = {}
    request.config.stash[_KEYCLOAK_REPORT] = report
    return report


@pytest.fixture(scope="session")
def keycloak(
    keycloak_launch: BackgroundKeycloak, keycloak_report: dict[str, object]
) -> KeycloakServer:
    waited = time.monotonic()
    server = keycloak_launch.result()
    times = keycloak_launch.times
    keycloak_report["startup"] = {
        "cold": times.cold,
        "fetch_and_build_s": round(times.prepare_s, 1),
        "boot_s": round(times.boot_s, 1),
        "waited_by_tests_s": round(time.monotonic() - waited, 1),
    }
    return server


@pytest.fixture(scope="session")
def keycloak_secrets() -> set[str]:
    """Every password, client secret, key and token the Keycloak tests saw: for the leak scan."""
    return set()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    report = config.stash.get(_KEYCLOAK_REPORT, None)
    if report:
        terminalreporter.write_sep("-", "Keycloak")
        for key, value in report.items():
            terminalreporter.write_line(f"{key}: {json.dumps(value)}")


@pytest.fixture(scope="session")
def operator(
    operator_kubeconfig_path: Path,
    operator_logs_dir: Path,
    fakes: Fakes,
    keycloak_plan: KeycloakPlan,
) -> Iterator[OperatorProcess]:
    """`tokensync run` as its ServiceAccount (deploy/rbac), allowed to reach the fakes and
    the real Keycloak (which need not be running: the operator only needs its address).

    One for the whole run; a test that kills it starts it again.
    """
    log = operator_logs_dir / "operator.log"
    metrics_port, health_port = free_port(), free_port()
    process = OperatorProcess(
        operator_kubeconfig_path,
        log,
        [
            "--allowed-hosts",
            ",".join([*(fake.host for fake in fakes.all()), *keycloak_plan.hosts]),
            "--allow-insecure-http",
            "--ca-file",
            str(keycloak_plan.ca_cert),
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
