"""The Argo CD health check (Lua) run by a real Lua interpreter on ProviderToken objects."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "deploy" / "helm" / "tokensync" / "files" / "argocd-health.lua"
RUNNER = """
local cjson = require("cjson")
obj = cjson.decode(io.read("*a"))
local check = assert(loadfile(arg[1]))
local hs = check()
io.write(hs.status, "\\n", hs.message)
"""


def health(obj: dict[str, Any]) -> tuple[str, str]:
    lua = shutil.which("lua5.4")
    assert lua, "lua5.4 is missing: `make tools` installs it (with lua-cjson)"
    result = subprocess.run(
        [lua, "-e", RUNNER.replace("arg[1]", json.dumps(str(CHECK)))],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    status, _, message = result.stdout.partition("\n")
    return status, message


def token(generation: int, status: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": "t", "generation": generation}}
    if status is not None:
        body["status"] = status
    return body


def ready(value: str, reason: str, observed: int = 1) -> dict[str, Any]:
    return {
        "observedGeneration": observed,
        "conditions": [{"type": "Ready", "status": value, "reason": reason, "message": "m"}],
    }


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (token(1, None), "Progressing"),
        (token(1, ready("True", "Minted")), "Healthy"),
        (token(1, ready("False", "InvalidCredentials")), "Degraded"),
        (token(2, ready("True", "Minted", observed=1)), "Progressing"),
    ],
    ids=["no status yet", "ready", "failing", "new spec not yet minted"],
)
def test_health_follows_ready(obj: dict[str, Any], expected: str) -> None:
    status, message = health(obj)
    assert status == expected
    if expected in ("Healthy", "Degraded"):
        assert message.startswith(obj["status"]["conditions"][0]["reason"])
