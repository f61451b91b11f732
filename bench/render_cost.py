"""What spec.target.template costs the operator: CPU and memory per render at 5,000 tokens.

    .venv/bin/python bench/render_cost.py [--tokens 5000] [--passes 3] [--out bench/results]

Each ProviderToken gets its own token value every pass (a renewal), so no render can reuse
another's output; the templates are shared the way real ProviderTokens share them (a few
shapes, a handful of registries), so the compile cache is what keeps renders cheap.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import string
import sys
import time
import tracemalloc
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jinja2

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "operator")]

from tokensync.templating import RenderInput, TemplateSpec, check, render  # noqa: E402
from tokensync.templating.analysis import compile_source  # noqa: E402

ALPHABET = string.ascii_letters + string.digits + "-_"
REGISTRIES = [f"registry-{n}.example.com" for n in range(8)]
MINTED = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
COLD_ROUNDS = 21

# The labels and annotations most specs add: times and type, never a secret.
METADATA = {
    "labels": {"example.com/token-type": "{{ tokenType | lower }}"},
    "annotations": {
        "example.com/expires-at": "{{ expiresAt }}",
        "example.com/minted-at": "{{ mintedAt }}",
    },
}


def header() -> dict[str, object]:
    return {"data": {"authorization": "Bearer {{ token }}"}, **METADATA}


def dockerconfigjson(registry: str) -> dict[str, object]:
    # Concatenated, not formatted: the template's own braces would need escaping.
    source = (
        '{{ {"auths": {"' + registry + '": {"username": credentials.username, "password": '
        'token, "auth": (credentials.username ~ ":" ~ token) | b64enc}}} | json }}'
    )
    return {"data": {".dockerconfigjson": source}, "credentialKeys": ["username"], **METADATA}


def json_with_expiry() -> dict[str, object]:
    return {
        "data": {
            "token.json": '{{ {"token": token, "expiresAt": expiresAt, '
            '"expiresAtUnix": expiresAtUnix} | json }}'
        },
        **METADATA,
    }


def basic_auth() -> dict[str, object]:
    return {
        "data": {"username": "{{ credentials.username }}", "password": "{{ token }}"},
        "credentialKeys": ["username"],
        "labels": {"example.com/scope": "{{ scope | replace(' ', '.') }}"},
        "annotations": METADATA["annotations"],
    }


def header_spec() -> TemplateSpec:
    """A source no case uses: warms the process without compiling any case's template."""
    spec = TemplateSpec.parse({"data": {"warm": "warm {{ token }}"}})
    assert spec is not None
    return spec


@dataclass(frozen=True)
class Case:
    kind: str
    spec: TemplateSpec
    token_length: int


def cases(count: int, rng: random.Random) -> list[Case]:
    """ProviderTokens round-robin over the four shapes; token lengths as providers issue."""
    shapes = ["header", "dockerconfigjson", "json-with-expiry", "basic-auth"]
    made: list[Case] = []
    for number in range(count):
        kind = shapes[number % len(shapes)]
        raw = {
            "header": header,
            "dockerconfigjson": lambda: dockerconfigjson(rng.choice(REGISTRIES)),
            "json-with-expiry": json_with_expiry,
            "basic-auth": basic_auth,
        }[kind]()
        spec = TemplateSpec.parse(raw)
        assert spec is not None
        # Opaque API keys (40), OAuth access tokens (~200), JWTs with claims (~1,200).
        made.append(Case(kind, spec, rng.choice([40, 200, 1200])))
    return made


def input_for(case: Case, rng: random.Random, lifetime: timedelta | None) -> RenderInput:
    return RenderInput(
        token="".join(rng.choices(ALPHABET, k=case.token_length)),
        expires_at=MINTED + lifetime if lifetime else None,
        minted_at=MINTED,
        token_type="Bearer",
        scope="read write",
        others={"id_token": "".join(rng.choices(ALPHABET, k=300))},
        credentials={"username": f"robot-{rng.randrange(10_000)}"},
    )


