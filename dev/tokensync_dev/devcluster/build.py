"""Build the control-plane binaries from the Go module proxy, cached by version.

Kubernetes publishes ``k8s.io/kubernetes`` as a Go module whose go.mod replaces every
staging module (``k8s.io/api``, ``k8s.io/apiserver``, ...) with a local path. Replace
directives of a dependency are ignored by Go, so a wrapper module must replace each of
them with the published ``v0.X.Y`` twin. The list is read from the downloaded go.mod, so
a new release that adds or drops a staging module needs no change here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tokensync_dev.devcluster.versions import (
    ALL_BINARIES,
    ETCD_BINARY,
    ETCD_VERSION,
    HELM_VERSION,
    KUBE_BINARIES,
    KUBERNETES_VERSION,
    staging_version,
)

_REPLACE_BLOCK = re.compile(r"^replace\s*\((?P<body>.*?)^\)", re.MULTILINE | re.DOTALL)
_REPLACE_LINE = re.compile(r"^\s*(?P<module>\S+)\s*=>\s*(?P<target>\./staging/\S+)\s*$")


class BuildError(RuntimeError):
    """A binary could not be built; the message carries the failing command's output."""


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of the four binaries the control plane needs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path

    @classmethod
    def from_mapping(cls, paths: Mapping[str, Path]) -> Binaries:
        return cls(
            etcd=paths["etcd"],
            kube_apiserver=paths["kube-apiserver"],
            kube_controller_manager=paths["kube-controller-manager"],
            kubectl=paths["kubectl"],
        )


def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """The modules that k8s.io/kubernetes's go.mod replaces with ./staging/ paths."""
    modules: list[str] = []
    for block in _REPLACE_BLOCK.finditer(kubernetes_go_mod):
        for line in block.group("body").splitlines():
            match = _REPLACE_LINE.match(line)
            if match:
                modules.append(match.group("module"))
    for line in kubernetes_go_mod.splitlines():
        single = re.match(r"^replace\s+(\S+)\s*=>\s*\./staging/\S+\s*$", line)
        if single:
            modules.append(single.group(1))
    return modules


def kube_wrapper_go_mod(kubernetes_version: str, modules: list[str]) -> str:
    """go.mod of the wrapper module that builds the Kubernetes commands as Go tools."""
    twin = staging_version(kubernetes_version)
    replaces = "\n".join(f"\t{module} => {module} {twin}" for module in sorted(modules))
    tools = "\n".join(f"\tk8s.io/kubernetes/cmd/{name}" for name in KUBE_BINARIES)
    return (
        "module tokensync.local/kube\n\n"
        "go 1.25.0\n\n"
        f"require k8s.io/kubernetes {kubernetes_version}\n\n"
        f"replace (\n{replaces}\n)\n\n"
        f"tool (\n{tools}\n)\n"
    )


def etcd_wrapper_files(etcd_version: str) -> dict[str, str]:
    """A one-line main around etcd's own entry point (go.etcd.io/etcd/server/v3/etcdmain)."""
    return {
        "go.mod": (
            "module tokensync.local/etcd\n\n"
            "go 1.25.0\n\n"
            f"require go.etcd.io/etcd/server/v3 {etcd_version}\n"
        ),
        "main.go": (
            "package main\n\n"
            'import (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\n'
            "func main() { etcdmain.Main(os.Args) }\n"
        ),
    }


