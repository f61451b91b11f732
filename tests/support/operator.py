"""The operator under test: a real `tokensync run` process with the shipped RBAC."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from support.cluster import REPO
from support.waiting import wait_for
from tokensync_dev.devcluster.cluster import die_with_parent

# The log of the operator whose control plane the fault tests stop and start (the leak
# scan reads it; the RBAC check knows its API server restarts).
FAULT_PLANE_LOG = "fault-operator.log"


class OperatorProcess:
    def __init__(self, kubeconfig: Path, log_path: Path, args: list[str]) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        self.metrics_url = ""
        self.health_url = ""

    def start(self) -> OperatorProcess:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONPATH": str(REPO / "operator"),
            "PYTHONUNBUFFERED": "1",
        }
        with self.log_path.open("ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tokensync", "run", *self.args],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=die_with_parent,
            )
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, exactly like an OOM kill or a node loss."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def readiness(self) -> tuple[int, str]:
        """What its ``/readyz`` answers (status, text: ``ok: leading``, ``ok: standby``);
        (0, "") while nothing answers."""
        try:
            answer = httpx.get(self.health_url + "/readyz", timeout=2)
        except httpx.HTTPError:
            return 0, ""
        return answer.status_code, answer.text

    def wait_ready(self, timeout_s: float = 60) -> None:
        """Wait until its ``/readyz`` answers 200 (a leader or a ready standby); a process
        that exits meanwhile fails at once, with the end of its log."""
        assert self.health_url, "no health_url: the operator was started without --health-port"

        def ready() -> bool:
            assert self.running(), (
                f"{self.log_path.name}: the operator exited\n{self.logs()[-4000:]}"
            )
            return self.readiness()[0] == 200

        wait_for(ready, timeout_s=timeout_s, what=f"{self.health_url}/readyz to answer 200")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
