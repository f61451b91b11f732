"""external-secrets (ESO), the benchmark's peer: built from its Go module, cached by version.

The build mirrors ``tokensync_dev.devcluster.build``: a wrapper module requires the pinned
release, carries over the release's own ``replace`` directives (a dependency's are ignored
by Go), names the controller's main package as a ``tool`` so ``go mod tidy`` keeps it, and
``go build`` runs through the module proxy with the Go on PATH (``GOTOOLCHAIN=local`` on
our machines: nothing else is fetched). The binary lands in
``~/.cache/tokensync/peers/external-secrets-<version>/``; a second call finds it there.

Why v0.20.4: from v1.0.0 on, the repository is split into some sixty modules (``apis``,
``runtime``, ``providers/v1/*``, ``generators/v1/*``) that the root go.mod replaces with
``./`` paths, and the module proxy we reach serves none of them (404), so no wrapper can
build a v1 release; it also refuses every v1 release but v1.3.2 (403). v0.20.4
(2025-10-24, go 1.25.1) is the last single-module release and is served. Its API is the
same ``external-secrets.io/v1`` ExternalSecret and ``generators.external-secrets.io/v1alpha1``
Webhook generator as v1.x.

The controller runs as a plain process (``run_args``): the module root's ``main.go`` is the
controller manager (``cmd/controller/root.go``); the webhook server and the cert controller
are its ``webhook`` and ``certcontroller`` subcommands, not started here, and the CRDs
(``config/crds/bases``) carry no conversion webhook, so none is needed. It reads the
cluster from ``KUBECONFIG`` (controller-runtime's ``--kubeconfig`` Go flag is not wired
into its cobra command).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokensync_dev.devcluster.build import (
    BuildError,
    _build_lock,
    _install,
    _run_go,
    cache_root,
)
from tokensync_dev.devcluster.cluster import ControlPlane

ESO_MODULE = "github.com/external-secrets/external-secrets"
ESO_VERSION = "v0.20.4"
BINARY = "external-secrets"
# main.go at the module root: ``controller.Execute()`` from cmd/controller.
MAIN_PACKAGE = ESO_MODULE
CRD_DIR = "config/crds/bases"
# Every ESO CRD carries this label; ``kubectl wait`` selects them with it.
CRD_LABEL = "external-secrets.io/component=controller"
WRAPPER_MODULE = "tokensync.local/external-secrets"

GENERATORS_API = "generators.external-secrets.io/v1alpha1"
EXTERNAL_SECRETS_API = "external-secrets.io/v1"

_GO_VERSION = re.compile(r"^(?:go)?(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class Module:
    """The downloaded release: where its source is and what its go.mod asks of a wrapper."""

    version: str
    dir: Path
    go_version: str
    replaces: list[str]


def peer_dir(version: str = ESO_VERSION) -> Path:
    return cache_root() / "peers" / f"external-secrets-{version}"


def binary_path(version: str = ESO_VERSION) -> Path:
    return peer_dir(version) / BINARY


def carried_replaces(go_mod: Mapping[str, Any]) -> list[str]:
    """The release's replace directives as wrapper lines (``go mod edit -json`` input).

    A replacement by a local path (``=> ./apis``) names a directory that is not in the
    downloaded module; a wrapper cannot carry it, so the release cannot be built this way.
    """
    lines: list[str] = []
    for replace in go_mod.get("Replace") or []:
        old, new = replace["Old"], replace["New"]
        old_spec = f"{old['Path']} {old['Version']}" if old.get("Version") else old["Path"]
        if not new.get("Version"):
            raise BuildError(
                f"{ESO_MODULE} replaces {old['Path']} with the local path {new['Path']}: "
                "that directory is a module of its own, not part of the downloaded one, "
                "so a wrapper module cannot build this release"
            )
        lines.append(f"{old_spec} => {new['Path']} {new['Version']}")
    return lines


def wrapper_go_mod(version: str, go_version: str, replaces: Sequence[str]) -> str:
    """go.mod of the wrapper module that builds the controller as a Go tool."""
    text = f"module {WRAPPER_MODULE}\n\ngo {go_version}\n\nrequire {ESO_MODULE} {version}\n\n"
    if replaces:
        body = "\n".join(f"\t{line}" for line in replaces)
        text += f"replace (\n{body}\n)\n\n"
    return text + f"tool {MAIN_PACKAGE}\n"


def _version_tuple(version: str) -> tuple[int, int, int]:
    match = _GO_VERSION.match(version.strip())
    if match is None:
        raise BuildError(f"not a Go version: {version!r}")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def toolchain_suffices(required: str, running: str) -> bool:
    """Whether ``running`` (``go1.26.8``) is at least the go.mod's ``go`` line (``1.25.1``)."""
    return _version_tuple(running) >= _version_tuple(required)


