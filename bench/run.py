"""tokensync at scale on this machine: write ceilings, bursts, steady renewal, restart,
an outage of the token endpoint, external-secrets side by side, and 20,000 tokens.

``make bench`` (``python bench/run.py --help`` for the sizes). Starts the local control
plane (with an audit log, to see every request the operator makes), a fast token
endpoint and the operator as separate processes, then measures what issues 7 and 19 ask
for and writes ``bench/results/results.json``, ``results.md`` and ``*.png``.

Phases, in order: the API server's write ceiling; the same writes as each burst made by
a tight client (1,000, then 5,000); the operator starts (idle RSS); bursts of 1,000 and
5,000 ProviderTokens; two renewal rounds of the 5,000; a restart; an outage of the token
endpoint longer than a token's life; external-secrets and tokensync side by side
(bench/peer_eso.py); 20,000 ProviderTokens and two renewal rounds of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "operator"), str(REPO / "dev"), str(REPO / "bench")]

import ceilings  # noqa: E402
import renewals  # noqa: E402
from kubeclient import OPERATOR_USER, BenchApi, audit_args  # noqa: E402
from measure import (  # noqa: E402
    Observer,
    cpu_seconds,
    memory_mib,
    parse_time,
    percentile,
    process_cpu,
    request_counts,
    request_delta,
    settle,
    stable_rss,
)

from tokensync_dev.devcluster.cluster import ControlPlane, die_with_parent, free_port, start  # noqa: E402

# bench/keyless_cost.py takes these two from here.
__all__ = ["parse_time", "percentile"]


def renew_wait(lifetime: float) -> float:
    """Roughly when the operator renews a token of ``lifetime`` after its mint (a third
    left, at least min(90 s, half)): for the duration estimate only."""
    return lifetime - max(lifetime / 3, min(90, lifetime / 2))


def estimate_s(args: argparse.Namespace) -> dict[str, float]:
    """Seconds each phase should take on the 2-core machine of the committed results
    (creates ~150/s, namespace deletion ~250 objects/s, the rest is waiting)."""
    largest = max(args.sizes)

    def rounds(lifetime: float) -> float:
        return args.rounds * renew_wait(lifetime) + 20

    phases = {
        "start": 25.0,
        "ceilings": 2 * largest / 1500 + sum(2 * n / 500 + n / 250 + 5 for n in args.sizes),
        "bursts": sum(n / 150 + 10 + n / 250 for n in args.sizes),
    }
    if args.steady:
        phases["steady"] = rounds(args.expires_in)
        phases["restart"] = args.restart_window + 5
        if args.outage_s:
            phases["outage"] = args.outage_s + 30
    if args.peer:
        phases["peer"] = args.peer_window_s + 90
    if args.scale:
        phases["scale"] = 2 * args.scale / 130 + 10 + rounds(args.scale_expires_in)
    return phases


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="tokensync-bench-"))
        self.results: dict[str, Any] = {}
        self.series: dict[str, Any] = {}
        self.operator: subprocess.Popen[bytes] | None = None
        self.fake: subprocess.Popen[bytes] | None = None
        self.namespaces: list[str] = []  # made by the bench, not yet deleted

    # Processes
    def start_cluster(self) -> ControlPlane:
        # With the peer phase, the audit log also records external-secrets' requests.
        peer = self.peer_user()
        users = {"users": [OPERATOR_USER, peer]} if peer else {}
        audit, self.audit_log = audit_args(self.workdir, max_size_mb=2000, **users)
        plane = start(
            self.workdir / "cluster",
            crd_dir=REPO / "crds",
            extra_apiserver_args=audit,
        )
        plane.kubectl("apply", "-k", str(REPO / "deploy" / "rbac"))
        self.operator_kubeconfig = plane.service_account_kubeconfig(
            "tokensync-system", "tokensync", self.workdir / "operator.kubeconfig"
        )
        self.plane = plane
        return plane

    def peer_user(self) -> str:
        """external-secrets' user when the peer phase runs (and bench/peer_eso.py is here)."""
        if not getattr(self.args, "peer", 0):
            return ""
        try:
            from peer_eso import ESO_USER
        except ImportError:
            return ""
        return str(ESO_USER)

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
        self.health_port = free_port()
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
                str(self.health_port),
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

    async def operator_ready(self, timeout_s: float = 60) -> None:
        """Until the operator's /readyz answers 200: started, watching, API reachable."""
        assert self.operator is not None
        deadline = time.time() + timeout_s
        async with httpx.AsyncClient() as client:
            while time.time() < deadline:
                if self.operator.poll() is not None:
                    raise RuntimeError(f"the operator exited; see {self.workdir}/operator.log")
                try:
                    answer = await client.get(f"http://127.0.0.1:{self.health_port}/readyz")
                    if answer.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError(f"the operator was not ready within {timeout_s} s")

    def operator_usage(self) -> tuple[float, float]:
        """(CPU seconds, peak RSS MiB) of the running operator."""
        assert self.operator is not None
        return cpu_seconds(self.operator.pid), memory_mib(self.operator.pid, "VmHWM")

    def subject(self, api: BenchApi, observer: Observer, url: str) -> renewals.Subject:
        assert self.operator is not None
        pids = {
            "operator": self.operator.pid,
            "kube-apiserver": self.plane.component("kube-apiserver").pid,
            "etcd": self.plane.component("etcd").pid,
        }
        return renewals.Subject(api, observer, url, self.audit_log, pids)

    def summary(self, label: str, *prefixes: str) -> None:
        """The one-line JSON of a phase's figures."""
        shown = {k: v for k, v in self.results.items() if k.startswith(prefixes)}
        print(f"{label}: {json.dumps(shown)}", flush=True)

    # Helpers
    def token_manifest(
        self, namespace: str, index: int, url: str, lifetime: int | None = None
    ) -> dict[str, Any]:
        params = {"n": f"{namespace}-{index}"}
        if lifetime:
            params["lifetime"] = str(lifetime)  # the fake endpoint's expires_in for it
        return {
            "apiVersion": "tokensync.dev/v1alpha1",
            "kind": "ProviderToken",
            "metadata": {"name": f"t{index}", "namespace": namespace},
            "spec": {
                "provider": {"oauth2": {"tokenUrl": f"{url}/token", "extraParams": params}},
                "credentialsRef": {"name": "creds"},
                "target": {"name": f"t{index}-token"},
            },
        }

    async def namespace(self, api: BenchApi, name: str) -> None:
        await api.call("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
        self.namespaces.append(name)
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
        if namespace in self.namespaces:
            self.namespaces.remove(namespace)
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                await api.call("GET", f"/api/v1/namespaces/{namespace}")
            except RuntimeError:
                return
            await asyncio.sleep(1)
        raise RuntimeError(f"namespace {namespace} was not deleted within 300 s")

    async def remove_all(self, api: BenchApi) -> None:
        for namespace in list(self.namespaces):
            await self.remove_namespace(api, namespace)

    async def namespace_names(self, api: BenchApi) -> set[str]:
        listed = await api.call("GET", "/api/v1/namespaces")
        return {item["metadata"]["name"] for item in listed["items"]}

    # Phases
    async def ceiling(self, api: BenchApi, writes: int) -> None:
        self.results.update(await ceilings.write_ceiling(api, writes))

    async def same_writes_ceiling(self, api: BenchApi, size: int, url: str) -> None:
        namespace = "same-writes"
        await self.namespace(api, namespace)
        figures, per_s = await ceilings.same_writes(
            api, namespace, size, lambda index: self.token_manifest(namespace, index, url)
        )
        self.results.update(figures)
        if size == max(self.args.sizes):
            self.results["same_writes_per_s"] = per_s
        await self.remove_namespace(api, namespace)

    async def idle(self) -> None:
        """The operator's VmRSS once it watches, with no ProviderToken yet."""
        assert self.operator is not None
        await self.operator_ready()
        rss, stable = await stable_rss(self.operator.pid)
        if not stable:
            print("warning: the idle operator's RSS did not settle within 60 s", flush=True)
        self.results["idle_rss_mib"] = round(rss, 1)

    def memory(self, size: int) -> None:
        """VmRSS with ``size`` tokens held, and what each costs over the idle operator."""
        assert self.operator is not None
        rss = memory_mib(self.operator.pid)
        self.results[f"rss_at_{size}_mib"] = round(rss, 1)
        if "idle_rss_mib" in self.results:
            per_token = (rss - self.results["idle_rss_mib"]) / size * 1024
            self.results[f"kib_per_token_{size}"] = round(per_token, 2)

    async def burst(
        self,
        api: BenchApi,
        observer: Observer,
        size: int,
        url: str,
        *,
        prefix: str = "",
        namespace: str = "",
        lifetime: int | None = None,
        timeout_s: float = 0,
    ) -> str:
        prefix = prefix or f"burst_{size}"
        namespace = namespace or f"burst-{size}"
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
        before = await request_counts(api)

        async def create(index: int) -> None:
            await api.call(
                "POST",
                f"/apis/tokensync.dev/v1alpha1/namespaces/{namespace}/providertokens",
                self.token_manifest(namespace, index, url, lifetime),
            )

        cpu_before, _ = self.operator_usage()
        system_before = process_cpu()
        began = time.time()
        created = await api.bulk(list(range(size)), create, concurrency=48)
        self.results[f"{prefix}_create_s"] = round(time.time() - began, 2)
        deadline = began + (timeout_s or self.args.burst_timeout)
        pending = set(range(size))
        while time.time() < deadline:
            pending = {
                i
                for i in pending
                if not observer.secret_changes.get(f"{namespace}/t{i}-token")
                or f"{namespace}/t{i}" not in observer.ready_at
            }
            if not pending:
                break
            await asyncio.sleep(0.1)
        converged = time.time() - began
        cpu_after, peak_rss = self.operator_usage()
        self.results[f"{prefix}_operator_peak_rss_mib"] = round(peak_rss, 1)
        system_after = process_cpu()
        self.results[f"{prefix}_cpu_share"] = {
            name: round((system_after.get(name, 0) - cpu) / converged, 2)
            for name, cpu in system_before.items()
        }
        self.results[f"{prefix}_operator_cpu_ms_per_token"] = round(
            (cpu_after - cpu_before) / size * 1000, 2
        )
        after = await request_counts(api)
        firsts = {
            i: changes[0][0]
            for i in range(size)
            if (changes := observer.secret_changes.get(f"{namespace}/t{i}-token"))
        }
        latencies = [at - created[i] for i, at in firsts.items()]
        writes = request_delta(before, after)
        operator_writes = sum(
            v
            for k, v in writes.items()
            if k in ("POST secrets", "PATCH secrets", "PATCH providertokens/status", "POST events")
        )
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
        self.series[f"{prefix}_arrivals"] = sorted(at - began for at in firsts.values())
        await settle(api)
        self.memory(size)
        return namespace

    async def steady(self, api: BenchApi, observer: Observer, namespace: str, url: str) -> None:
        figures, lateness = await renewals.observe_rounds(
            self.subject(api, observer, url),
            namespace,
            self.args.steady,
            self.args.rounds,
            self.args.expires_in,
        )
        renamed = {"tokens": "steady_tokens", "window_s": "steady_window_s"}
        renamed["expires_in"] = "steady_expires_in"
        self.results.update({renamed.get(k, k): v for k, v in figures.items()})
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

    async def outage(self, api: BenchApi, observer: Observer, namespace: str, url: str) -> None:
        size = self.args.steady
        figures, recovery = await renewals.outage(
            self.subject(api, observer, url),
            namespace,
            size,
            self.args.outage_s,
            recovery_timeout_s=max(120, size / 20),
        )
        self.results.update(figures)
        self.series["outage_recovery"] = recovery

    async def peer(self, plane: ControlPlane, api: BenchApi, url: str) -> None:
        """bench/peer_eso.py: external-secrets and tokensync side by side. A failure there
        is recorded (``peer_error``) and the scale run still runs."""
        assert self.operator is not None
        before = await self.namespace_names(api)
        try:
            import peer_eso

            keys, series = await peer_eso.run_peer(
                plane=plane,
                api=api,
                fake_url=url,
                operator_pid=self.operator.pid,
                audit_log=self.audit_log,
                workdir=self.workdir,
                size=self.args.peer,
                window_s=self.args.peer_window_s,
            )
            self.results.update(keys)
            self.series.update(series)
        except Exception as error:
            traceback.print_exc()
            self.results["peer_error"] = repr(error)
        else:
            try:
                peer_eso.plot_peer(keys, series, self.args.out)  # peer.png: the report links it
            except ImportError as error:
                print(f"warning: no peer.png: {error}", flush=True)
        for namespace in sorted(await self.namespace_names(api) - before):
            try:
                await self.remove_namespace(api, namespace)
            except RuntimeError as error:
                print(f"warning: {error}", flush=True)

    async def scale(self, api: BenchApi, observer: Observer, url: str) -> None:
        """N ProviderTokens (the burst's manifest, ``--scale-expires-in`` lifetimes) in
        their own namespace, then renewal rounds observed as in the steady phase."""
        assert self.operator is not None
        size = self.args.scale
        prefix = f"scale_{size}"
        await self.remove_all(api)
        self.results[f"{prefix}_rss_before_mib"] = round(memory_mib(self.operator.pid), 1)
        namespace = await self.burst(
            api,
            observer,
            size,
            url,
            prefix=prefix,
            namespace=f"scale-{size}",
            lifetime=self.args.scale_expires_in,
            timeout_s=max(self.args.burst_timeout, size / 20),
        )
        self.summary(f"scale {size} burst", prefix, f"rss_at_{size}", f"kib_per_token_{size}")
        figures, lateness = await renewals.observe_rounds(
            self.subject(api, observer, url),
            namespace,
            size,
            self.args.rounds,
            self.args.scale_expires_in,
        )
        observed = {f"{prefix}_{k}": v for k, v in figures.items()}
        self.results.update(observed)
        self.series[f"{prefix}_lateness"] = lateness
        print(f"scale {size} rounds: {json.dumps(observed)}", flush=True)

    async def run(self) -> None:
        plane = self.start_cluster()
        url = self.start_fake()
        api = BenchApi(plane)
        self.watchers: list[asyncio.Task[None]] = []
        observer = Observer()
        args = self.args
        try:
            await self.ceiling(api, writes=2 * max(args.sizes))
            self.summary("ceiling", "ceiling")
            for size in args.sizes:
                await self.same_writes_ceiling(api, size, url)
                self.summary(f"same-writes {size}", f"same_writes_{size}", "same_writes_per")
            self.start_operator(url.removeprefix("http://"))
            await self.idle()
            self.summary("idle", "idle")
            namespace = ""
            for size in args.sizes:
                if namespace:
                    await self.remove_namespace(api, namespace)
                namespace = await self.burst(api, observer, size, url)
                self.summary(
                    f"burst {size}", f"burst_{size}", f"rss_at_{size}", f"kib_per_token_{size}"
                )
            if args.steady:
                await self.steady(api, observer, namespace, url)
                self.summary(
                    "steady",
                    *("renew", "expired", "writes", "peak", "cpu", "unfiltered"),
                    *("apiserver_cpu", "etcd_cpu"),
                )
                await self.restart(api, observer, namespace, url)
                self.summary("restart", "restart")
                if args.outage_s:
                    await self.outage(api, observer, namespace, url)
                    self.summary("outage", "outage")
            await self.remove_all(api)
            if args.peer:
                await self.peer(plane, api, url)
                self.summary("peer", "peer")
            if args.scale:
                await self.scale(api, observer, url)
        finally:
            for task in self.watchers:
                task.cancel()
            await api.close()
            for process in (self.operator, self.fake):
                if process and process.poll() is None:
                    process.kill()
            plane.stop()
        self.summarise()

    def summarise(self) -> None:
        """The figures made of other figures, and what the run was."""
        results, args = self.results, self.args
        largest = max(args.sizes)
        results["converge_fraction_of_ceiling"] = round(
            results[f"burst_{largest}_operator_writes_per_s"] / results["ceiling_writes_per_s"],
            3,
        )
        # What a perfect operator could reach on this machine (docs/decisions/0004).
        results["same_writes_fraction_of_ceiling"] = round(
            results["same_writes_per_s"] / results["ceiling_writes_per_s"], 3
        )
        results["converge_fraction_of_same_writes"] = round(
            results[f"burst_{largest}_operator_writes_per_s"] / results["same_writes_per_s"], 3
        )
        # Both p99s from the moment the create is sent, as burst_*_p99_s has always been
        # counted: the operator cannot act before the create is stored, nor can the tight
        # client, so the create's own wait is in both or in neither.
        for size in args.sizes:
            bound = results.get(f"same_writes_{size}_p99_from_create_sent_s")
            if bound:
                ratio = results[f"burst_{size}_p99_s"] / bound
                results[f"burst_{size}_p99_over_same_writes"] = round(ratio, 2)
        measured = [n for n in [*args.sizes, args.scale] if f"kib_per_token_{n}" in results]
        if measured:
            results["kib_per_token"] = results[f"kib_per_token_{max(measured)}"]
        results["machine"] = {
            "cores": os.cpu_count(),
            "memory_gib": round(
                os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
            ),
            "python": platform.python_version(),
        }
        results["date"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        results["parameters"] = vars(args) | {"sizes": args.sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,5000", help="burst sizes, comma-separated")
    parser.add_argument(
        "--steady", type=int, default=5000, help="0 skips steady, restart and outage"
    )
    parser.add_argument("--expires-in", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2, help="renewal rounds (steady, scale)")
    parser.add_argument("--latency", type=float, default=0.0, help="token endpoint latency (s)")
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--burst-timeout", type=float, default=600)
    parser.add_argument("--restart-window", type=float, default=30)
    parser.add_argument(
        "--outage-s",
        type=float,
        default=None,
        help="token endpoint down this long after the restart (default expires-in + 30; 0 skips)",
    )
    parser.add_argument("--peer", type=int, default=1000, help="external-secrets side by side")
    parser.add_argument("--peer-window-s", type=float, default=720)
    parser.add_argument("--scale", type=int, default=20000, help="the last run's size; 0 skips")
    parser.add_argument("--scale-expires-in", type=int, default=300)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.steady and args.steady != max(args.sizes):
        parser.error("--steady must equal the largest burst size (the steady set is that burst)")
    if args.outage_s is None:
        args.outage_s = args.expires_in + 30
    phases = estimate_s(args)
    print(
        f"estimated duration: ~{sum(phases.values()) / 60:.0f} min "
        f"({', '.join(f'{name} {s / 60:.1f}' for name, s in phases.items())})",
        flush=True,
    )
    began = time.time()
    bench = Bench(args)
    try:
        asyncio.run(bench.run())
    except BaseException:
        partial = bench.workdir / "partial-results.json"
        partial.write_text(json.dumps(bench.results, indent=2, sort_keys=True, default=str))
        print(f"the run failed; its figures so far are in {partial}", file=sys.stderr)
        raise
    bench.results["bench_duration_s"] = round(time.time() - began)
    from report import write_report

    write_report(bench.results, bench.series, args.out)
    print(f"took {(time.time() - began) / 60:.1f} min; results in {args.out}")


if __name__ == "__main__":
    main()
