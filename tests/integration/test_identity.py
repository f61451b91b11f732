"""The operator starts under a uid with no passwd entry, with or without POD_ID.

The image runs as 65532, which has no passwd entry; kopf, given no identity, asked
`getpass.getuser()` and died with `KeyError: 'getpwuid(): uid not found: 65532'`. The
image test (test_image.py) proves the fix in the image itself; this one reproduces the
same lookup failure on the host, where the suite cannot switch uid (its Python lives under
a home only root may enter): `pwd.getpwuid` raises exactly as it does for 65532, and the
environment names no user.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from support.cluster import REPO
from support.objects import Cluster
from support.waiting import wait_for
from tokensync_dev.devcluster.cluster import die_with_parent, free_port

NO_PASSWD_ENTRY = """
import pwd

def _no_entry(uid):
    raise KeyError(f"getpwuid(): uid not found: {uid}")

pwd.getpwuid = _no_entry
"""


@pytest.mark.parametrize("pod_id", [None, "tokensync-abc12"], ids=["no-POD_ID", "POD_ID"])
def test_starts_without_a_passwd_entry(
    cluster: Cluster, operator_kubeconfig_path: Path, tmp_path: Path, pod_id: str | None
) -> None:
    (tmp_path / "sitecustomize.py").write_text(NO_PASSWD_ENTRY)
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"LOGNAME", "USER", "LNAME", "USERNAME", "POD_ID"}
    }
    environment |= {
        "KUBECONFIG": str(operator_kubeconfig_path),
        "PYTHONPATH": f"{tmp_path}:{REPO / 'operator'}",
    }
    if pod_id:
        environment["POD_ID"] = pod_id
    # The check that the emulation is faithful: without the fix this is what kopf hit.
    probe = subprocess.run(
        [sys.executable, "-c", "import getpass; getpass.getuser()"],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "uid not found" in probe.stderr

    health = free_port()
    command = [sys.executable, "-m", "tokensync", "run", "--metrics-port", "0"]
    # An empty namespace of its own: the suite's operator keeps every other one.
    namespace = cluster.namespace("identity")
    log = tmp_path / "operator.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*command, "--namespace", namespace, "--health-port", str(health)],
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
    try:

        def ready() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{health}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout_s=30, what="the operator to be ready")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()  # never left running; the assertion below reports it
            process.wait()
    assert process.returncode == 0, log.read_text()
    assert "uid not found" not in log.read_text()
