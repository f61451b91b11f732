"""Start and stop etcd, kube-apiserver and kube-controller-manager on loopback.

Every process is started in its own session. When ``tie_to_parent`` is set (the test
suite), the kernel also kills it (SIGKILL: the data is throwaway) the moment its parent dies
(PR_SET_PDEATHSIG), so an interrupted or killed test run leaves nothing behind. A
detached cluster (``make cluster-up``) records its pids in ``state.json`` and
``stop_detached`` ends them, checking each pid still runs our binary first.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tokensync_dev.devcluster import pki as pki_module
from tokensync_dev.devcluster.build import Binaries, ensure_binaries
from tokensync_dev.devcluster.kubeconfig import write_kubeconfig

_PR_SET_PDEATHSIG = 1
_STOP_GRACE_S = 10.0
STATE_FILE = "state.json"
# The suite's sole issuer before issue 18, the name in-cluster clients know: still accepted
# (the second --service-account-issuer), so a token or a client that names it keeps working.
IN_CLUSTER_ISSUER = "https://kubernetes.default.svc.cluster.local"
ISSUER_DISCOVERY_BINDING = "tokensync-dev:service-account-issuer-discovery"


class ControlPlaneError(RuntimeError):
    """The control plane did not come up; the message carries the logs' last lines."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent() -> None:
    """preexec_fn: the kernel kills this child the moment its parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Component:
    name: str
    binary: Path
    pid: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    args: list[str] = field(default_factory=list)

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return _pid_runs(self.pid, self.binary)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _pid_runs(pid: int, binary: Path) -> bool:
    """True when ``pid`` is alive and is our binary (a recycled pid is left alone)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return cmdline.decode(errors="replace") == str(binary)


@dataclass
class ControlPlane:
    workdir: Path
    binaries: Binaries
    server: str
    admin_kubeconfig: Path
    ca_cert: Path
    etcd_endpoint: str
    components: list[Component] = field(default_factory=list)
    tie_to_parent: bool = True

    @property
    def service_account_issuer(self) -> str:
        """The ``iss`` of every ServiceAccount token this API server signs.

        It is the API server's own URL (``start`` passes it as the first
        ``--service-account-issuer``), so ``<issuer>/.well-known/openid-configuration`` and
        the JWKS it names are served right there, trusted through ``ca_cert``: an identity
        provider in a test verifies a token the way one verifies a managed cluster's.
        """
        return self.server

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def stop_component(self, name: str) -> None:
        """Stop one process (SIGTERM, then SIGKILL after a grace): a fault for tests."""
        _terminate(self.component(name))

    def start_component(self, name: str, timeout_s: float = 60.0) -> None:
        """Start a stopped process again with its arguments and data; wait until it serves."""
        old = self.component(name)
        if old.alive():
            raise ControlPlaneError(f"{name} is still running")
        new = _spawn(name, old.binary, old.args, self.workdir, self.tie_to_parent)
        self.components[self.components.index(old)] = new
        self.save_state()
        probes: dict[str, Callable[[], bool]] = {
            "etcd": lambda: '"health":"true"' in _http_body(f"{self.etcd_endpoint}/health"),
            "kube-apiserver": self.api_ready,
        }
        probe = probes.get(name)
        if probe is not None:
            _wait(name, probe, [new], timeout_s)

    def api_ready(self) -> bool:
        """The API server answers /readyz with ok (etcd reachable, informers synced)."""
        ready = _http_body(f"{self.server}/readyz", verify=self.admin_tls())
        return ready == "ok"

    def admin_tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        pki = self.workdir / "pki"
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return context

    def allow_issuer_discovery(self) -> None:
        """Let anyone read the issuer's discovery document and JWKS, as managed clusters do.

        The built-in ClusterRole system:service-account-issuer-discovery is bound by default
        to ServiceAccounts only; an identity provider outside the cluster fetches the
        document anonymously. Both documents hold public keys only. ``apply`` makes this
        idempotent: a restarted API server finds the binding already in etcd.
        """
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {
                "name": ISSUER_DISCOVERY_BINDING,
                "labels": {"app.kubernetes.io/part-of": "tokensync-dev"},
            },
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:service-account-issuer-discovery",
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Group",
                    "name": "system:unauthenticated",
                }
            ],
        }
        self.kubectl("apply", "-f", "-", input_text=json.dumps(binding))

    def kubectl(self, *args: str, check: bool = True, input_text: str | None = None) -> str:
        """Run the kubectl we built (it matches the server's minor version) as admin."""
        result = subprocess.run(
            [str(self.binaries.kubectl), "--kubeconfig", str(self.admin_kubeconfig), *args],
            capture_output=True,
            text=True,
            input=input_text,
            check=False,
        )
        if check and result.returncode != 0:
            raise ControlPlaneError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result.stdout + (result.stderr if not check else "")

    def install_crds(self, crd_dir: Path, timeout_s: int = 60) -> None:
        """Apply the CRDs in ``crd_dir`` (a kustomization or plain files); wait until served."""
        if (crd_dir / "kustomization.yaml").exists():
            source = ["-k", str(crd_dir)]
        else:
            source = ["-f", str(crd_dir)]
        self.kubectl("apply", "--server-side", "--force-conflicts", *source)
        self.kubectl(
            "wait",
            "--for=condition=Established",
            "crd",
            "-l",
            "app.kubernetes.io/part-of=tokensync",
            f"--timeout={timeout_s}s",
        )

    def service_account_kubeconfig(
        self, namespace: str, account: str, path: Path, duration: str = "24h"
    ) -> Path:
        """A kubeconfig for ``namespace/account`` with a token from the TokenRequest API."""
        token = self.kubectl("create", "token", account, "-n", namespace, f"--duration={duration}")
        return write_kubeconfig(
            path,
            server=self.server,
            ca_pem=self.ca_cert.read_bytes(),
            user=f"{namespace}-{account}",
            token=token.strip(),
            namespace=namespace,
        )

    def stop(self) -> None:
        # Clients first, storage last: the API server flushes nothing after etcd is gone.
        for component in reversed(self.components):
            _terminate(component)
        state = self.workdir / STATE_FILE
        with contextlib.suppress(FileNotFoundError):
            state.unlink()

    def save_state(self) -> None:
        state = {
            "server": self.server,
            "kubeconfig": str(self.admin_kubeconfig),
            "components": [
                {"name": c.name, "binary": str(c.binary), "pid": c.pid, "log": str(c.log)}
                for c in self.components
            ],
        }
        (self.workdir / STATE_FILE).write_text(json.dumps(state, indent=2))


