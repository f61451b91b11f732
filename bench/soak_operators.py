"""The operator replicas of the soak: started, SIGKILLed and restarted as a kubelet would.

Each replica is ``python -m tokensync run`` with the ServiceAccount kubeconfig (never
admin), its own log file, and ``--leader-election --identity replica-N`` when there are
several. A replica that exits on its own is restarted too (after 1-2 s), and counted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tokensync_dev.devcluster.cluster import die_with_parent

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Replica:
    identity: str
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    killed: int = 0
    exits: list[tuple[float, int]] = field(default_factory=list)  # unexpected: (time, code)
    cpu_done_s: float = 0.0  # CPU of earlier processes of this replica
    cpu_now_s: float = 0.0
    peak_rss_mib: float = 0.0
    expect_exit: bool = False


class Operators:
    def __init__(
        self, kubeconfig: Path, workdir: Path, args: list[str], replicas: int, restart_s: float
    ) -> None:
        self.kubeconfig = kubeconfig
        self.args = args
        self.restart_s = restart_s
        self.election = replicas > 1
        self.replicas = [
            Replica(f"replica-{i}", workdir / f"operator-replica-{i}.log") for i in range(replicas)
        ]
        self.stopping = False

    def command(self, replica: Replica) -> list[str]:
        extra = ["--leader-election", "--identity", replica.identity] if self.election else []
        return [sys.executable, "-m", "tokensync", "run", *self.args, *extra]

    def start(self, replica: Replica) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONPATH": str(REPO / "operator"),
            "PYTHONUNBUFFERED": "1",
        }
        with replica.log.open("ab") as sink:
            sink.write(f"\n=== soak: start {time.time():.3f}\n".encode())
            replica.process = subprocess.Popen(
                self.command(replica),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=die_with_parent,
            )
        replica.starts += 1
        replica.cpu_now_s = 0.0
        replica.expect_exit = False

    def start_all(self) -> None:
        for replica in self.replicas:
            self.start(replica)

    def by_identity(self, identity: str) -> Replica | None:
        return next((r for r in self.replicas if r.identity == identity), None)

    async def kill(self, replica: Replica) -> tuple[float, float]:
        """SIGKILL, then start again after ``restart_s``: (killed at, started at)."""
        process = replica.process
        assert process is not None
        replica.expect_exit = True
        self.sample(replica)
        killed = time.time()
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        while process.poll() is None:
            await asyncio.sleep(0.02)
        replica.killed += 1
        replica.cpu_done_s += replica.cpu_now_s
        replica.cpu_now_s = 0.0
        with replica.log.open("ab") as sink:
            sink.write(f"\n=== soak: SIGKILL {killed:.3f}\n".encode())
        await asyncio.sleep(self.restart_s)
        self.start(replica)
        return killed, time.time()

    def sample(self, replica: Replica) -> None:
        process = replica.process
        if process is None or process.poll() is not None:
            return
        try:
            stat = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{process.pid}/status").read_text()
        except OSError:
            return
        replica.cpu_now_s = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        for line in status.splitlines():
            if line.startswith("VmHWM"):
                replica.peak_rss_mib = max(replica.peak_rss_mib, int(line.split()[1]) / 1024)

    async def supervise(self) -> None:
        """Sample CPU and memory every 2 s; restart a replica that exited on its own."""
        while not self.stopping:
            for replica in self.replicas:
                process = replica.process
                if process is None:
                    continue
                code = process.poll()
                if code is None:
                    self.sample(replica)
                elif not replica.expect_exit:
                    replica.exits.append((time.time(), code))
                    replica.cpu_done_s += replica.cpu_now_s
                    replica.cpu_now_s = 0.0
                    replica.expect_exit = True
                    with replica.log.open("ab") as sink:
                        sink.write(f"\n=== soak: exited {code} {time.time():.3f}\n".encode())
                    asyncio.get_running_loop().call_later(self.restart_s, self._restart, replica)
            await asyncio.sleep(2)

    def _restart(self, replica: Replica) -> None:
        if not self.stopping:
            self.start(replica)

    def stop(self) -> None:
        self.stopping = True
        for replica in self.replicas:
            self.sample(replica)
            if replica.process and replica.process.poll() is None:
                replica.process.send_signal(signal.SIGKILL)
                replica.process.wait()

    def cpu_s(self) -> float:
        return sum(r.cpu_done_s + r.cpu_now_s for r in self.replicas)

    def peak_rss_mib(self) -> float:
        return max((r.peak_rss_mib for r in self.replicas), default=0.0)
