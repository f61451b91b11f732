"""Every startup mistake a user can make against a real API server: one line, non-zero, fast.

Each case runs a real `tokensync run` process and must end by itself: a process still up
after the deadline is the failure this module exists for (it used to log a traceback from
kopf's startup handler and keep running, doing nothing).
"""

from __future__ import annotations

import copy
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from support.cluster import OPERATOR_NAMESPACE, REPO, control_plane_in, operator_kubeconfig
from tokensync_dev.devcluster.cluster import ControlPlane, free_port

# Generous for a loaded 2-core CI machine; a healthy run exits in about a second.
EXIT_WITHIN_S = 15.0


@dataclass
class Outcome:
    code: int
    stderr: str
    seconds: float

    @property
    def error_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def run_operator(kubeconfig: Path | None, *args: str, env: dict[str, str] | None = None) -> Outcome:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"}
    }
    environment |= {"PYTHONPATH": str(REPO / "operator"), "HOME": "/nonexistent", **(env or {})}
    if kubeconfig is not None:
        environment["KUBECONFIG"] = str(kubeconfig)
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "tokensync", "run", *_quiet_ports(args), *args],
            env=environment,
            capture_output=True,
            text=True,
            timeout=EXIT_WITHIN_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"still running after {EXIT_WITHIN_S}s; output: {expired.stderr!r}")
    outcome = Outcome(result.returncode, result.stderr, time.monotonic() - started)
    # The record a reader of the CI log (and the closing note) looks for.
    print(f"\n[startup] exit {outcome.code} in {outcome.seconds:.2f}s: {outcome.error_line}")
    return outcome


def _quiet_ports(args: tuple[str, ...]) -> list[str]:
    """Port 0 (off) for whichever port a case does not set, so cases never collide."""
    return [
        item
        for option in ("--metrics-port", "--health-port")
        if option not in args
        for item in (option, "0")
    ]


def assert_one_clear_line(outcome: Outcome, *expected: str) -> None:
    assert outcome.code == 1, outcome.stderr
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert "Unclosed" not in outcome.stderr, outcome.stderr
    errors = [line for line in outcome.stderr.splitlines() if "error" in line.lower()]
    assert errors == [outcome.error_line], outcome.stderr
    assert outcome.error_line.startswith("tokensync: error: "), outcome.stderr
    for text in expected:
        assert text in outcome.error_line, outcome.error_line
    assert outcome.seconds < EXIT_WITHIN_S


def kubeconfig_variant(source: Path, target: Path, change: dict[str, str]) -> Path:
    """A copy of a kubeconfig with the cluster's server/CA or the user's token replaced."""
    config = yaml.safe_load(source.read_text())
    changed = copy.deepcopy(config)
    cluster = changed["clusters"][0]["cluster"]
    user = changed["users"][0]["user"]
    if "server" in change:
        cluster["server"] = change["server"]
    if "certificate-authority" in change:
        cluster.pop("certificate-authority-data", None)
        cluster["certificate-authority"] = change["certificate-authority"]
    if "token" in change:
        user["token"] = change["token"]
    target.write_text(yaml.safe_dump(changed))
    return target


def test_operator_namespace_missing(operator_kubeconfig_path: Path) -> None:
    outcome = run_operator(operator_kubeconfig_path, "--operator-namespace", "no-such-home")
    assert_one_clear_line(
        outcome, 'operator namespace "no-such-home" does not exist', "--operator-namespace"
    )