def download(version: str = ESO_VERSION, log: bool = False) -> Module:
    """Fetch the release into the module cache (a no-op when there) and read its go.mod."""
    with tempfile.TemporaryDirectory(prefix="tokensync-eso-mod-") as tmp:
        work = Path(tmp)
        info = json.loads(
            _run_go(["mod", "download", "-json", f"{ESO_MODULE}@{version}"], cwd=work, log=log)
        )
        if info.get("Error"):
            raise BuildError(f"go mod download {ESO_MODULE}@{version}: {info['Error']}")
        go_mod = json.loads(_run_go(["mod", "edit", "-json", info["GoMod"]], cwd=work, log=log))
    return Module(
        version=version,
        dir=Path(info["Dir"]),
        go_version=go_mod.get("Go") or "1.25.0",
        replaces=carried_replaces(go_mod),
    )


def crd_paths(version: str = ESO_VERSION) -> list[Path]:
    """The release's CRD files, read from the module cache (downloading the module if needed).

    ``config/crds/bases`` holds one file per CRD (its ``kustomization.yaml`` is left out);
    ``deploy/crds/bundle.yaml`` in the same module is the same set in one file.
    """
    directory = download(version).dir / CRD_DIR
    paths = sorted(p for p in directory.glob("*.yaml") if p.name != "kustomization.yaml")
    if not paths:
        raise BuildError(f"no CRDs under {directory}")
    return paths


def install_crds(plane: ControlPlane, version: str = ESO_VERSION, timeout_s: int = 60) -> None:
    """Apply the release's CRDs to ``plane`` and wait until the API serves them.

    Server-side apply: the ExternalSecret and SecretStore CRDs are larger than the
    annotation a client-side apply would store.
    """
    files = [arg for path in crd_paths(version) for arg in ("-f", str(path))]
    plane.kubectl("apply", "--server-side", "--force-conflicts", *files)
    plane.kubectl(
        "wait", "--for=condition=Established", "crd", "-l", CRD_LABEL, f"--timeout={timeout_s}s"
    )


