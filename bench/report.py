"""Write the benchmark's JSON, a Markdown table against the bar, and two plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BAR: list[tuple[str, str, str, Any]] = [
    # (key, what, comparison, bar)
    ("burst_1000_p99_s", "p99 creation-to-Secret, 1,000 burst (s)", "<", 2.0),
    ("converge_fraction_of_ceiling", "5,000 burst write rate / API write ceiling", ">=", 0.5),
    ("renew_lateness_p99_s", "renewal lateness p99 (s)", "<", 1.0),
    ("renew_lateness_max_s", "renewal lateness max (s)", "<", 5.0),
    ("expired_token_seconds", "seconds any Secret held an expired token", "==", 0),
    ("writes_per_renewal", "API writes per renewal", "==", 2),
    ("unfiltered_secret_list_watch_calls", "LIST/WATCH on Secrets without selector", "==", 0),
    ("peak_rss_mib", "operator peak RSS at 5,000 (MiB)", "<", 250),
    ("restart_mints", "mints for valid tokens after a restart", "==", 0),
]
INFO = [
    "burst_1000_converge_s",
    "burst_1000_p50_s",
    "burst_1000_max_s",
    "burst_5000_converge_s",
    "burst_5000_p50_s",
    "burst_5000_p99_s",
    "burst_5000_max_s",
    "burst_5000_operator_writes_per_s",
    "ceiling_writes_per_s",
    "same_writes_5000_converge_s",
    "same_writes_per_s",
    "same_writes_fraction_of_ceiling",
    "converge_fraction_of_same_writes",
    "renewals",
    "renew_lateness_p50_s",
    "cpu_s_per_1000_renewals",
    "restart_watching_s",
]


def _passes(value: Any, comparison: str, bar: Any) -> bool:
    if value is None:
        return False
    return bool(
        {
            "<": value < bar,
            ">=": value >= bar,
            "==": value == bar,
        }[comparison]
    )


def write_report(results: dict[str, Any], series: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True, default=str))
    lines = [
        f"# tokensync benchmark, {results.get('date')}",
        "",
        f"Machine: {results['machine']['cores']} cores, {results['machine']['memory_gib']} GiB. "
        "Control plane, operator, token endpoint and load generator all on this machine.",
        "",
        "| figure | measured | bar | |",
        "|---|---|---|---|",
    ]
    for key, what, comparison, bar in BAR:
        value = results.get(key)
        mark = "pass" if _passes(value, comparison, bar) else "FAIL"
        lines.append(f"| {what} (`{key}`) | {value} | {comparison} {bar} | {mark} |")
    lines += ["", "| other figure | measured |", "|---|---|"]
    for key in INFO:
        if key in results:
            lines.append(f"| `{key}` | {results[key]} |")
    lines += [
        "",
        "API requests in the steady window (apiserver_request_total, by verb and resource):",
        "",
        "```",
        json.dumps(results.get("api_requests_in_window"), indent=1, sort_keys=True),
        "```",
        "",
        "![renewal lateness](lateness.png) ![convergence](convergence.png)",
        "",
    ]
    (out / "results.md").write_text("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    if series.get("lateness"):
        figure, axis = plt.subplots(figsize=(7, 4))
        axis.hist(series["lateness"], bins=60)
        axis.set_xlabel("renewal lateness against status.renewalTime (s)")
        axis.set_ylabel("renewals")
        axis.set_title(f"{len(series['lateness'])} renewals")
        figure.tight_layout()
        figure.savefig(out / "lateness.png", dpi=100)
        plt.close(figure)
    arrivals = {k: v for k, v in series.items() if k.endswith("_arrivals")}
    if arrivals:
        figure, axis = plt.subplots(figsize=(7, 4))
        for key, times in arrivals.items():
            axis.plot(times, range(1, len(times) + 1), label=key.removesuffix("_arrivals"))
        axis.set_xlabel("seconds since the burst began")
        axis.set_ylabel("target Secrets written")
        axis.legend()
        figure.tight_layout()
        figure.savefig(out / "convergence.png", dpi=100)
        plt.close(figure)
