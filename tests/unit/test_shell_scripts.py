"""Every shell script passes shellcheck (some cannot run here: kind needs a registry)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_scripts_pass_shellcheck() -> None:
    tool = shutil.which("shellcheck")
    assert tool, "shellcheck is missing: `make tools` installs it"
    scripts = [REPO / ".ci" / "run", *sorted((REPO / "hack").rglob("*.sh"))]
    result = subprocess.run([tool, *map(str, scripts)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
