"""``python -m tokensync_dev.devcluster build|up|down|binaries``: the local control plane."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tokensync_dev.devcluster.build import BuildError, ensure_binaries, helm_binary
from tokensync_dev.devcluster.cluster import (
    ControlPlaneError,
    attach,
    die_with_parent,
    start,
    stop_detached,
)


def _up(args: argparse.Namespace) -> int:
    local: Path = args.dir.resolve()
    stopped = stop_detached(local / "cluster")
    if stopped:
        print(f"stopped a previous cluster: {', '.join(stopped)}", file=sys.stderr)
    begin = time.monotonic()
    plane = start(local / "cluster", tie_to_parent=False, crd_dir=args.crds)
    kubeconfig = local / "kubeconfig"
    shutil.copy2(plane.admin_kubeconfig, kubeconfig)
    print(
        f"control plane ready at {plane.server} in {time.monotonic() - begin:.1f}s",
        file=sys.stderr,
    )
    print(f"export KUBECONFIG={kubeconfig}")
    return 0


def _down(args: argparse.Namespace) -> int:
    stopped = stop_detached(args.dir.resolve() / "cluster")
    print(f"stopped: {', '.join(stopped) or 'nothing was running'}", file=sys.stderr)
    return 0


def _configured_kubeconfig() -> str | None:
    explicit = os.environ.get("KUBECONFIG")
    if explicit:
        return explicit
    default = Path.home() / ".kube" / "config"
    return str(default) if default.exists() else None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    """``make run``: the operator against your cluster, or against a local one."""
    # Ctrl-C and SIGTERM both end the run cleanly (control plane included), also when
    # started from a shell that set SIGINT to "ignore" for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    operator_args = [a for a in args.operator_args if a != "--"]
    command = [sys.executable, "-m", "tokensync", "run", *operator_args]
    configured = _configured_kubeconfig()
    if configured:
        print(f"running tokensync against the cluster of {configured}", file=sys.stderr)
        return subprocess.call(command, preexec_fn=die_with_parent)
    local: Path = args.dir.resolve()
    plane = attach(local / "cluster")
    owned = plane is None
    if plane is None:
        print("no cluster configured: starting a local control plane", file=sys.stderr)
        plane = start(local / "cluster-run", crd_dir=args.crds)
    else:
        plane.install_crds(args.crds)
    try:
        plane.kubectl("apply", "-k", str(args.rbac))
        operator_kubeconfig = plane.service_account_kubeconfig(
            "tokensync-system", "tokensync", local / "operator.kubeconfig"
        )
        admin = local / "kubeconfig"
        if plane.admin_kubeconfig != admin:
            shutil.copy2(plane.admin_kubeconfig, admin)
        print(
            f"local control plane at {plane.server}; in another shell:\n"
            f"  export KUBECONFIG={admin}\n"
            "the operator runs as its ServiceAccount with deploy/rbac, allowing loopback "
            "endpoints over plain http (development only)",
            file=sys.stderr,
        )
        env = {**os.environ, "KUBECONFIG": str(operator_kubeconfig)}
        local_args = [
            "--allowed-hosts",
            "127.0.0.1,localhost",
            "--allow-insecure-http",
            "--allow-private-networks",
        ]
        with contextlib.suppress(KeyboardInterrupt):
            return subprocess.call([*command, *local_args], env=env, preexec_fn=die_with_parent)
        return 0
    finally:
        if owned:
            plane.stop()


def _binaries(args: argparse.Namespace) -> int:
    binaries = ensure_binaries()
    for name in ("etcd", "kube_apiserver", "kube_controller_manager", "kubectl"):
        print(f"{name}={getattr(binaries, name)}")
    if args.helm:
        print(f"helm={helm_binary()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tokensync_dev.devcluster")
    parser.add_argument("--dir", type=Path, default=Path(".local"), help="state directory")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start a detached control plane and install the CRDs")
    up.add_argument("--crds", type=Path, default=Path("crds"), help="CRD directory to apply")
    up.set_defaults(run=_up)
    commands.add_parser("down", help="stop the detached control plane").set_defaults(run=_down)
    binaries = commands.add_parser("binaries", help="build (if needed) and print the binaries")
    binaries.add_argument("--helm", action="store_true", help="helm too (chart tests)")
    binaries.set_defaults(run=_binaries)
    run = commands.add_parser(
        "run", help="run the operator; with no cluster configured, on a local control plane"
    )
    run.add_argument("--crds", type=Path, default=Path("crds"))
    run.add_argument("--rbac", type=Path, default=Path("deploy/rbac"))
    run.add_argument("operator_args", nargs=argparse.REMAINDER, help="passed to tokensync run")
    run.set_defaults(run=_run)
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except (BuildError, ControlPlaneError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
