"""``python -m tokensync.devcluster build|up|down|binaries``: the local control plane."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from tokensync.devcluster.build import BuildError, ensure_binaries
from tokensync.devcluster.cluster import ControlPlaneError, start, stop_detached


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


def _binaries(_: argparse.Namespace) -> int:
    binaries = ensure_binaries()
    for name in ("etcd", "kube_apiserver", "kube_controller_manager", "kubectl"):
        print(f"{name}={getattr(binaries, name)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tokensync.devcluster")
    parser.add_argument("--dir", type=Path, default=Path(".local"), help="state directory")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start a detached control plane and install the CRDs")
    up.add_argument("--crds", type=Path, default=Path("crds"), help="CRD directory to apply")
    up.set_defaults(run=_up)
    commands.add_parser("down", help="stop the detached control plane").set_defaults(run=_down)
    commands.add_parser("binaries", help="build (if needed) and print the binaries").set_defaults(
        run=_binaries
    )
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except (BuildError, ControlPlaneError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