def _terminate(component: Component) -> None:
    if not component.alive():
        if component.process is not None:
            component.process.wait()
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(component.pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_S
    while time.monotonic() < deadline:
        if component.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.process.wait(timeout=0.1)
        else:
            time.sleep(0.1)
        if not component.alive():
            return
    with contextlib.suppress(ProcessLookupError):
        os.kill(component.pid, signal.SIGKILL)
    if component.process is not None:
        component.process.wait()


def attach(workdir: Path, binaries: Binaries | None = None) -> ControlPlane | None:
    """The detached cluster recorded in ``workdir``, if all its processes still run."""
    state_path = workdir / STATE_FILE
    if not state_path.exists():
        return None
    state = json.loads(state_path.read_text())
    components = [
        Component(name=c["name"], binary=Path(c["binary"]), pid=c["pid"], log=Path(c["log"]))
        for c in state["components"]
    ]
    if len(components) != 3 or not all(c.alive() for c in components):
        return None
    return ControlPlane(
        workdir=workdir,
        binaries=binaries or ensure_binaries(),
        server=state["server"],
        admin_kubeconfig=Path(state["kubeconfig"]),
        ca_cert=workdir / "pki" / "ca.crt",
        etcd_endpoint="",
        components=components,
    )


def stop_detached(workdir: Path) -> list[str]:
    """Stop a cluster started with ``start(..., tie_to_parent=False)``; names what it stopped."""
    state_path = workdir / STATE_FILE
    if not state_path.exists():
        return []
    state = json.loads(state_path.read_text())
    components = [
        Component(name=c["name"], binary=Path(c["binary"]), pid=c["pid"], log=Path(c["log"]))
        for c in state["components"]
    ]
    stopped = [c.name for c in components if c.alive()]
    for component in reversed(components):
        _terminate(component)
    state_path.unlink()
    return stopped


def _spawn(
    name: str, binary: Path, args: list[str], workdir: Path, tie_to_parent: bool
) -> Component:
    log = workdir / f"{name}.log"
    preexec: Callable[[], None] | None = die_with_parent if tie_to_parent else None
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [str(binary), *args],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=True,
            preexec_fn=preexec,
        )
    return Component(
        name=name, binary=binary, pid=process.pid, log=log, process=process, args=list(args)
    )