def build(version: str = ESO_VERSION, log: bool = True) -> Path:
    """The controller binary, built once per version into the cache."""
    target = binary_path(version)
    with _build_lock(f"external-secrets-{version}"):
        if target.is_file():
            return target
        module = download(version, log=log)
        running = _run_go(["env", "GOVERSION"], cwd=Path(tempfile.gettempdir()), log=False)
        if not toolchain_suffices(module.go_version, running):
            raise BuildError(
                f"{ESO_MODULE}@{version} needs go >= {module.go_version}; "
                f"the go on PATH is {running.strip()}"
            )
        with tempfile.TemporaryDirectory(prefix="tokensync-eso-") as tmp:
            work = Path(tmp)
            (work / "go.mod").write_text(
                wrapper_go_mod(version, module.go_version, module.replaces)
            )
            # The release's own checksums. The checksum database, as the proxy we reach
            # serves it, answers 404 for some of its dependencies' versions (conjur-api-go
            # v0.13.7, vault-cli v0.1.3, ...) although the proxy serves their zips; with
            # the release's go.sum, go verifies each download against it instead.
            release_sum = module.dir / "go.sum"
            if release_sum.is_file():
                (work / "go.sum").write_text(release_sum.read_text())
            _run_go(["mod", "tidy"], cwd=work, log=log)
            out = work / "out"
            out.mkdir()
            build_args = ["build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / BINARY)]
            _run_go([*build_args, MAIN_PACKAGE], cwd=work, log=log)
            _install(out, target.parent, [BINARY])
            # What was built, for the record: the wrapper and the versions it resolved.
            for name in ("go.mod", "go.sum"):
                (target.parent / f"wrapper.{name}").write_text((work / name).read_text())
    return target


def run_args(
    *,
    metrics_addr: str,
    live_addr: str,
    concurrent: int = 1,
    loglevel: str = "info",
    extra: Sequence[str] = (),
) -> list[str]:
    """Arguments for the controller as a process beside the benchmark's control plane.

    Defaults are the Helm chart's (``concurrent: 1``, leader election off, every
    reconciler on, Secrets cached only when labelled as managed). No webhook server starts:
    ``root.go`` configures one but never asks the manager for it. Set the environment's
    ``KUBECONFIG`` to the cluster's kubeconfig.
    """
    return [
        f"--metrics-addr={metrics_addr}",
        f"--live-addr={live_addr}",
        "--enable-leader-election=false",
        f"--concurrent={concurrent}",
        f"--loglevel={loglevel}",
        "--zap-time-encoding=iso8601",
        *extra,
    ]


def credentials_secret(
    name: str, namespace: str, client_id: str, client_secret: str
) -> dict[str, Any]:
    """The client credentials the Webhook generator reads (``spec.secrets``)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            # Required by ESO's webhook provider for store secrets; v0.20.4's generator
            # does not check it, later releases may.
            "labels": {"external-secrets.io/type": "webhook"},
        },
        "stringData": {"client_id": client_id, "client_secret": client_secret},
    }


def webhook_generator(
    name: str,
    namespace: str,
    token_url: str,
    credentials: str,
    *,
    body: str = "grant_type=client_credentials",
    timeout: str = "10s",
) -> dict[str, Any]:
    """A Webhook generator POSTing an OAuth2 client-credentials request.

    ESO has no client-credentials generator; this is the one a user writes: HTTP Basic from
    the credentials Secret (the ``auth`` block offers NTLM only), both parts form-urlencoded
    first as RFC 6749 2.3.1 says and tokensync does (Go's ``urlquery``, then sprig's
    ``b64enc``), a form body, and the whole JSON answer as the Secret's keys
    (``access_token``, ``token_type``, ``expires_in``). Each refresh POSTs once.
    """
    pair = "(urlquery .creds.client_id) (urlquery .creds.client_secret)"
    basic = '{{ printf "%s:%s" ' + pair + " | b64enc }}"
    return {
        "apiVersion": GENERATORS_API,
        "kind": "Webhook",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "method": "POST",
            "url": token_url,
            "headers": {
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
                "Authorization": f"Basic {basic}",
            },
            "body": body,
            "timeout": timeout,
            "secrets": [
                # The whole Secret is loaded under ``creds``; ``key`` is required but unused.
                {"name": "creds", "secretRef": {"name": credentials, "key": "client_id"}}
            ],
            "result": {"jsonPath": "$"},
        },
    }


def external_secret(
    name: str,
    namespace: str,
    generator: str,
    refresh_interval: str,
    *,
    target: str | None = None,
) -> dict[str, Any]:
    """An ExternalSecret writing the generator's output into Secret ``target`` (``name``)."""
    return {
        "apiVersion": EXTERNAL_SECRETS_API,
        "kind": "ExternalSecret",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "refreshInterval": refresh_interval,
            "target": {"name": target or name, "creationPolicy": "Owner"},
            "dataFrom": [
                {
                    "sourceRef": {
                        "generatorRef": {
                            "apiVersion": GENERATORS_API,
                            "kind": "Webhook",
                            "name": generator,
                        }
                    }
                }
            ],
        },
    }


def _build_command(args: argparse.Namespace) -> int:
    cached = binary_path(args.version).is_file()
    begin = time.monotonic()
    path = build(args.version)
    elapsed = time.monotonic() - begin
    size_mib = path.stat().st_size / 2**20
    state = "cached" if cached else f"built in {elapsed:.0f}s"
    print(f"external-secrets {args.version}: {state}, {size_mib:.0f} MiB", file=sys.stderr)
    print(path)
    return 0


def _crds_command(args: argparse.Namespace) -> int:
    for path in crd_paths(args.version):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tokensync_dev.peers.eso")
    parser.add_argument("--version", default=ESO_VERSION, help="release of the Go module")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build (if needed) and print the binary").set_defaults(
        run=_build_command
    )
    commands.add_parser("crds", help="print the release's CRD files").set_defaults(
        run=_crds_command
    )
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
