"""tokensync under faults for a long while: ``make soak`` (issue 16).

Starts the local control plane (RBAC on, an audit log of the operator's requests), the
fake providers on loopback (one process, bench/soak_providers.py), and the operator as
separate processes with its ServiceAccount kubeconfig (``--replicas 2``: two replicas
under leader election). Creates ``--tokens`` ProviderTokens round-robin over OAuth2,
Biotz, Podero, Basiq and Microshare, each with its own credentials and a lifetime drawn
from ``--lifetime-min``..``--lifetime-max``. Once every token is Ready, runs a fault
schedule drawn from ``--seed`` (provider down, slow past the timeout, 429 with
Retry-After, garbage; API server and etcd stopped and started; a replica SIGKILLed; the
leader SIGKILLed) for ``--minutes`` minus ``--settle``, then no faults for ``--settle``
seconds, then reads everything. A watcher (LIST+WATCH, as the kubelet's Secret manager)
records every target Secret's token as it arrives; each is checked against what the fakes
issued to that token's subject. Writes ``soak.json``, ``soak.md`` and ``soak.png`` to
``--out``.

Smoke: python bench/soak.py --tokens 60 --minutes 6 --fault-every 25 --lifetime-min 120
--lifetime-max 180 --replicas 2 --seed 1 --out /tmp/soak-smoke
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import platform
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "operator"), str(REPO / "dev"), str(REPO / "bench")]

from kubeclient import OPERATOR_USER, BenchApi, audit_args  # noqa: E402
from soak_analysis import Analysis, IssuedToken  # noqa: E402
from soak_leaks import LeakSearch  # noqa: E402
from soak_operators import Operators  # noqa: E402
from soak_schedule import (  # noqa: E402
    PROVIDER_FAULTS,
    PlannedFault,
    PlannedToken,
    missing_kinds,
    plan_faults,
    plan_tokens,
)
from soak_watch import Recorder, reflect  # noqa: E402

from tokensync.timing import URGENT_MIN  # noqa: E402
from tokensync_dev.devcluster.cluster import (  # noqa: E402
    ControlPlane,
    ControlPlaneError,
    die_with_parent,
    start,
)
from tokensync_dev.devcluster.versions import ETCD_VERSION, KUBERNETES_VERSION  # noqa: E402

NAMESPACE = "soak"
OPERATOR_NAMESPACE = "tokensync-system"
LEASE_PATH = f"/apis/coordination.k8s.io/v1/namespaces/{OPERATOR_NAMESPACE}/leases/tokensync-leader"
# Shown under "Other figures" in soak.md.
OTHER_KEYS = [
    "outage_recovery_max_s",
    "outage_recovery_tokens",
    "outage_recovery_unrecovered",
    "outage_recovery_by_kind",
    "provider_requests_per_token_per_outage_minute_by_kind",
    "provider_requests_per_token_per_outage_minute_by_provider",
    "provider_requests_in_faults",
    "provider_requests_per_fault",
    "expired_episodes_provider_up_count",
    "soak_expired_token_seconds_provider_up_strict",
    "expired_episodes_provider_up_strict_only",
    "wrong_subject_samples",
    "unknown_value_seconds",
    "missing_token_seconds",
    "mints_in_window_by_provider",
    "operator_peak_rss_mib",
    "operator_cpu_s",
    "operator_cpu_share_of_one_core",
    "operator_starts",
    "operator_unexpected_exits",
    "operator_api_requests",
    "watcher",
    "converge_s",
    "versions",
]
FAULT_SWITCH = {
    "provider_down": "down",
    "provider_slow": "slow",
    "provider_429": "429",
    "provider_garbage": "garbage",
}


class StartupError(RuntimeError):
    """A mistake before the soak began: reported in one line, exit code 1."""


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="tokensync-soak-"))
        # Control-plane restarts run here: one thread for the whole run, because the
        # kernel's parent-death signal follows the thread that started a process.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="soak-plane")
        self.rng = random.Random(args.seed)
        self.tokens: list[PlannedToken] = plan_tokens(
            self.rng, args.tokens, args.lifetime_min, args.lifetime_max
        )
        self.phase_s = args.minutes * 60 - args.settle
        self.plan: list[PlannedFault] = plan_faults(
            self.rng,
            phase_s=self.phase_s,
            every_s=args.fault_every,
            replicas=args.replicas,
            lifetime_min=args.lifetime_min,
            lifetime_max=args.lifetime_max,
            provider_timeout_s=args.provider_timeout,
        )
        self.faults: list[dict[str, Any]] = []
        self.recorder = Recorder()
        self.plane: ControlPlane | None = None
        self.fakes: subprocess.Popen[str] | None = None
        self.operators: Operators | None = None
        self.tasks: list[asyncio.Task[Any]] = []
        self.infra_lock = asyncio.Lock()
        self.results: dict[str, Any] = {}
        self.series: dict[str, Any] = {}
        self.started = time.time()

    # Processes
    def start_cluster(self) -> ControlPlane:
        audit, self.audit_log = audit_args(self.workdir, max_size_mb=4000)
        try:
            plane = start(
                self.workdir / "cluster",
                crd_dir=REPO / "crds",
                extra_apiserver_args=audit,
            )
        except Exception as error:  # binaries missing, a port taken, a component died
            first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise StartupError(f"the control plane did not start: {first}") from None
        self.plane = plane
        plane.kubectl("apply", "-k", str(REPO / "deploy" / "rbac"))
        self.operator_kubeconfig = plane.service_account_kubeconfig(
            OPERATOR_NAMESPACE, "tokensync", self.workdir / "operator.kubeconfig"
        )
        return plane

    def start_fakes(self) -> dict[str, Any]:
        plan = self.workdir / "plan.json"
        plan.write_text(json.dumps({"tokens": [vars(t) for t in self.tokens]}))
        plan.chmod(0o600)
        self.fakes = subprocess.Popen(
            [sys.executable, str(REPO / "bench" / "soak_providers.py"), "--plan", str(plan)],
            stdout=subprocess.PIPE,
            stderr=(self.workdir / "fakes.log").open("ab"),
            text=True,
            preexec_fn=die_with_parent,
        )
        assert self.fakes.stdout is not None
        line = self.fakes.stdout.readline()
        if not line:
            tail = (self.workdir / "fakes.log").read_text(errors="replace")[-500:]
            raise StartupError(f"the fake providers did not start: {tail.strip()}")
        info: dict[str, Any] = json.loads(line)
        self.control = info["control"]
        return info

    # Objects
    def manifests(self, token: PlannedToken, url: str) -> tuple[dict[str, Any], dict[str, Any]]:
        block: dict[str, Any] = {"tokenUrl": url}
        if token.provider == "oauth2":
            block["clientAuth"] = "client_secret_basic"
        elif token.provider == "podero":
            block["environment"] = "sandbox"
        credentials = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": f"{token.name}-credentials",
                "labels": {"tokensync.dev/role": "credentials"},
            },
            "stringData": token.credentials,
        }
        provider_token = {
            "apiVersion": "tokensync.dev/v1alpha1",
            "kind": "ProviderToken",
            "metadata": {"name": token.name},
            "spec": {
                "provider": {token.provider: block},
                "credentialsRef": {"name": f"{token.name}-credentials"},
                "target": {"name": token.secret},
            },
        }
        return credentials, provider_token

    async def create_tokens(self, api: BenchApi, urls: dict[str, str]) -> None:
        await api.call("POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})

        async def create(token: PlannedToken) -> None:
            credentials, provider_token = self.manifests(token, urls[token.provider])
            await api.call("POST", f"/api/v1/namespaces/{NAMESPACE}/secrets", credentials)
            await api.call(
                "POST",
                f"/apis/tokensync.dev/v1alpha1/namespaces/{NAMESPACE}/providertokens",
                provider_token,
            )

        await api.bulk(self.tokens, create, concurrency=32)

    # Faults
    async def fault_call(self, body: dict[str, Any]) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(self.control + "/fault", json=body)
            answer.raise_for_status()

    async def leader(self, api: BenchApi) -> str:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                lease = await api.call("GET", LEASE_PATH)
                holder = str((lease.get("spec") or {}).get("holderIdentity") or "")
                if holder:
                    return holder
            except (RuntimeError, aiohttp.ClientError, OSError):
                holder = ""  # not reachable yet: ask again
            await asyncio.sleep(0.5)
        return ""

    async def takeover(self, api: BenchApi, old: str, since: float, record: dict[str, Any]) -> None:
        """When a replica (another, or the restarted one under the same identity) renews the
        Lease again after a leader kill."""
        deadline = since + 120
        while time.time() < deadline:
            try:
                lease = await api.call("GET", LEASE_PATH)
            except (RuntimeError, aiohttp.ClientError, OSError):
                lease = {}  # the API server may be restarting: ask again
            spec = lease.get("spec") or {}
            renewed = spec.get("renewTime")
            if renewed:
                at = datetime.fromisoformat(renewed.replace("Z", "+00:00")).timestamp()
                if at > since:
                    record["new_leader"] = spec.get("holderIdentity")
                    record["takeover_s"] = round(at - since, 2)
                    return
            await asyncio.sleep(0.5)

    async def run_fault(self, api: BenchApi, fault: PlannedFault, phase_start: float) -> None:
        await asyncio.sleep(max(0.0, phase_start + fault.start_s - time.time()))
        record: dict[str, Any] = {
            "kind": fault.kind,
            "target": fault.target,
            "planned_start_s": fault.start_s,
            "planned_duration_s": fault.duration_s,
            **fault.params,
        }
        self.faults.append(record)
        loop = asyncio.get_running_loop()
        assert self.plane is not None and self.operators is not None
        if fault.kind in PROVIDER_FAULTS:
            body = {"provider": fault.target, "kind": FAULT_SWITCH[fault.kind], **fault.params}
            await self.fault_call(body)
            record["start"] = time.time()
            await asyncio.sleep(fault.duration_s)
            await self.fault_call({"provider": fault.target, "kind": "none"})
            record["end"] = time.time()
            return
        async with self.infra_lock:
            if fault.kind in ("apiserver_restart", "etcd_restart"):
                record["start"] = time.time()
                await loop.run_in_executor(self.executor, self.plane.stop_component, fault.target)
                record["stopped_s"] = round(time.time() - record["start"], 2)
                await asyncio.sleep(fault.duration_s)
                try:
                    await loop.run_in_executor(
                        self.executor, self.plane.start_component, fault.target
                    )
                except ControlPlaneError as error:
                    record["error"] = str(error).splitlines()[0]
                    await loop.run_in_executor(
                        self.executor, self.plane.start_component, fault.target
                    )
                record["end"] = time.time()
                return
            replicas = self.operators.replicas
            if fault.kind == "leader_kill" or len(replicas) > 1:
                holder = await self.leader(api)
                if fault.kind == "leader_kill":
                    victim = self.operators.by_identity(holder)
                else:
                    victim = next((r for r in replicas if r.identity != holder), None)
                record["holder"] = holder
            else:
                victim = replicas[0]
            if victim is None:
                record["error"] = f"no replica to kill (lease holder {holder!r})"
                record["start"] = record["end"] = time.time()
                return
            record["target"] = victim.identity
            killed_at = time.time()
            if fault.kind == "leader_kill":
                self.tasks.append(
                    asyncio.create_task(self.takeover(api, victim.identity, killed_at, record))
                )
            record["start"], record["end"] = await self.operators.kill(victim)

    # Progress
    async def progress(self, started: float) -> None:
        while True:
            await asyncio.sleep(30)
            active = [
                f"{f['kind']}:{f['target']}"
                for f in self.faults
                if f.get("start") and not f.get("end")
            ]
            print(
                f"soak: {(time.time() - started) / 60:5.1f} min, "
                f"{self.recorder.ready_count()}/{len(self.tokens)} Ready, "
                f"{len(self.faults)}/{len(self.plan)} faults begun, "
                f"now: {', '.join(active) or '-'}",
                flush=True,
            )

    async def wait_ready(self, since: float) -> float:
        deadline = since + self.args.ready_timeout
        count = len(self.tokens)
        while time.time() < deadline:
            if self.recorder.ready_count() == count and self.recorder.holding_count() == count:
                return time.time()
            await asyncio.sleep(0.5)
        raise StartupError(
            f"only {self.recorder.ready_count()}/{count} ProviderTokens Ready and "
            f"{self.recorder.holding_count()}/{count} Secrets written after "
            f"{self.args.ready_timeout:.0f} s (logs in {self.workdir})"
        )

    # The run
    async def run(self) -> None:
        plane = await asyncio.get_running_loop().run_in_executor(self.executor, self.start_cluster)
        info = self.start_fakes()
        urls: dict[str, str] = info["token_urls"]
        hosts = ",".join(sorted({url.split("/")[2] for url in urls.values()}))
        operator_args = [
            "--allowed-hosts",
            hosts,
            "--allow-insecure-http",
            "--provider-timeout",
            str(self.args.provider_timeout),
            "--metrics-port",
            "0",
            "--health-port",
            "0",
            "--workers",
            str(self.args.workers),
        ]
        self.operators = Operators(
            self.operator_kubeconfig,
            self.workdir,
            operator_args,
            self.args.replicas,
            self.args.restart_delay,
        )
        api = BenchApi(plane)
        try:
            await self._run(api, urls)
        finally:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await api.close()

    async def _run(self, api: BenchApi, urls: dict[str, str]) -> None:
        assert self.operators is not None
        recorder = self.recorder
        self.tasks += [
            asyncio.create_task(
                reflect(
                    api,
                    f"/api/v1/namespaces/{NAMESPACE}/secrets",
                    recorder.on_secret,
                    recorder,
                    labelSelector="tokensync.dev/role=token",
                )
            ),
            asyncio.create_task(
                reflect(
                    api,
                    f"/apis/tokensync.dev/v1alpha1/namespaces/{NAMESPACE}/providertokens",
                    recorder.on_token,
                    recorder,
                )
            ),
        ]
        created = time.time()
        await self.create_tokens(api, urls)
        self.operators.start_all()
        self.tasks.append(asyncio.create_task(self.operators.supervise()))
        print(
            f"soak: {len(self.tokens)} ProviderTokens created in {time.time() - created:.1f} s; "
            f"{self.args.replicas} replica(s) started; workdir {self.workdir}",
            flush=True,
        )
        measure_start = await self.wait_ready(created)
        print(
            f"soak: all Ready after {measure_start - created:.1f} s; {len(self.plan)} faults "
            f"planned over {self.phase_s / 60:.1f} min, then {self.args.settle:.0f} s settle",
            flush=True,
        )
        self.tasks.append(asyncio.create_task(self.progress(measure_start)))
        fault_tasks = [
            asyncio.create_task(self.run_fault(api, fault, measure_start)) for fault in self.plan
        ]
        self.tasks += fault_tasks
        await asyncio.sleep(max(0.0, measure_start + self.phase_s - time.time()))
        await asyncio.gather(*fault_tasks)  # one may outlast its plan (a slow restart)
        settle_start = time.time()
        await asyncio.sleep(
            max(self.args.settle, measure_start + self.args.minutes * 60 - time.time())
        )
        final_secrets, final_ready, events, measure_end = await self.final_read(api)
        self.results.update(
            {
                "measure_start": measure_start,
                "measure_end": measure_end,
                "settle_start": settle_start,
                "converge_s": round(measure_start - created, 2),
            }
        )
        self.operators.stop()
        await self.analyse(final_secrets, final_ready, events)

    async def final_read(
        self, api: BenchApi
    ) -> tuple[dict[str, str | None], dict[str, tuple[bool, str]], list[dict[str, Any]], float]:
        secrets = await api.call(
            "GET",
            f"/api/v1/namespaces/{NAMESPACE}/secrets",
            params={"labelSelector": "tokensync.dev/role=token"},
        )
        tokens = await api.call(
            "GET", f"/apis/tokensync.dev/v1alpha1/namespaces/{NAMESPACE}/providertokens"
        )
        events = await api.call("GET", "/api/v1/events")
        at = time.time()
        final: dict[str, str | None] = {}
        for item in secrets["items"]:
            raw = (item.get("data") or {}).get("token")
            final[item["metadata"]["name"]] = base64.b64decode(raw).decode() if raw else None
        ready: dict[str, tuple[bool, str]] = {}
        for item in tokens["items"]:
            status = item.get("status") or {}
            self.recorder.statuses.add(json.dumps(status, sort_keys=True))
            condition: dict[str, Any] = next(
                (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
            )
            ready[item["metadata"]["name"]] = (
                condition.get("status") == "True",
                str(condition.get("reason", "no Ready condition")),
            )
        return final, ready, events["items"], at

    # Figures
    async def fetch(self, path: str) -> Any:
        async with httpx.AsyncClient(timeout=120) as client:
            answer = await client.get(self.control + path)
            answer.raise_for_status()
            return answer.json()

    async def analyse(
        self,
        final: dict[str, str | None],
        ready: dict[str, tuple[bool, str]],
        events: list[dict[str, Any]],
    ) -> None:
        assert self.operators is not None
        issued_rows = await self.fetch("/issued")
        requests: list[tuple[str, float, str, int, str]] = [
            (r[0], r[1], r[2], r[3], r[4]) for r in await self.fetch("/requests")
        ]
        known = await self.fetch("/secrets")
        issued = {
            r["value"]: IssuedToken(r["provider"], r["subject"], r["issued_at"], r["expires_at"])
            for r in issued_rows
        }
        owners = {t.secret: (t.provider, t.subject) for t in self.tokens}
        start, end = self.results["measure_start"], self.results["measure_end"]
        analysis = Analysis(
            samples=self.recorder.samples,
            owners=owners,
            issued=issued,
            faults=self.faults,
            requests=requests,
            start=start,
            end=end,
            provider_timeout_s=self.args.provider_timeout,
        )
        expired = analysis.expired()
        strict = analysis.expired(strict=True)
        recovery = analysis.recovery()
        rates = analysis.requests_in_faults()
        lost, lost_detail = analysis.lost(final, ready, end)
        leaks, leak_detail = self.search_leaks(issued_rows, known, events)
        self.attach_logs(expired["episodes_provider_up"][:100])
        self.dump(requests, issued_rows)
        mints = Counter(r["provider"] for r in issued_rows if r["issued_at"] >= start)
        findings = expired["value_findings"]
        self.results.update(
            {
                "soak_minutes": round((end - start) / 60, 2),
                "soak_tokens": len(self.tokens),
                "soak_replicas": self.args.replicas,
                "seed": self.args.seed,
                "soak_faults": dict(sorted(Counter(f["kind"] for f in self.faults).items())),
                "faults": [
                    {
                        **f,
                        "start_s": round(f["start"] - start, 2) if f.get("start") else None,
                        "end_s": round(f["end"] - start, 2) if f.get("end") else None,
                    }
                    for f in self.faults
                ],
                **expired_figures(expired, strict),
                "unknown_value_samples": expired["unknown_value_samples"],
                "wrong_subject_samples": expired["wrong_subject_samples"],
                "unknown_value_seconds": expired["unknown_value_seconds"],
                "missing_token_seconds": expired["missing_token_seconds"],
                "value_findings": findings[:100],
                **recovery,
                **rates,
                "requests_bound": self.args.requests_bound,
                "tokens_lost": lost,
                "tokens_lost_detail": lost_detail[:100],
                "leaks": leaks,
                "leak_detail": leak_detail[:100],
                "mints_in_window_by_provider": dict(sorted(mints.items())),
                "provider_requests_total": len(requests),
                "provider_request_statuses": dict(
                    sorted(Counter(f"{r[0]} {r[3]}" for r in requests).items())
                ),
                "operator_peak_rss_mib": round(self.operators.peak_rss_mib(), 1),
                "operator_cpu_s": round(self.operators.cpu_s(), 1),
                "operator_cpu_share_of_one_core": round(
                    self.operators.cpu_s() / max(1.0, time.time() - self.started), 3
                ),
                "operator_starts": {r.identity: r.starts for r in self.operators.replicas},
                "operator_unexpected_exits": {
                    r.identity: [(round(at - start, 1), code) for at, code in r.exits]
                    for r in self.operators.replicas
                    if r.exits
                },
                "operator_api_requests": self.audit_counts(start, end),
                "watcher": {
                    "events": self.recorder.events_seen,
                    "relists": self.recorder.relists,
                    "watch_breaks": self.recorder.watch_breaks,
                    "secret_changes": sum(len(h) for h in self.recorder.samples.values()),
                },
                "provider_timeout_s": self.args.provider_timeout,
                "lifetimes_s": [self.args.lifetime_min, self.args.lifetime_max],
                "parameters": {k: str(v) for k, v in vars(self.args).items()},
                "command": "python bench/soak.py " + shlex.join(sys.argv[1:]),
                "versions": self.versions(),
                "machine": {
                    "cores": os.cpu_count(),
                    "memory_gib": round(
                        os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
                    ),
                    "python": platform.python_version(),
                    "kernel": platform.release(),
                },
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "workdir": str(self.workdir),
            }
        )
        self.series = {
            "buckets": analysis.buckets(expired),
            "other_keys": OTHER_KEYS,
        }

    def search_leaks(
        self, issued: list[dict[str, Any]], known: list[str], events: list[dict[str, Any]]
    ) -> tuple[int, list[dict[str, Any]]]:
        values = [(f"{r['provider']} {r['grant'] or 'token'}", r["value"]) for r in issued]
        credentials = [
            (f"{t.provider} credential {key}", value)
            for t in self.tokens
            for key, value in t.credentials.items()
            if key not in ("clientId", "username")  # names, not secrets
        ]
        search = LeakSearch([*values, *credentials, *(("fake secret", s) for s in known)])
        self.leak_search = search
        found: list[dict[str, Any]] = []
        for log in sorted(self.workdir.glob("operator-*.log")):
            for number, line in enumerate(log.read_text(errors="replace").splitlines(), 1):
                for what in search.search(line):
                    found.append({"where": f"{log.name}:{number}", "what": what})
        for event in events:
            for what in search.search(json.dumps(event)):
                meta = event.get("metadata", {})
                found.append(
                    {"where": f"event {meta.get('namespace')}/{meta.get('name')}", "what": what}
                )
        for status in self.recorder.statuses:
            for what in search.search(status):
                found.append({"where": "a ProviderToken status", "what": what})
        return len(found), found

    def attach_logs(self, episodes: list[dict[str, Any]]) -> None:
        """Each episode's operator log lines about its ProviderToken, from a lifetime before
        its expiry to its replacement (lines with a secret in them are left out)."""
        wanted = {e["secret"].removesuffix("-token") for e in episodes}
        lines: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for log in sorted(self.workdir.glob("operator-*.log")):
            for line in log.read_text(errors="replace").splitlines():
                name = next(
                    (w for w in line.split() if w.startswith(f"{NAMESPACE}/")), ""
                ).removeprefix(f"{NAMESPACE}/")
                if name not in wanted:
                    continue
                try:
                    at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                except ValueError:
                    continue
                stamp = at.timestamp()  # the operator logs local time
                lines[name].append((stamp, f"{log.name}: {line[:300]}"))
        for episode in episodes:
            name = episode["secret"].removesuffix("-token")
            lifetime = next(t.lifetime_s for t in self.tokens if t.name == name)
            low, high = episode["expired_at"] - lifetime - 60, episode["replaced_at"] + 5
            episode["log"] = [
                text
                for at, text in sorted(lines.get(name, []))
                if low <= at <= high and not self.leak_search.search(text)
            ][-15:]

    def dump(self, requests: list[Any], issued: list[dict[str, Any]]) -> None:
        """For digging into a finding: the request log, the issue log and every Secret's
        history, with SHA-256 prefixes instead of token values."""

        def digest(value: str | None) -> str | None:
            return hashlib.sha256(value.encode()).hexdigest()[:16] if value else None

        (self.workdir / "requests.json").write_text(json.dumps(requests))
        (self.workdir / "issued.json").write_text(
            json.dumps([{**r, "value": digest(r["value"])} for r in issued])
        )
        (self.workdir / "samples.json").write_text(
            json.dumps(
                {
                    name: [(at, digest(value)) for at, value in history]
                    for name, history in self.recorder.samples.items()
                }
            )
        )
        (self.workdir / "faults.json").write_text(json.dumps(self.faults))

    def audit_counts(self, start: float, end: float) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        if not self.audit_log.exists():
            return {}
        with self.audit_log.open(errors="replace") as lines:
            for line in lines:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if (entry.get("user") or {}).get("username") != OPERATOR_USER:
                    continue
                received = entry.get("requestReceivedTimestamp", "")
                try:
                    at = datetime.fromisoformat(received.replace("Z", "+00:00")).timestamp()
                except ValueError:
                    continue
                if not start <= at <= end:
                    continue
                ref = entry.get("objectRef") or {}
                name = f"{entry.get('verb')} {ref.get('resource', '')}" + (
                    f"/{ref['subresource']}" if ref.get("subresource") else ""
                )
                counts[name] += 1
        return dict(sorted(counts.items()))

    def versions(self) -> dict[str, str]:
        from tokensync import __version__

        commit = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        return {
            "tokensync": __version__,
            "git": commit,
            "kubernetes": KUBERNETES_VERSION,
            "etcd": ETCD_VERSION,
        }

    def cleanup(self) -> None:
        if self.operators is not None:
            self.operators.stop()
        if self.fakes is not None and self.fakes.poll() is None:
            self.fakes.kill()
            self.fakes.wait()
        if self.plane is not None:
            self.plane.stop()
            shutil.rmtree(self.plane.workdir / "etcd-data", ignore_errors=True)
        self.executor.shutdown(wait=True)
        (self.workdir / "plan.json").unlink(missing_ok=True)


def expired_figures(expired: dict[str, Any], strict: dict[str, Any]) -> dict[str, Any]:
    """The result keys of ``Analysis.expired`` (windows with their grace) and its strict
    reading (windows end when the fake behaves again)."""
    # By secret and expiry: the provider-up episodes may carry their log lines by now.
    seen = {(e["secret"], e["expired_at"]) for e in expired["episodes_provider_up"]}
    return {
        "soak_expired_token_seconds_provider_up": expired["up"],
        "soak_expired_token_seconds_provider_down": expired["down"],
        "soak_expired_token_seconds_provider_then_control_plane": expired["compound"],
        "expired_episodes_provider_then_control_plane": expired["episodes_compound"][:100],
        "soak_expired_token_seconds_provider_up_strict": strict["up"],
        "expired_episodes_provider_up_strict_only": [
            {k: e[k] for k in ("secret", "provider", "expired_at", "seconds_provider_up")}
            for e in strict["episodes_provider_up"]
            if (e["secret"], e["expired_at"]) not in seen
        ][:100],
        "expired_episodes_provider_up": expired["episodes_provider_up"][:100],
        "expired_episodes_provider_up_count": len(expired["episodes_provider_up"]),
    }


def reanalyse(soak: Soak, workdir: Path) -> None:
    """The expired-token figures again, from the records a finished run left in its
    workdir (token values there are digests, compared with digests) and its soak.json.
    The run's own arguments (seed, sizes) rebuild which token is whose."""
    out = soak.args.out
    results = json.loads((out / "soak.json").read_text())
    samples = json.loads((workdir / "samples.json").read_text())
    issued = {
        r["value"]: IssuedToken(r["provider"], r["subject"], r["issued_at"], r["expires_at"])
        for r in json.loads((workdir / "issued.json").read_text())
    }
    analysis = Analysis(
        samples={name: [(at, value) for at, value in history] for name, history in samples.items()},
        owners={t.secret: (t.provider, t.subject) for t in soak.tokens},
        issued=issued,
        faults=json.loads((workdir / "faults.json").read_text()),
        requests=[tuple(r) for r in json.loads((workdir / "requests.json").read_text())],
        start=results["measure_start"],
        end=results["measure_end"],
        provider_timeout_s=soak.args.provider_timeout,
    )
    expired, strict = analysis.expired(), analysis.expired(strict=True)
    from soak_report import write as write_report

    kept = {e["secret"]: e.get("log", []) for e in results["expired_episodes_provider_up"]}
    figures = expired_figures(expired, strict)
    for episode in figures["expired_episodes_provider_up"]:
        episode["log"] = kept.get(episode["secret"], [])
    results.update({**figures, "reanalysed": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
    write_report(results, {"buckets": analysis.buckets(expired), "other_keys": OTHER_KEYS}, out)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tokens", type=int, default=1000, help="ProviderTokens (default 1000)")
    parser.add_argument(
        "--minutes", type=float, default=35, help="measured minutes, settle included (35)"
    )
    parser.add_argument("--replicas", type=int, choices=(1, 2), default=2, help="(default 2)")
    parser.add_argument("--seed", type=int, default=None, help="default: random (recorded)")
    parser.add_argument(
        "--fault-every", type=float, default=60, help="mean seconds between fault starts (60)"
    )
    parser.add_argument("--lifetime-min", type=int, default=120, help="token lifetime, s (120)")
    parser.add_argument("--lifetime-max", type=int, default=600, help="token lifetime, s (600)")
    parser.add_argument(
        "--settle", type=float, default=120, help="seconds without faults at the end (120)"
    )
    parser.add_argument(
        "--provider-timeout", type=float, default=10, help="operator --provider-timeout (10)"
    )
    parser.add_argument(
        "--requests-bound",
        type=float,
        default=60 / URGENT_MIN.total_seconds(),
        help="bound on provider requests per token per outage minute (30: the retry "
        "policy's floor of one attempt per 2 s, timing.URGENT_MIN)",
    )
    parser.add_argument("--workers", type=int, default=32, help="operator --workers (32)")
    parser.add_argument(
        "--restart-delay", type=float, default=1.5, help="s before a killed replica restarts"
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=900, help="s for every token to be Ready (900)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument(
        "--reanalyse",
        type=Path,
        metavar="WORKDIR",
        help="recompute the expired-token figures of the finished run whose records are in "
        "WORKDIR and whose soak.json is in --out (pass the run's own --seed and sizes)",
    )
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**31)
    if args.tokens < 5:
        parser.error("--tokens must be at least 5 (one per provider)")
    if not 60 <= args.lifetime_min <= args.lifetime_max:
        parser.error("need 60 <= --lifetime-min <= --lifetime-max")
    if args.minutes * 60 - args.settle < 60:
        parser.error("--minutes leaves less than a minute of faults after --settle")
    return args


def main() -> None:
    args = parse_args()
    soak = Soak(args)
    if args.reanalyse is not None:
        shutil.rmtree(soak.workdir, ignore_errors=True)
        reanalyse(soak, args.reanalyse)
        return
    missing = missing_kinds(soak.plan, args.replicas)
    print(
        f"soak: seed {args.seed}, {args.tokens} tokens, {args.replicas} replica(s), "
        f"{len(soak.plan)} faults planned"
        + (f" (none of: {', '.join(missing)}: too short a run)" if missing else ""),
        flush=True,
    )
    try:
        asyncio.run(soak.run())
    except StartupError as error:
        print(f"soak: error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        soak.cleanup()
    from soak_report import write

    write(soak.results, soak.series, args.out)
    print(
        "soak: "
        + json.dumps(
            {
                k: soak.results.get(k)
                for k in (
                    "soak_minutes",
                    "soak_tokens",
                    "soak_faults",
                    "soak_expired_token_seconds_provider_up",
                    "soak_expired_token_seconds_provider_down",
                    "outage_recovery_p50_s",
                    "outage_recovery_p99_s",
                    "provider_requests_per_token_per_outage_minute",
                    "tokens_lost",
                    "leaks",
                    "unknown_value_samples",
                    "seed",
                )
            }
        ),
        flush=True,
    )
    print(f"soak: results in {args.out}; logs in {soak.workdir}")


if __name__ == "__main__":
    main()
