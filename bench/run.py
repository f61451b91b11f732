"""tokensync at scale on this machine: burst, write ceiling, steady renewal, restart.

``make bench`` (``python bench/run.py --help`` for the sizes). Starts the local control
plane (with an audit log, to see every request the operator makes), a fast token
endpoint and the operator as separate processes, then measures what issue 7 asks for and
writes ``bench/results/results.json``, ``results.md`` and ``*.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "operator"), str(REPO / "dev"), str(REPO / "bench")]

from kubeclient import OPERATOR_USER, BenchApi, audit_args, metrics, read_audit  # noqa: E402

from tokensync_dev.devcluster.cluster import ControlPlane, die_with_parent, free_port, start  # noqa: E402


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def process_cpu() -> dict[str, float]:
    """CPU seconds so far of each process on the machine, summed by command name."""
    usage: dict[str, float] = defaultdict(float)
    ticks = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        name = Path(cmdline[0].decode(errors="replace")).name if cmdline[0] else "?"
        if name.startswith("python") and len(cmdline) > 1:
            script = b" ".join(cmdline[1:4]).decode(errors="replace")
            name = (
                "operator"
                if "tokensync run" in script
                else (
                    "token-endpoint"
                    if "fake_endpoint" in script
                    else "bench"
                    if "run.py" in script
                    else name
                )
            )
        usage[name] += (int(fields[11]) + int(fields[12])) / ticks
    return usage


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class Observer:
    """What the watches saw: when each target Secret changed, and each status."""

    def __init__(self) -> None:
        self.secret_changes: dict[str, list[tuple[float, str, float | None]]] = defaultdict(list)
        self.renewal_times: dict[str, list[float]] = defaultdict(list)
        self.ready_at: dict[str, float] = {}

    def on_secret(self, at: float, kind: str, obj: dict[str, Any]) -> None:
        if kind == "DELETED":
            return
        meta = obj["metadata"]
        annotations = meta.get("annotations") or {}
        digest = annotations.get("tokensync.dev/token-digest", "")
        key = f"{meta['namespace']}/{meta['name']}"
        changes = self.secret_changes[key]
        if not changes or changes[-1][1] != digest:
            changes.append((at, digest, parse_time(annotations.get("tokensync.dev/expires-at"))))

    def on_token(self, at: float, kind: str, obj: dict[str, Any]) -> None:
        if kind == "DELETED":
            return
        meta = obj["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        status = obj.get("status") or {}
        renewal = parse_time(status.get("renewalTime"))
        times = self.renewal_times[key]
        if renewal is not None and (not times or times[-1] != renewal):
            times.append(renewal)
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        if ready and key not in self.ready_at:
            self.ready_at[key] = at


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="tokensync-bench-"))
        self.results: dict[str, Any] = {}
        self.series: dict[str, Any] = {}
        self.operator: subprocess.Popen[bytes] | None = None
        self.fake: subprocess.Popen[bytes] | None = None

    # Processes
    def start_cluster(self) -> ControlPlane:
        audit, self.audit_log = audit_args(self.workdir, max_size_mb=2000)
        plane = start(
            self.workdir / "cluster",
            crd_dir=REPO / "crds",
            extra_apiserver_args=audit,
        )
        plane.kubectl("apply", "-k", str(REPO / "deploy" / "rbac"))
        self.operator_kubeconfig = plane.service_account_kubeconfig(
            "tokensync-system", "tokensync", self.workdir / "operator.kubeconfig"
        )
        return plane

    def start_fake(self) -> str:
        port = free_port()
        self.fake = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "bench" / "fake_endpoint.py"),
                f"--port={port}",
                f"--expires-in={self.args.expires_in}",
                f"--latency={self.args.latency}",
            ],
            preexec_fn=die_with_parent,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                httpx.get(url + "/stats", timeout=1)
                return url
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the fake token endpoint did not start")

    def start_operator(self, host: str) -> None:
        self.operator_log = (self.workdir / "operator.log").open("ab")
        self.operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tokensync",
                "run",
                "--allowed-hosts",
                host,
                "--allow-insecure-http",
                "--metrics-port",
                "0",
                "--health-port",
                "0",
                "--workers",
                str(self.args.workers),
            ],
            env={
                **os.environ,
                "KUBECONFIG": str(self.operator_kubeconfig),
                "PYTHONPATH": str(REPO / "operator"),
            },
            stdout=self.operator_log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )

    def operator_usage(self) -> tuple[float, float]:
        """(CPU seconds, peak RSS MiB) of the running operator."""
        assert self.operator is not None
        pid = self.operator.pid
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        status = Path(f"/proc/{pid}/status").read_text()
        hwm = next(line for line in status.splitlines() if line.startswith("VmHWM"))
        return cpu, int(hwm.split()[1]) / 1024

    # Helpers
    async def scrape(self, api: BenchApi) -> dict[tuple[tuple[str, str], ...], float]:
        return metrics(await api.text("/metrics"), "apiserver_request_total")

    @staticmethod
    def delta(
        before: dict[tuple[tuple[str, str], ...], float],
        after: dict[tuple[tuple[str, str], ...], float],
    ) -> dict[str, float]:
        counted: dict[str, float] = defaultdict(float)
        for labels, value in after.items():
            change = value - before.get(labels, 0.0)
            if change <= 0:
                continue
            label = dict(labels)
            if label.get("resource") not in ("secrets", "providertokens", "events"):
                continue
            name = f"{label['verb']} {label['resource']}"
            if label.get("subresource"):
                name += f"/{label['subresource']}"
            counted[name] += change
        return dict(counted)

    def token_manifest(self, namespace: str, index: int, url: str) -> dict[str, Any]:
        return {
            "apiVersion": "tokensync.dev/v1alpha1",
            "kind": "ProviderToken",
            "metadata": {"name": f"t{index}", "namespace": namespace},
            "spec": {
                "provider": {
                    "oauth2": {
                        "tokenUrl": f"{url}/token",
                        "extraParams": {"n": f"{namespace}-{index}"},
                    }
                },
                "credentialsRef": {"name": "creds"},
                "target": {"name": f"t{index}-token"},
            },
        }

    async def namespace(self, api: BenchApi, name: str) -> None:
        await api.call("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
        await api.call(
            "POST",
            f"/api/v1/namespaces/{name}/secrets",
            {
                "metadata": {"name": "creds", "labels": {"tokensync.dev/role": "credentials"}},
                "stringData": {"clientId": "bench", "clientSecret": "bench-secret"},
            },
        )

    async def remove_namespace(self, api: BenchApi, namespace: str) -> None:
        """Delete an earlier burst and wait until it is gone (its tokens renew no more)."""
        await api.call("DELETE", f"/api/v1/namespaces/{namespace}")
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                await api.call("GET", f"/api/v1/namespaces/{namespace}")
            except RuntimeError:
                return
            await asyncio.sleep(1)
        raise RuntimeError(f"namespace {namespace} was not deleted within 300 s")

    async def settle(self, api: BenchApi) -> None:
        """Wait until the operator's background Events of the burst are all posted."""
        previous = -1.0
        while True:
            posted = sum(
                v
                for labels, v in (await self.scrape(api)).items()
                if dict(labels).get("resource") == "events" and dict(labels).get("verb") == "POST"
            )
            if posted == previous:
                return
            previous = posted
            await asyncio.sleep(3)

    # Phases
    async def ceiling(self, api: BenchApi, writes: int) -> None:
        await api.call("POST", "/api/v1/namespaces", {"metadata": {"name": "ceiling"}})
        count = writes // 2
        names = [f"s{i}" for i in range(count)]

        async def create(name: str) -> None:
            await api.call(
                "POST",
                "/api/v1/namespaces/ceiling/secrets",
                {"metadata": {"name": name}, "stringData": {"token": "x" * 64}},
            )

        async def patch(name: str) -> None:
            await api.call(
                "PATCH",
                f"/api/v1/namespaces/ceiling/secrets/{name}",
                {"metadata": {"annotations": {"a": "b"}}, "stringData": {"token": "y" * 64}},
            )

        began = time.time()
        await api.bulk(names, create, concurrency=64)
        await api.bulk(names, patch, concurrency=64)
        elapsed = time.time() - began
        self.results["ceiling_writes"] = count * 2
        self.results["ceiling_writes_per_s"] = round(count * 2 / elapsed, 1)
        await api.call("DELETE", "/api/v1/namespaces/ceiling")

    async def same_writes_ceiling(self, api: BenchApi, size: int, url: str) -> None:
        """The bound for any operator: while ``size`` ProviderTokens are created as in the
        burst, a tight client that already knows what to write makes each one's two
        writes (its Secret, its status) as soon as its create returns. Nothing is
        minted, nothing is watched: only the API server's cost of these writes."""
        namespace = "same-writes"
        await self.namespace(api, namespace)
        base = f"/apis/tokensync.dev/v1alpha1/namespaces/{namespace}/providertokens"
        created: asyncio.Queue[int] = asyncio.Queue()

        async def create(index: int) -> None:
            await api.call("POST", base, self.token_manifest(namespace, index, url))
            created.put_nowait(index)

        async def write() -> None:
            while True:
                index = await created.get()
                await api.call(
                    "POST",
                    f"/api/v1/namespaces/{namespace}/secrets",
                    {
                        "metadata": {
                            "name": f"t{index}-token",
                            "labels": {"tokensync.dev/role": "token"},
                        },
                        "stringData": {"token": "x" * 64},
                    },
                )
                moment = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                await api.call(
                    "PATCH",
                    f"{base}/t{index}/status",
                    {
                        "status": {
                            "provider": "oauth2",
                            "observedGeneration": 1,
                            "expiresAt": moment,
                            "renewalTime": moment,
                            "lastMintTime": moment,
                            "failedAttempts": 0,
                            "conditions": [
                                {
                                    "type": "Ready",
                                    "status": "True",
                                    "reason": "Minted",
                                    "message": f"token valid until {moment}",
                                    "lastTransitionTime": moment,
                                    "observedGeneration": 1,
                                }
                            ],
                        }
                    },
                )
                created.task_done()

        writers = [asyncio.create_task(write()) for _ in range(48)]
        began = time.time()
        await api.bulk(list(range(size)), create, concurrency=48)
        await created.join()
        elapsed = time.time() - began
        for writer in writers:
            writer.cancel()
        self.results[f"same_writes_{size}_converge_s"] = round(elapsed, 2)
        self.results["same_writes_per_s"] = round(2 * size / elapsed, 1)
        await self.remove_namespace(api, namespace)

    async def burst(self, api: BenchApi, observer: Observer, size: int, url: str) -> str:
        namespace = f"burst-{size}"
        await self.namespace(api, namespace)
        watchers = [
            asyncio.create_task(
                api.watch(
                    f"/api/v1/namespaces/{namespace}/secrets",
                    observer.on_secret,
                    labelSelector="tokensync.dev/role=token",
                )
            ),
            asyncio.create_task(
                api.watch(
                    f"/apis/tokensync.dev/v1alpha1/namespaces/{namespace}/providertokens",
                    observer.on_token,
                )
            ),
        ]
        self.watchers.extend(watchers)
        await asyncio.sleep(0.5)  # let both watches open before the first object exists
        before = await self.scrape(api)

        async def create(index: int) -> None:
            await api.call(
                "POST",
                f"/apis/tokensync.dev/v1alpha1/namespaces/{namespace}/providertokens",
                self.token_manifest(namespace, index, url),
            )

        cpu_before, _ = self.operator_usage()
        system_before = process_cpu()
        began = time.time()
        created = await api.bulk(list(range(size)), create, concurrency=48)
        self.results[f"burst_{size}_create_s"] = round(time.time() - began, 2)
        keys = [f"{namespace}/t{i}" for i in range(size)]
        deadline = began + self.args.burst_timeout
        while time.time() < deadline:
            secrets = sum(
                1 for i in range(size) if observer.secret_changes.get(f"{namespace}/t{i}-token")
            )
            ready = sum(1 for key in keys if key in observer.ready_at)
            if secrets == size and ready == size:
                break
            await asyncio.sleep(0.1)
        converged = time.time() - began
        cpu_after, peak_rss = self.operator_usage()
        self.results[f"burst_{size}_operator_peak_rss_mib"] = round(peak_rss, 1)
        system_after = process_cpu()
        self.results[f"burst_{size}_cpu_share"] = {
            name: round((system_after.get(name, 0) - cpu) / converged, 2)
            for name, cpu in system_before.items()
        }
        self.results[f"burst_{size}_operator_cpu_ms_per_token"] = round(
            (cpu_after - cpu_before) / size * 1000, 2
        )
        after = await self.scrape(api)
        latencies = [
            observer.secret_changes[f"{namespace}/t{i}-token"][0][0] - created[i]
            for i in range(size)
            if observer.secret_changes.get(f"{namespace}/t{i}-token")
        ]
        writes = self.delta(before, after)
        operator_writes = sum(
            v
            for k, v in writes.items()
            if k in ("POST secrets", "PATCH secrets", "PATCH providertokens/status", "POST events")
        )
        prefix = f"burst_{size}"
        self.results.update(
            {
                f"{prefix}_converge_s": round(converged, 2),
                f"{prefix}_converged": len(latencies) == size,
                f"{prefix}_p50_s": round(percentile(latencies, 0.5), 3),
                f"{prefix}_p99_s": round(percentile(latencies, 0.99), 3),
                f"{prefix}_max_s": round(max(latencies), 3) if latencies else None,
                f"{prefix}_operator_writes": operator_writes,
                f"{prefix}_api_requests": writes,
                f"{prefix}_operator_writes_per_s": round(operator_writes / converged, 1),
            }
        )
        arrivals = sorted(
            observer.secret_changes[f"{namespace}/t{i}-token"][0][0] - began
            for i in range(size)
            if observer.secret_changes.get(f"{namespace}/t{i}-token")
        )
        self.series[f"{prefix}_arrivals"] = arrivals
        return namespace

    async def steady(self, api: BenchApi, observer: Observer, namespace: str, url: str) -> None:
        size = self.args.steady
        keys = [f"{namespace}/t{i}" for i in range(size)]
        rounds = self.args.rounds
        await self.settle(api)
        async with httpx.AsyncClient() as client:
            await client.post(url + "/reset")
        before = await self.scrape(api)
        cpu_before, _ = self.operator_usage()
        began = time.time()
        deadline = began + self.args.expires_in * (rounds + 1) + 120

        def renewed_enough() -> bool:
            return all(len(observer.secret_changes[f"{k}-token"]) >= rounds + 1 for k in keys)

        while time.time() < deadline and not renewed_enough():
            await asyncio.sleep(1)
        ended = time.time()
        after = await self.scrape(api)
        cpu_after, peak_rss = self.operator_usage()
        async with httpx.AsyncClient() as client:
            log = (await client.get(url + "/stats")).json()
        # Lateness: each mint against the renewalTime the status announced before it.
        lateness: list[float] = []
        mints: dict[str, list[float]] = defaultdict(list)
        for at, index in log:
            mints[index].append(at)
        for key in keys:
            ns, name = key.split("/")
            announced = observer.renewal_times[key]
            for at in mints.get(f"{ns}-{name[1:]}", []):
                due = max((r for r in announced if r <= at + 5), default=None)
                if due is not None:
                    lateness.append(at - due)
        renewals = len(lateness)
        # Seconds any Secret held an expired token: gap between an expiry and the next write.
        expired = 0.0
        for key in keys:
            changes = observer.secret_changes[f"{key}-token"]
            for previous, following in itertools.pairwise(changes):
                if previous[2] is not None and following[0] > previous[2]:
                    expired += following[0] - previous[2]
            if changes and changes[-1][2] is not None and ended > changes[-1][2]:
                expired += ended - changes[-1][2]
        requests = self.delta(before, after)
        writes = sum(v for k, v in requests.items() if not k.startswith(("WATCH", "LIST", "GET")))
        audit = read_audit(self.audit_log)
        unfiltered = sum(
            1
            for e in audit
            if e.get("user", {}).get("username") == OPERATOR_USER
            and (e.get("objectRef") or {}).get("resource") == "secrets"
            and e.get("verb") in ("list", "watch")
            and "labelSelector=" not in e.get("requestURI", "")
        )
        by_operator: dict[str, int] = defaultdict(int)
        for e in audit:
            if (
                e.get("user", {}).get("username") != OPERATOR_USER
                or e.get("stage") != "ResponseComplete"
            ):
                continue
            received = parse_time(e.get("requestReceivedTimestamp")) or 0
            if not began <= received <= ended:
                continue
            ref = e.get("objectRef") or {}
            name = f"{e['verb']} {ref.get('resource', '')}" + (
                f"/{ref['subresource']}" if ref.get("subresource") else ""
            )
            by_operator[name] += 1
        self.results.update(
            {
                "steady_tokens": size,
                "steady_window_s": round(ended - began, 1),
                "renewals": renewals,
                "renew_lateness_p50_s": round(percentile(lateness, 0.5), 3),
                "renew_lateness_p99_s": round(percentile(lateness, 0.99), 3),
                "renew_lateness_max_s": round(max(lateness), 3) if lateness else None,
                "expired_token_seconds": round(expired, 3),
                "api_requests_in_window": requests,
                "operator_requests_in_window_audit": dict(by_operator),
                "writes_per_renewal": round(writes / renewals, 3) if renewals else None,
                "unfiltered_secret_list_watch_calls": unfiltered,
                "cpu_s_per_1000_renewals": round((cpu_after - cpu_before) / renewals * 1000, 2)
                if renewals
                else None,
                "peak_rss_mib": round(peak_rss, 1),
            }
        )
        self.series["lateness"] = lateness

    async def restart(self, api: BenchApi, observer: Observer, namespace: str, url: str) -> None:
        assert self.operator is not None
        self.operator.kill()
        self.operator.wait()
        async with httpx.AsyncClient() as client:
            await client.post(url + "/reset")
        killed = time.time()
        self.start_operator(url.removeprefix("http://"))
        probe = self.token_manifest(namespace, 999999, url)
        probe["metadata"]["name"] = "probe"
        probe["spec"]["target"]["name"] = "probe-token"
        await api.call(
            "POST", f"/apis/tokensync.dev/v1alpha1/namespaces/{namespace}/providertokens", probe
        )
        while f"{namespace}/probe-token" not in observer.secret_changes:
            await asyncio.sleep(0.05)
        watching = time.time() - killed
        window_end = killed + self.args.restart_window
        while time.time() < window_end:
            await asyncio.sleep(0.5)
        async with httpx.AsyncClient() as client:
            log = (await client.get(url + "/stats")).json()
        premature = 0
        for at, index in log:
            if index.endswith("-999999"):
                continue
            ns, _, number = index.rpartition("-")
            announced = observer.renewal_times.get(f"{ns}/t{number}", [])
            due = max((r for r in announced if r <= at + 5), default=None)
            if due is None or at < due - 1:
                premature += 1
        self.results.update(
            {
                "restart_watching_s": round(watching, 2),
                "restart_mints": premature,
                "restart_window_s": self.args.restart_window,
                "restart_provider_requests": len(log) - 1,
            }
        )

    async def run(self) -> None:
        plane = self.start_cluster()
        url = self.start_fake()
        api = BenchApi(plane)
        self.watchers: list[asyncio.Task[None]] = []
        observer = Observer()
        try:
            await self.ceiling(api, writes=2 * max(self.args.sizes))
            await self.same_writes_ceiling(api, max(self.args.sizes), url)
            print(
                "ceilings:",
                json.dumps(
                    {k: v for k, v in self.results.items() if k.startswith(("ceiling", "same"))}
                ),
                flush=True,
            )
            self.start_operator(url.removeprefix("http://"))
            namespace = ""
            for size in self.args.sizes:
                if namespace:
                    await self.remove_namespace(api, namespace)
                namespace = await self.burst(api, observer, size, url)
                burst = {k: v for k, v in self.results.items() if k.startswith(f"burst_{size}")}
                print(
                    f"burst {size}: {json.dumps(burst)}",
                    flush=True,
                )
            if self.args.steady:
                await self.steady(api, observer, namespace, url)
                print(
                    "steady:",
                    json.dumps(
                        {
                            k: v
                            for k, v in self.results.items()
                            if k.startswith(
                                ("renew", "expired", "writes", "peak", "cpu", "unfiltered")
                            )
                        }
                    ),
                    flush=True,
                )
                await self.restart(api, observer, namespace, url)
        finally:
            for task in self.watchers:
                task.cancel()
            await api.close()
            for process in (self.operator, self.fake):
                if process and process.poll() is None:
                    process.kill()
            plane.stop()
        largest = max(self.args.sizes)
        self.results["converge_fraction_of_ceiling"] = round(
            self.results[f"burst_{largest}_operator_writes_per_s"]
            / self.results["ceiling_writes_per_s"],
            3,
        )
        # What a perfect operator could reach on this machine (docs/decisions/0004).
        self.results["same_writes_fraction_of_ceiling"] = round(
            self.results["same_writes_per_s"] / self.results["ceiling_writes_per_s"], 3
        )
        self.results["converge_fraction_of_same_writes"] = round(
            self.results[f"burst_{largest}_operator_writes_per_s"]
            / self.results["same_writes_per_s"],
            3,
        )
        self.results["machine"] = {
            "cores": os.cpu_count(),
            "memory_gib": round(
                os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
            ),
            "python": platform.python_version(),
        }
        self.results["date"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.results["parameters"] = vars(self.args) | {"sizes": self.args.sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,5000", help="burst sizes, comma-separated")
    parser.add_argument("--steady", type=int, default=5000, help="0 skips steady and restart")
    parser.add_argument("--expires-in", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--latency", type=float, default=0.0, help="token endpoint latency (s)")
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--burst-timeout", type=float, default=600)
    parser.add_argument("--restart-window", type=float, default=30)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.steady and args.steady != max(args.sizes):
        parser.error("--steady must equal the largest burst size (the steady set is that burst)")
    bench = Bench(args)
    asyncio.run(bench.run())
    from report import write_report

    write_report(bench.results, bench.series, args.out)
    print(f"results in {args.out}")


if __name__ == "__main__":
    main()