def lifetime(number: int) -> timedelta | None:
    """One ProviderToken in ten holds a token that never expires."""
    return timedelta(hours=1) if number % 10 else None


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(tokens: int, passes: int, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    all_cases = cases(tokens, rng)
    distinct = {
        source
        for case in all_cases
        for section in (case.spec.data, case.spec.labels, case.spec.annotations)
        for source in section.values()
    }

    # Cold: the first render of each shape with nothing compiled, median of COLD_ROUNDS.
    # One throwaway render first: Jinja builds its lexer once per process, not per source.
    firsts = {case.kind: case for case in reversed(all_cases)}
    render(header_spec(), input_for(all_cases[0], rng, timedelta(hours=1)))
    cold_samples: dict[str, list[float]] = {kind: [] for kind in firsts}
    for _ in range(COLD_ROUNDS):
        for kind, case in firsts.items():
            compile_source.cache_clear()
            values = input_for(case, rng, timedelta(hours=1))
            started = time.perf_counter_ns()
            check(case.spec)
            render(case.spec, values)
            cold_samples[kind].append((time.perf_counter_ns() - started) / 1000)
    cold = {kind: statistics.median(samples) for kind, samples in cold_samples.items()}

    # Warm: every ProviderToken renewed `passes` times, fresh token values each time.
    # Inputs are built outside the timed region: the operator has them from the provider.
    inputs = [
        [input_for(case, rng, lifetime(n)) for n, case in enumerate(all_cases)]
        for _ in range(passes)
    ]
    walls: list[float] = []
    output_bytes = 0
    gc.collect()
    cpu_started = time.process_time()
    for batch in inputs:
        for case, values in zip(all_cases, batch, strict=True):
            started = time.perf_counter_ns()
            rendered = render(case.spec, values)
            walls.append((time.perf_counter_ns() - started) / 1000)
            output_bytes += sum(len(v) for v in rendered.data.values())
    cpu = time.process_time() - cpu_started
    renders = len(walls)

    # Memory, on a separate pass (tracemalloc slows everything it watches): what rendering
    # 5,000 adds at its peak, keeping every result as a caller holding Secret bodies would.
    gc.collect()
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    kept = [render(case.spec, values) for case, values in zip(all_cases, inputs[0], strict=True)]
    peak_kept = tracemalloc.get_traced_memory()[1] - baseline
    del kept
    gc.collect()
    tracemalloc.reset_peak()
    baseline = tracemalloc.get_traced_memory()[0]
    for case, values in zip(all_cases, inputs[0], strict=True):
        render(case.spec, values)
    peak_transient = tracemalloc.get_traced_memory()[1] - baseline
    # The compile cache itself: every distinct source compiled from nothing.
    compile_source.cache_clear()
    gc.collect()
    baseline = tracemalloc.get_traced_memory()[0]
    for case in all_cases:
        check(case.spec)
    cache_bytes = tracemalloc.get_traced_memory()[0] - baseline
    tracemalloc.stop()

    return {
        "render_tokens": tokens,
        "render_passes": passes,
        "render_renders": renders,
        "render_seed": seed,
        "render_distinct_sources": len(distinct),
        "render_cpu_us_per_render": round(cpu / renders * 1e6, 2),
        "render_p50_us": round(percentile(walls, 0.50), 2),
        "render_p99_us": round(percentile(walls, 0.99), 2),
        "render_max_us": round(max(walls), 2),
        "render_mean_us": round(statistics.fmean(walls), 2),
        "render_cold_compile_us": round(statistics.fmean(cold.values()), 1),
        "render_cold_compile_max_us": round(max(cold.values()), 1),
        **{f"render_cold_compile_us_{kind}": round(us, 1) for kind, us in cold.items()},
        "render_output_bytes_mean": round(output_bytes / renders, 1),
        "render_peak_extra_kib_keeping_results": round(peak_kept / 1024, 1),
        "render_peak_extra_kib_transient": round(peak_transient / 1024, 1),
        "render_compile_cache_kib": round(cache_bytes / 1024, 1),
        "render_python": platform.python_version(),
        "render_jinja2": jinja2.__version__,
        "machine_cores": os.cpu_count(),
        "machine_platform": platform.platform(),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


ROWS = [
    ("render_cpu_us_per_render", "CPU per render (µs)", "process CPU over the warm loop / renders"),
    ("render_p50_us", "wall per render, p50 (µs)", "one render() call, perf_counter"),
    ("render_p99_us", "wall per render, p99 (µs)", "the same, 99th percentile"),
    ("render_max_us", "wall per render, max (µs)", "the same, slowest (GC pauses land here)"),
    (
        "render_cold_compile_us",
        "first render, cold cache (µs)",
        "check() + render() of one ProviderToken per shape with the cache empty "
        f"(median of {COLD_ROUNDS}); mean over shapes",
    ),
    ("render_cold_compile_max_us", "first render, cold cache, max (µs)", "the slowest shape"),
    (
        "render_peak_extra_kib_keeping_results",
        "peak extra memory, 5,000 renders kept (KiB)",
        "tracemalloc peak over baseline, every Rendered kept",
    ),
    (
        "render_peak_extra_kib_transient",
        "peak extra memory, 5,000 renders dropped (KiB)",
        "tracemalloc peak over baseline, results dropped",
    ),
    (
        "render_compile_cache_kib",
        "compile cache (KiB)",
        "tracemalloc growth compiling every distinct source",
    ),
    ("render_distinct_sources", "distinct template sources", "across all ProviderTokens"),
    ("render_output_bytes_mean", "rendered data per ProviderToken (bytes)", "mean"),
]


def write(results: dict[str, object], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "render.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    lines = [
        f"# spec.target.template render cost, {results['date']}",
        "",
        "`.venv/bin/python bench/render_cost.py` "
        f"(seed {results['render_seed']}). {results['render_tokens']} ProviderTokens, "
        f"{results['render_passes']} passes ({results['render_renders']} renders), "
        f"Python {results['render_python']}, Jinja2 {results['render_jinja2']}, "
        f"{results['machine_cores']} cores ({results['machine_platform']}).",
        "",
        "| figure | measured | how |",
        "|---|---|---|",
        *(f"| {what} (`{key}`) | {results[key]} | {how} |" for key, what, how in ROWS),
        "",
        "A render is one `render()` call: every template of one ProviderToken (one or two "
        "data keys, one label, two annotations). "
        "How measured: four shapes round-robin (an `Authorization: Bearer` header; a "
        "`.dockerconfigjson` over 8 registries; a JSON file with the expiry; basic auth as "
        "two keys), each with a label and two annotations rendered from the times and token "
        "type. Token values are random and distinct per ProviderToken and per pass, 40, 200 "
        "or 1,200 characters; one in ten never expires. The warm loop times `render()` alone "
        "(inputs built beforehand) in one process; other load on the machine was not "
        "controlled, which the p99 and max feel first. CPU is "
        "`time.process_time()` over the whole loop divided by renders. Cold cost is the first "
        "`check()` + `render()` per shape after clearing the compile cache (parse, static "
        "checks, compile). Memory is measured in separate passes under `tracemalloc`, which "
        "counts Python allocations only.",
        "",
        "Cold compile per shape (µs): "
        + ", ".join(
            f"{key.removeprefix('render_cold_compile_us_')} {value}"
            for key, value in results.items()
            if key.startswith("render_cold_compile_us_")
        )
        + ".",
        "",
    ]
    (out / "render.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tokens", type=int, default=5000)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1624)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    results = measure(args.tokens, args.passes, args.seed)
    write(results, args.out)
    print(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
