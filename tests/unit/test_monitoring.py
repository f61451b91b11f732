"""The shipped alert rules, fired on synthetic series by promtool (Debian's prometheus)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "helm" / "tokensync" / "files" / "alerts.yaml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: `make tools` (or .ci/run) installs Debian's prometheus"
    return subprocess.run([tool, *args], capture_output=True, text=True, cwd=REPO, check=False)


def test_rules_are_valid() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 rules found" in result.stdout


def test_each_alert_fires_on_synthetic_series_and_only_then() -> None:
    result = promtool("test", "rules", "tests/alerts/alerts_test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


DASHBOARD = REPO / "deploy" / "helm" / "tokensync" / "files" / "dashboard.json"


def test_dashboard_queries_parse_and_use_only_exported_metrics(tmp_path: Path) -> None:
    import json
    import re

    from prometheus_client import REGISTRY

    from tokensync import metrics  # noqa: F401 - registers the metrics

    exported = {
        sample_name
        for family in REGISTRY.collect()
        for sample_name in (family.name, f"{family.name}_total", f"{family.name}_bucket")
    }
    panels = json.loads(DASHBOARD.read_text())["panels"]
    expressions = [t["expr"].replace("$namespace", ".*") for p in panels for t in p["targets"]]
    assert len(expressions) >= 10
    for expression in expressions:
        for name in re.findall(r"\btokensync_[a-z_]+", expression):
            assert name in exported, f"{name} is not a metric tokensync exports"
    # promtool parses each query as a recording rule: a syntax error fails the check.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(expressions)
                ],
            }
        ]
    }
    rule_file = tmp_path / "dashboard-rules.json"
    rule_file.write_text(json.dumps(rules))
    result = promtool("check", "rules", str(rule_file))
    assert result.returncode == 0, result.stdout + result.stderr