def test_api_server_unreachable(operator_kubeconfig_path: Path, tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    kubeconfig = kubeconfig_variant(
        operator_kubeconfig_path, tmp_path / "kubeconfig", {"server": f"https://127.0.0.1:{closed}"}
    )
    outcome = run_operator(kubeconfig)
    assert_one_clear_line(
        outcome, f"cannot reach the Kubernetes API server at https://127.0.0.1:{closed}"
    )
    assert "connection failed (Connection refused)" in outcome.error_line


def test_api_server_silent(operator_kubeconfig_path: Path, tmp_path: Path) -> None:
    """A server that takes the connection and never answers (a hung or blackholed one)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes the handshake; nobody ever reads
        port = silent.getsockname()[1]
        kubeconfig = kubeconfig_variant(
            operator_kubeconfig_path,
            tmp_path / "kubeconfig",
            {"server": f"https://127.0.0.1:{port}"},
        )
        outcome = run_operator(kubeconfig)
    assert_one_clear_line(outcome, "cannot reach the Kubernetes API server", "no answer in time")
    assert outcome.seconds < 10


def test_api_server_certificate_not_trusted(operator_kubeconfig_path: Path, tmp_path: Path) -> None:
    # Any CA but the cluster's: the system bundle cannot have signed the suite's server.
    kubeconfig = kubeconfig_variant(
        operator_kubeconfig_path,
        tmp_path / "kubeconfig",
        {"certificate-authority": "/etc/ssl/certs/ca-certificates.crt"},
    )
    outcome = run_operator(kubeconfig)
    assert_one_clear_line(outcome, "cannot reach", "TLS certificate is not trusted")


def test_not_an_api_server(operator_kubeconfig_path: Path, tmp_path: Path) -> None:
    """A web page where the API server should be (a wrong port, an ingress)."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>welcome</html>")

        def log_message(self, *_: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        kubeconfig = kubeconfig_variant(
            operator_kubeconfig_path, tmp_path / "kubeconfig", {"server": url}
        )
        try:
            outcome = run_operator(kubeconfig)
        finally:
            server.shutdown()
    assert_one_clear_line(outcome, f"the Kubernetes API server at {url} answered /version")
    assert "not JSON" in outcome.error_line and "welcome" not in outcome.stderr


def test_kubeconfig_with_a_broken_ca(operator_kubeconfig_path: Path, tmp_path: Path) -> None:
    broken = tmp_path / "ca.crt"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    kubeconfig = kubeconfig_variant(
        operator_kubeconfig_path, tmp_path / "kubeconfig", {"certificate-authority": str(broken)}
    )
    outcome = run_operator(kubeconfig)
    assert_one_clear_line(outcome, "TLS material (CA, client certificate or key) cannot be loaded")


def test_kubeconfig_that_is_not_yaml(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nclusters: [unclosed\n")
    outcome = run_operator(kubeconfig)
    assert_one_clear_line(outcome, "cannot load the kubeconfig named by KUBECONFIG")


def test_credentials_refused(operator_kubeconfig_path: Path, tmp_path: Path) -> None:
    kubeconfig = kubeconfig_variant(
        operator_kubeconfig_path, tmp_path / "kubeconfig", {"token": "not-a-valid-token"}
    )
    outcome = run_operator(kubeconfig)
    assert_one_clear_line(outcome, "refused this operator's credentials (401 Unauthorized)")


def test_no_kubeconfig_and_not_in_a_pod() -> None:
    outcome = run_operator(None)
    assert_one_clear_line(outcome, "no Kubernetes API to talk to", "not in a pod")


def test_kubeconfig_named_but_missing(tmp_path: Path) -> None:
    outcome = run_operator(tmp_path / "missing")
    assert_one_clear_line(outcome, "cannot load the kubeconfig named by KUBECONFIG")


@pytest.fixture
def partial_account(control_plane: ControlPlane, tmp_path: Path) -> Iterator[Path]:
    """The operator's ServiceAccount rules from deploy/rbac, less one verb."""
    rules = yaml.safe_load((REPO / "deploy" / "rbac" / "clusterrole.yaml").read_text())["rules"]
    for rule in rules:
        if rule["resources"] == ["providertokens/status"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != "patch"]
    rules = [rule for rule in rules if rule["verbs"]]
    name = "tokensync-partial"
    manifests = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": OPERATOR_NAMESPACE},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": OPERATOR_NAMESPACE}],
        },
    ]
    text = yaml.safe_dump_all(manifests)
    control_plane.kubectl("apply", "-f", "-", input_text=text)
    try:
        yield control_plane.service_account_kubeconfig(
            OPERATOR_NAMESPACE, name, tmp_path / "kubeconfig"
        )
    finally:
        control_plane.kubectl("delete", "--wait=false", "-f", "-", input_text=text)


def test_rbac_missing_a_verb(partial_account: Path) -> None:
    outcome = run_operator(partial_account)
    assert_one_clear_line(
        outcome,
        "RBAC: system:serviceaccount:tokensync-system:tokensync-partial may not "
        "patch providertokens/status (tokensync.dev) in all namespaces;",
        "deploy/rbac",
    )
    # Only what is missing is named.
    assert "secrets" not in outcome.error_line


def test_rbac_missing_the_lease_role_for_leader_election(partial_account: Path) -> None:
    outcome = run_operator(partial_account, "--leader-election")
    assert_one_clear_line(
        outcome,
        "get leases (coordination.k8s.io) in namespace tokensync-system, "
        "create leases (coordination.k8s.io) in namespace tokensync-system, "
        "update leases (coordination.k8s.io) in namespace tokensync-system",
    )


def test_rbac_missing_in_a_watched_namespace(partial_account: Path) -> None:
    outcome = run_operator(partial_account, "--namespace", "team-a")
    assert_one_clear_line(
        outcome, "may not patch providertokens/status (tokensync.dev) in namespace team-a"
    )


def test_health_port_taken(operator_kubeconfig_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # noqa: S104 - the operator binds all addresses too
        taken.listen()
        port = taken.getsockname()[1]
        outcome = run_operator(operator_kubeconfig_path, "--health-port", str(port))
    assert_one_clear_line(
        outcome,
        f"cannot serve the health probes on port {port} (--health-port): Address already in use",
    )


def test_metrics_port_taken(operator_kubeconfig_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # noqa: S104
        taken.listen()
        port = taken.getsockname()[1]
        outcome = run_operator(operator_kubeconfig_path, "--metrics-port", str(port))
    assert_one_clear_line(
        outcome, f"cannot serve metrics on port {port} (--metrics-port): Address already in use"
    )


@pytest.fixture(scope="module")
def plane_without_crd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A second API server, never given the CRD (the suite's has it, and other tests use it)."""
    directory = tmp_path_factory.mktemp("no-crd")
    with control_plane_in(directory, crds=False) as plane:
        yield plane


def test_crd_not_installed(plane_without_crd: ControlPlane, tmp_path: Path) -> None:
    kubeconfig = operator_kubeconfig(plane_without_crd, tmp_path / "kubeconfig")
    outcome = run_operator(kubeconfig)
    assert_one_clear_line(
        outcome, "the ProviderToken CRD is not installed", "tokensync.dev/v1alpha1", "kubectl apply"
    )