def _wait(
    what: str,
    probe: Callable[[], bool],
    components: list[Component],
    timeout_s: float,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for component in components:
            if not component.alive():
                raise ControlPlaneError(
                    f"{component.name} exited while waiting for {what}:\n{component.log_tail()}"
                )
        if probe():
            return
        time.sleep(0.1)
    tails = "\n".join(f"--- {c.name}\n{c.log_tail()}" for c in components)
    raise ControlPlaneError(f"timed out after {timeout_s:.0f}s waiting for {what}\n{tails}")


def _http_body(url: str, **client_args: Any) -> str:
    """The body of a 200 answer, or "" for anything else (not up yet, refused, an error)."""
    try:
        with httpx.Client(timeout=2.0, **client_args) as client:
            response = client.get(url)
    except httpx.HTTPError:
        return ""
    return response.text if response.status_code == 200 else ""


def start(
    workdir: Path,
    *,
    binaries: Binaries | None = None,
    tie_to_parent: bool = True,
    ready_timeout_s: float = 120.0,
    crd_dir: Path | None = None,
    extra_apiserver_args: list[str] | None = None,
) -> ControlPlane:
    """Start a fresh control plane in ``workdir`` and wait until it is ready.

    CRDs in ``crd_dir`` are installed before the controller manager starts, so its garbage
    collector watches their kinds from the first second rather than after its next
    discovery pass (30 s).
    """
    binaries = binaries or ensure_binaries()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    certs = pki_module.generate(workdir / "pki")

    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    etcd_endpoint = f"http://127.0.0.1:{etcd_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    server = f"https://127.0.0.1:{api_port}"
    admin_kubeconfig = workdir / "admin.kubeconfig"
    write_kubeconfig(
        admin_kubeconfig,
        server=server,
        ca_pem=certs.ca_cert.read_bytes(),
        user="admin",
        client_cert_pem=certs.admin_cert.read_bytes(),
        client_key_pem=certs.admin_key.read_bytes(),
    )
    plane = ControlPlane(
        workdir=workdir,
        binaries=binaries,
        server=server,
        admin_kubeconfig=admin_kubeconfig,
        ca_cert=certs.ca_cert,
        etcd_endpoint=etcd_endpoint,
        tie_to_parent=tie_to_parent,
    )
    try:
        plane.components.append(
            _spawn(
                "etcd",
                binaries.etcd,
                [
                    "--name=default",
                    f"--data-dir={workdir / 'etcd-data'}",
                    f"--listen-client-urls={etcd_endpoint}",
                    f"--advertise-client-urls={etcd_endpoint}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=default={peer}",
                    # A throwaway store for tests: durability is not worth the fsync cost.
                    "--unsafe-no-fsync",
                    "--log-level=warn",
                ],
                workdir,
                tie_to_parent,
            )
        )
        plane.save_state()
        _wait(
            "etcd",
            lambda: '"health":"true"' in _http_body(f"{etcd_endpoint}/health"),
            plane.components,
            30,
        )

        plane.components.append(
            _spawn(
                "kube-apiserver",
                binaries.kube_apiserver,
                [
                    f"--etcd-servers={etcd_endpoint}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    f"--secure-port={api_port}",
                    f"--cert-dir={workdir / 'apiserver-certs'}",
                    f"--tls-cert-file={certs.serving_cert}",
                    f"--tls-private-key-file={certs.serving_key}",
                    f"--client-ca-file={certs.ca_cert}",
                    # The first issuer signs and is the one discovery describes: the API
                    # server's own URL, so an identity provider in a test finds the JWKS
                    # where the token's iss says. The second is still accepted.
                    f"--service-account-issuer={server}",
                    f"--service-account-issuer={IN_CLUSTER_ISSUER}",
                    # Tokens requested without an audience are for the API server, under
                    # either name.
                    f"--api-audiences={server},{IN_CLUSTER_ISSUER}",
                    f"--service-account-key-file={certs.service_account_pub}",
                    f"--service-account-signing-key-file={certs.service_account_key}",
                    "--service-cluster-ip-range=10.96.0.0/16",
                    "--authorization-mode=RBAC",
                    "--allow-privileged=false",
                    "--profiling=false",
                    "--v=1",
                    *(extra_apiserver_args or []),
                ],
                workdir,
                tie_to_parent,
            )
        )
        plane.save_state()
        _wait("kube-apiserver /readyz", plane.api_ready, plane.components, ready_timeout_s)
        # /readyz includes the RBAC bootstrap: the built-in ClusterRole exists by now.
        plane.allow_issuer_discovery()

        if crd_dir is not None:
            plane.install_crds(crd_dir)
        plane.components.append(
            _spawn(
                "kube-controller-manager",
                binaries.kube_controller_manager,
                [
                    f"--kubeconfig={admin_kubeconfig}",
                    f"--authentication-kubeconfig={admin_kubeconfig}",
                    f"--authorization-kubeconfig={admin_kubeconfig}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={free_port()}",
                    f"--cert-dir={workdir / 'kcm-certs'}",
                    "--leader-elect=false",
                    "--use-service-account-credentials=false",
                    # Only what makes the API behave like a real cluster's for tokensync:
                    # owner-based garbage collection, namespace deletion, default accounts,
                    # and the built-in admin/edit/view roles filled by aggregation (the
                    # chart's user roles reach namespace users that way).
                    "--controllers=garbage-collector-controller,namespace-controller,"
                    "serviceaccount-controller,clusterrole-aggregation-controller",
                    f"--root-ca-file={certs.ca_cert}",
                    "--v=1",
                ],
                workdir,
                tie_to_parent,
            )
        )
        plane.save_state()
    except BaseException:
        plane.stop()
        raise
    return plane