def cache_root() -> Path:
    explicit = os.environ.get("TOKENSYNC_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tokensync"


def kube_bin_dir(kubernetes_version: str = KUBERNETES_VERSION) -> Path:
    return cache_root() / "bin" / kubernetes_version


def etcd_bin_dir(etcd_version: str = ETCD_VERSION) -> Path:
    return cache_root() / "bin" / f"etcd-{etcd_version}"


def _cached_path(name: str) -> Path:
    directory = etcd_bin_dir() if name == ETCD_BINARY else kube_bin_dir()
    return directory / name


def locate(env: Mapping[str, str] | None = None) -> dict[str, Path | None]:
    """Where each binary already is: KUBEBUILDER_ASSETS first, then our cache."""
    env = os.environ if env is None else env
    assets = env.get("KUBEBUILDER_ASSETS")
    found: dict[str, Path | None] = {}
    for name in ALL_BINARIES:
        candidates = [Path(assets) / name] if assets else []
        candidates.append(_cached_path(name))
        found[name] = next((p for p in candidates if p.is_file() and os.access(p, os.X_OK)), None)
    return found


def ensure_binaries(log: bool = True) -> Binaries:
    """Return the four binaries, building into the cache only those not found."""
    found = locate()
    missing = [name for name, path in found.items() if path is None]
    if any(name in KUBE_BINARIES for name in missing):
        _build_kube([n for n in KUBE_BINARIES if n in missing], log=log)
    if ETCD_BINARY in missing:
        _build_etcd(log=log)
    resolved = locate()
    absent = [name for name, path in resolved.items() if path is None]
    if absent:
        raise BuildError(f"binaries still missing after the build: {', '.join(absent)}")
    return Binaries.from_mapping({k: v for k, v in resolved.items() if v is not None})


@contextlib.contextmanager
def _build_lock(name: str) -> Iterator[None]:
    """Serialise concurrent builds (two test runs, `make run` and the tests)."""
    lock_dir = cache_root() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / f"{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # Static binaries: no C toolchain needed, and they run on any Linux of the same arch.
    env.setdefault("CGO_ENABLED", "0")
    return env


def _run_go(args: list[str], cwd: Path, log: bool) -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError("the Go toolchain (go) is not on PATH; it builds the control plane")
    if log:
        print(f"+ go {' '.join(args)}", file=sys.stderr, flush=True)
    result = subprocess.run(
        [go, *args], cwd=cwd, env=_go_env(), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise BuildError(f"go {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout


def _version_ldflags(kubernetes_version: str) -> str:
    major, minor = kubernetes_version.removeprefix("v").split(".")[:2]
    package = "k8s.io/component-base/version"
    return " ".join(
        [
            "-s -w",
            f"-X {package}.gitVersion={kubernetes_version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        ]
    )


def _install(built: Path, target_dir: Path, names: list[str]) -> None:
    target_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        # A rename on one file system is atomic: a reader never sees half a binary.
        staged = target_dir / f".{name}.partial"
        shutil.copy2(built / name, staged)
        staged.replace(target_dir / name)


def _build_kube(names: list[str], log: bool) -> None:
    with _build_lock("kube"):
        names = [n for n in names if not (kube_bin_dir() / n).is_file()]
        if not names:
            return
        with tempfile.TemporaryDirectory(prefix="tokensync-kube-") as tmp:
            work = Path(tmp)
            info = json.loads(
                _run_go(
                    ["mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"],
                    cwd=work,
                    log=log,
                )
            )
            modules = staging_modules(Path(info["GoMod"]).read_text())
            if not modules:
                raise BuildError("no staging modules found in k8s.io/kubernetes's go.mod")
            (work / "go.mod").write_text(kube_wrapper_go_mod(KUBERNETES_VERSION, modules))
            _run_go(["mod", "tidy"], cwd=work, log=log)
            packages = [f"k8s.io/kubernetes/cmd/{n}" for n in names]
            out = work / "out"
            out.mkdir()
            ldflags = _version_ldflags(KUBERNETES_VERSION)
            build_args = ["build", "-trimpath", "-ldflags", ldflags, "-o", f"{out}/", *packages]
            _run_go(build_args, cwd=work, log=log)
            _install(out, kube_bin_dir(), names)


def _build_etcd(log: bool) -> None:
    with _build_lock("etcd"):
        if (etcd_bin_dir() / ETCD_BINARY).is_file():
            return
        with tempfile.TemporaryDirectory(prefix="tokensync-etcd-") as tmp:
            work = Path(tmp)
            for name, text in etcd_wrapper_files(ETCD_VERSION).items():
                (work / name).write_text(text)
            _run_go(["mod", "tidy"], cwd=work, log=log)
            out = work / "out"
            out.mkdir()
            _run_go(
                ["build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / ETCD_BINARY), "."],
                cwd=work,
                log=log,
            )
            _install(out, etcd_bin_dir(), [ETCD_BINARY])


def helm_binary() -> Path:
    """helm, built once per version from the Go module proxy into the cache."""
    target = cache_root() / "bin" / f"helm-{HELM_VERSION}" / "helm"
    with _build_lock("helm"):
        if target.is_file():
            return target
        with tempfile.TemporaryDirectory(prefix="tokensync-helm-") as tmp:
            work = Path(tmp)
            (work / "go.mod").write_text(
                "module tokensync.local/helm\n\ngo 1.25.0\n\n"
                f"require helm.sh/helm/v3 {HELM_VERSION}\n\n"
                "tool helm.sh/helm/v3/cmd/helm\n"
            )
            _run_go(["mod", "tidy"], cwd=work, log=True)
            out = work / "out"
            out.mkdir()
            ldflags = f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}"
            _run_go(
                [
                    "build",
                    "-trimpath",
                    "-ldflags",
                    ldflags,
                    "-o",
                    f"{out}/",
                    "helm.sh/helm/v3/cmd/helm",
                ],
                cwd=work,
                log=True,
            )
            _install(out, target.parent, ["helm"])
    return target
