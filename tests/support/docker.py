"""A Docker engine for the image test, and the operator's image built on it.

Our CI machines reach no container registry, and have no Docker engine running: the
project's own files bring both up. ``docker_engine`` uses the engine the environment
names (``DOCKER_HOST`` or the default socket) when one answers, and otherwise starts a
private ``dockerd`` with its data root in ``~/.cache/tokensync/docker`` (so that a warm
run reuses the base image and the build's layers), stops it on leaving, and never
touches the host's network setup: no bridge, no iptables; containers use the host's
network, and everything they talk to is on 127.0.0.1.

``build_image`` builds the repository's Dockerfile as it is, on the base the Dockerfile
names; when that base cannot be pulled, on the STAND-IN that hack/image/standin-base.sh
makes with debootstrap (docs/decisions/0006-image.md says why and how it differs).

    PYTHONPATH=tests .venv/bin/python -m support.docker build --tag tokensync:dev
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.waiting import wait_for
from tokensync_dev.devcluster.build import cache_root
from tokensync_dev.devcluster.cluster import die_with_parent

REPO = Path(__file__).resolve().parents[2]
STANDIN_SCRIPT = REPO / "hack" / "image" / "standin-base.sh"
STANDIN_LABEL = "dev.tokensync.stand-in"
# A private engine's runtime files: short paths (a unix socket path has a 108-byte limit,
# and containerd puts its own sockets under the exec root).
RUN_DIR = Path(f"/tmp/tokensync-docker-{os.getuid()}")


class DockerError(RuntimeError):
    """Docker is missing, would not start, or a command failed: the message says which."""


@dataclass(frozen=True)
class Docker:
    """The docker CLI, pointed at one engine."""

    binary: str
    host: str | None  # DOCKER_HOST, or None for the CLI's own default

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        if self.host:
            env["DOCKER_HOST"] = self.host
        return {**env, **(extra or {})}

    def run(
        self,
        *args: str,
        check: bool = True,
        timeout_s: float = 120,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(
                [self.binary, *args],
                capture_output=True,
                text=True,
                check=False,
                timeout=timeout_s,
                env=self.environment(env),
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as error:
            raise DockerError(f"docker {' '.join(args)}: no answer in {timeout_s:.0f} s") from error
        if check and result.returncode != 0:
            raise DockerError(
                f"docker {' '.join(args)} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result

    def answers(self) -> bool:
        return self.run("version", "--format", "{{.Server.Version}}", check=False).returncode == 0

    def inspect(self, kind: str, name: str) -> dict[str, Any]:
        """``docker <kind> inspect``: one object, or DockerError when there is none."""
        found: list[dict[str, Any]] = json.loads(self.run(kind, "inspect", name).stdout)
        return found[0]

    def image_exists(self, name: str) -> bool:
        return self.run("image", "inspect", name, check=False).returncode == 0


@dataclass(frozen=True)
class PrivateEngine:
    """Where a private dockerd keeps its state (cached) and its runtime files (in /tmp)."""

    data_root: Path
    run_dir: Path

    @classmethod
    def default(cls) -> PrivateEngine:
        return cls(cache_root() / "docker" / "data", RUN_DIR)

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def log(self) -> Path:
        return self.data_root.parent / "dockerd.log"

    def command(self, dockerd: str) -> list[str]:
        return [
            dockerd,
            "--data-root",
            str(self.data_root),
            "--exec-root",
            str(self.run_dir / "exec"),
            "--pidfile",
            str(self.run_dir / "docker.pid"),
            "--host",
            self.host,
            # The host's network is not ours to change: no docker0 bridge, no iptables
            # rules. Containers run with --network host and talk to 127.0.0.1 only.
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
        ]


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen[bytes], run_dir: Path, timeout_s: float = 30) -> None:
    if process.poll() is None:
        # SIGTERM: dockerd stops its containers and its containerd, then exits.
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    # dockerd 20.10 leaves its default network namespace (exec/netns/default) mounted
    # when it exits; nothing of this engine stays mounted after the run.
    for mount_point in _mounts_below(run_dir):
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False, capture_output=True)


def _mounts_below(directory: Path) -> list[Path]:
    """Mount points under ``directory``, deepest first."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Field 5 is the mount point, with spaces and the like octal-escaped.
        point = Path(line.split()[4].encode().decode("unicode_escape"))
        if directory in point.parents:
            found.append(point)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


