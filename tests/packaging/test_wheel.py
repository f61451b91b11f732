"""The wheel builds, installs into a fresh venv with the pinned dependencies, and runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(*command: str, cwd: Path = REPO) -> str:
    result = subprocess.run(
        list(command), capture_output=True, text=True, cwd=cwd, check=False, timeout=600
    )
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_wheel_installs_and_runs(tmp_path: Path) -> None:
    # From a copy of what the Dockerfile copies: setuptools builds in the tree it is given
    # and packs all of its build/lib, so a checkout's stale build/ (modules since moved or
    # deleted, e.g. tokensync/devcluster) would otherwise end up in the wheel.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    ignore = shutil.ignore_patterns("*.egg-info", "__pycache__", "*.pyc")
    shutil.copytree(REPO / "operator", source / "operator", ignore=ignore)
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(source))
    wheel = next(dist.glob("tokensync-*.whl"))
    # The development tooling (dev/, package tokensync_dev) is a distribution of its own.
    with zipfile.ZipFile(wheel) as archive:
        members = archive.namelist()
    assert not [m for m in members if "devcluster" in m or "tokensync_dev" in m], members
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    pip = venv / "bin" / "pip"
    run(str(pip), "install", "--quiet", "-c", str(REPO / "constraints.txt"), str(wheel))
    assert run(str(venv / "bin" / "tokensync"), "--version").strip() == "tokensync 0.1.0"
    # The test and benchmark tooling stays out of the product's dependencies.
    installed = {
        line.split("==")[0].split(" @ ")[0].strip().lower()
        for line in run(str(pip), "freeze").splitlines()
    }
    assert not {"pytest", "matplotlib", "mypy"} & installed
    assert {"kopf", "kubernetes", "httpx", "pyjwt", "prometheus_client"} <= installed
    help_text = run(str(venv / "bin" / "tokensync"), "run", "--help")
    assert "--allowed-hosts" in help_text and "--allow-insecure-http" in help_text
    for module in ("tokensync.devcluster", "tokensync_dev"):
        probe = subprocess.run(
            [str(venv / "bin" / "python"), "-c", f"import {module}"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            check=False,
        )
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, probe.stderr