@contextlib.contextmanager
def docker_engine(
    engine: PrivateEngine | None = None, *, start_timeout_s: float = 60
) -> Iterator[Docker]:
    """An engine that answers; a private dockerd is started, and stopped, only if needed."""
    client = shutil.which("docker")
    if client is None:
        raise DockerError("the docker CLI is missing: `make tools` installs Debian's docker.io")
    ambient = Docker(client, None)
    if ambient.answers():
        yield ambient
        return
    engine = engine or PrivateEngine.default()
    private = Docker(client, engine.host)
    if private.answers():  # another run's private engine: use it, leave it to its owner
        yield private
        return
    dockerd = shutil.which("dockerd") or next(
        (p for p in ("/usr/sbin/dockerd", "/usr/bin/dockerd") if Path(p).exists()), None
    )
    if dockerd is None:
        raise DockerError("dockerd is missing: `make tools` installs Debian's docker.io")
    engine.data_root.mkdir(parents=True, exist_ok=True)
    engine.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with engine.log.open("wb") as sink:
        process = subprocess.Popen(
            engine.command(dockerd),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Should this process die without cleaning up, dockerd dies with it.
            preexec_fn=die_with_parent,
        )
    try:
        deadline = time.monotonic() + start_timeout_s
        while not private.answers():
            if process.poll() is not None:
                raise DockerError(
                    f"dockerd exited with {process.returncode} on start "
                    f"({' '.join(engine.command(dockerd))}):\n{_log_tail(engine.log)}"
                )
            if time.monotonic() >= deadline:
                raise DockerError(
                    f"dockerd did not answer within {start_timeout_s:.0f} s:\n"
                    f"{_log_tail(engine.log)}"
                )
            time.sleep(0.2)
        yield private
    finally:
        _stop(process, engine.run_dir)


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    id: str
    size: int  # bytes, as `docker image inspect` reports
    base: str  # the Dockerfile's PYTHON_IMAGE default
    stand_in: bool  # built on hack/image/standin-base.sh's stand-in, not the real base
    seconds: float  # the stand-in and the build together


def dockerfile_base(dockerfile: Path = REPO / "Dockerfile") -> str:
    for line in dockerfile.read_text().splitlines():
        if line.startswith("ARG PYTHON_IMAGE="):
            return line.split("=", 1)[1].strip()
    raise DockerError(f"{dockerfile}: no 'ARG PYTHON_IMAGE=' default")


def ensure_base(docker: Docker, base: str) -> bool:
    """The Dockerfile's base, present in the engine; True when it is the stand-in."""
    if docker.image_exists(base) and not _stand_in_key(docker, base):
        return False  # the real image (a developer pulled it): build on it
    # Never a pull: on our machines no registry answers, and a proxy may make a pull
    # hang rather than fail. `docker pull` it yourself to build on the real base.
    result = subprocess.run(
        [str(STANDIN_SCRIPT), "--import"],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
        env=docker.environment(),
    )
    if result.returncode != 0:
        raise DockerError(f"{STANDIN_SCRIPT.name} failed:\n{result.stderr.strip()}")
    sys.stderr.write(result.stderr)
    return True


def _stand_in_key(docker: Docker, image: str) -> str:
    labels = docker.inspect("image", image)["Config"].get("Labels") or {}
    return str(labels.get(STANDIN_LABEL, ""))


def build_image(
    docker: Docker,
    tag: str,
    *,
    context: Path = REPO,
    log: Path | None = None,
    timeout_s: float = 1800,
) -> BuiltImage:
    """``docker build`` of the Dockerfile as it is, on its base or the stand-in."""
    started = time.monotonic()
    base = dockerfile_base(context / "Dockerfile")
    stand_in = ensure_base(docker, base)
    result = docker.run(
        "build",
        # Host networking for pip: the engine has no bridge.
        "--network",
        "host",
        "--tag",
        tag,
        str(context),
        check=False,
        timeout_s=timeout_s,
        # The classic builder: BuildKit would fetch the `# syntax=` frontend image from
        # a registry, which this network does not reach.
        env={"DOCKER_BUILDKIT": "0"},
    )
    if log is not None:
        log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise DockerError(f"docker build failed ({result.returncode}):\n{tail}")
    image = docker.inspect("image", tag)
    return BuiltImage(
        tag=tag,
        id=str(image["Id"]),
        size=int(image["Size"]),
        base=base,
        stand_in=stand_in,
        seconds=time.monotonic() - started,
    )


def wait_running(docker: Docker, container: str, *, timeout_s: float = 30) -> None:
    wait_for(
        lambda: docker.inspect("container", container)["State"]["Running"],
        timeout_s=timeout_s,
        what=f"container {container} to run",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m support.docker",
        description="Build the operator's image (on a stand-in base when the real one "
        "cannot be pulled), with the engine the environment names or a private one.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the Dockerfile")
    build.add_argument("--tag", default="tokensync:dev")
    args = parser.parse_args(argv)
    try:
        with docker_engine() as docker:
            built = build_image(docker, args.tag)
            where = docker.host or "the engine DOCKER_HOST names (or the default socket)"
    except DockerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    kind = "the STAND-IN (hack/image/standin-base.sh)" if built.stand_in else "the real image"
    print(
        f"built {built.tag} ({built.size / 1e6:.1f} MB, {built.seconds:.0f} s) on {built.base}: "
        f"{kind}, in {where}"
    )
    if docker.host:
        print(
            f"that engine was private and is stopped now; its data stays in "
            f"{PrivateEngine.default().data_root} (`make image-test` uses it)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
