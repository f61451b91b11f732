"""external-secrets (ESO) beside tokensync in one benchmark run (issue 19): the same job.

The job. ``size`` tokens from the bench's fake OAuth2 client-credentials endpoint; token
``i`` lives ``lifetime(i) = 120 + (97 i mod 481)`` seconds (120 to 600, spread evenly and
the same in every run), asked for with the form field ``lifetime``. Each token names its
own expiry (``bench-{n}-{expiry}-{hex}``), so the bench's own watch tells when a target
Secret holds an expired token without believing either tool.

tokensync: ProviderTokens as ``bench/run.py`` writes them for its burst, plus
``extraParams.lifetime``. It reads ``expires_in`` and renews each token at two thirds of
its life: 5,400 / lifetime requests per token per hour (18 on average over this spread).

external-secrets v0.20.4 (``tokensync_dev.peers.eso``): it has no client-credentials
generator; a user writes a Webhook generator that POSTs the form with HTTP Basic from a
Secret, and an ExternalSecret per token. One generator per ExternalSecret: a v0.20.4
generator is given nothing of the ExternalSecret that refers to it
(``pkg/generator/webhook``: ``GetSecretMap(ctx, provider, nil)``), so one shared
generator would POST the same body (the same ``n``, the same ``lifetime``) for all.

``refreshInterval``: ESO refreshes every ExternalSecret on a fixed interval and never reads
``expires_in`` (the generator's answer is only the Secret's keys). Facing a provider whose
tokens live 120 to 600 s, a lifetime ESO cannot read, a user sets one interval that keeps
the shortest-lived token valid with room for a refresh that runs late (a queue behind a
burst, a failed request retried with backoff): half the shortest lifetime, 1m. At 2m every
120 s token would be expired whenever its refresh is a second late; an interval per token
would need the lifetime that ESO cannot read. The price: 60 requests per token per hour,
whatever the token's lifetime. ESO's flags: ``ESO_CONCURRENT`` and ``ESO_ARGS`` (raised
from the release's defaults, as a user would at 1,000; the comment there says why).

Measured in one run, for both: converge time (first create to every target Secret holding
a token; tokensync's set first, then ESO's, so neither slows the other's converge), then
one window of ``window_s`` with both running: seconds target Secrets held an expired token
(from the bench's watch), provider requests per token per hour (the endpoint's log), API
writes per refresh (the audit log, by user), CPU ms per refresh and peak RSS (``/proc``).
Before each converge, one object of its own (index ``size``) shows the tool is at work, so
neither converge includes a start-up.

The audit log tells the tools apart by user, but the API server records only the users
its policy names (``kubeclient.audit_args``; bench/run.py adds ``ESO_USER`` when its peer
phase runs). Where ESO's user is not named, its writes are counted from its own client
metrics (``rest_client_requests_total``) and ``peer_eso_writes_source`` says so.

``run_peer`` expects the operator to hold no ProviderTokens but the peer's: the operator's
CPU and memory cannot be split by namespace (it warns when it finds others).

Standalone: ``python bench/peer_eso.py --size 50 --window-s 200 --out /tmp/peer-test``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

import httpx

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO / "operator", REPO / "dev", REPO / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from kubeclient import OPERATOR_USER, BenchApi, iter_audit, metrics  # noqa: E402
from measure import Usage, expired_seconds, memory_mib, parse_time  # noqa: E402

from tokensync_dev.devcluster.cluster import ControlPlane, die_with_parent, free_port  # noqa: E402
from tokensync_dev.peers import eso  # noqa: E402

TOKENSYNC_NAMESPACE = "peer-tokensync"
ESO_NAMESPACE = "peer-eso"
# ESO's own namespace and ServiceAccount: its requests carry this user in the audit log.
ESO_SYSTEM_NAMESPACE = "peer-eso-system"
ESO_ACCOUNT = "external-secrets"
ESO_USER = f"system:serviceaccount:{ESO_SYSTEM_NAMESPACE}:{ESO_ACCOUNT}"
ESO_BINDING = "peer-eso-cluster-admin"
TOKENSYNC_SYSTEM_NAMESPACE = OPERATOR_USER.split(":")[2]

LIFETIME_MIN_S = 120
LIFETIME_MAX_S = 600
REFRESH_INTERVAL = "1m"  # half the shortest lifetime: see the module docstring
REFRESH_INTERVAL_S = 60
# Raised from the release's defaults (--concurrent=1, --client-qps=50, --client-burst=100),
# as a user with 1,000 ExternalSecrets at 1m would: they need 16.7 refreshes a second.
# - One worker does one refresh at a time: two GETs of the credentials Secret, a LIST of
#   the namespace's Secrets by label (orphan clean-up), the POST, a Secret update, a status
#   update, an Event. Back to back that took 100 ms on this machine at 50 objects (85 of
#   them in the LIST), so one worker does 10 a second: short of 16.7.
#   --concurrent is what ESO's maintainers first tell users with slow syncs to raise.
# - The client's rate limit caps refreshes at about qps / 3 (at --client-qps=5, 100
#   ExternalSecrets got 1.7 refreshes a second), so the default 50 allows 16.7: exactly
#   the need, no room for the converge or a late wave; throttled users raise it too.
# 10 workers and twice the needed rate leave headroom without hiding ESO's own costs.
ESO_CONCURRENT = 10
ESO_ARGS: tuple[str, ...] = ("--client-qps=100", "--client-burst=200")

WRITE_VERBS = ("create", "update", "patch", "delete")
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
TOOLS = {"tokensync": "tokensync", "eso": "external-secrets"}


def lifetime(index: int) -> int:
    """The lifetime (s) asked for token ``index``: 120..600, every value as often."""
    return LIFETIME_MIN_S + (index * 97) % (LIFETIME_MAX_S - LIFETIME_MIN_S + 1)


def _run_module() -> ModuleType:
    # Imported when called: bench/run.py imports this module.
    import run

    return run


def token_in(secret: dict[str, Any]) -> tuple[str, float] | None:
    """The bench token a Secret holds and the expiry (epoch s) it names, if any."""
    for value in (secret.get("data") or {}).values():
        try:
            text = base64.b64decode(value).decode()
        except (ValueError, UnicodeDecodeError):
            continue
        if not text.startswith("bench-"):
            continue
        parts = text.rsplit("-", 2)
        if len(parts) == 3 and parts[1].isdigit():
            return text, float(parts[1])
    return None


class Tokens:
    """What the watches saw: each target Secret's tokens, when each arrived."""

    def __init__(self) -> None:
        # (namespace, Secret name) -> [(arrived, token, its expiry)]
        self.changes: dict[tuple[str, str], list[tuple[float, str, float | None]]] = defaultdict(
            list
        )

    def on_secret(self, at: float, kind: str, obj: dict[str, Any]) -> None:
        if kind not in ("ADDED", "MODIFIED"):
            return
        found = token_in(obj)
        if found is None:
            return
        meta = obj["metadata"]
        changes = self.changes[(meta["namespace"], meta["name"])]
        if not changes or changes[-1][1] != found[0]:
            changes.append((at, *found))

    def holding(self, namespace: str, names: Iterable[str]) -> int:
        return sum(1 for name in names if self.changes.get((namespace, name)))

    def expired_seconds(
        self, namespace: str, names: list[str], began: float, ended: float
    ) -> float:
        """Seconds in [began, ended] during which the Secrets' current tokens had expired."""
        return sum(
            expired_seconds(self.changes.get((namespace, name), []), ended, since=began)
            for name in names
        )

    def expired_at(self, namespace: str, names: list[str], moments: list[float]) -> list[int]:
        """How many of ``names`` held an expired token at each moment."""
        counts = [0] * len(moments)
        for name in names:
            changes = self.changes.get((namespace, name), [])
            arrivals = [c[0] for c in changes]
            for m, moment in enumerate(moments):
                k = bisect.bisect_right(arrivals, moment) - 1
                expiry = changes[k][2] if k >= 0 else None
                if expiry is not None and expiry <= moment:
                    counts[m] += 1
        return counts


class Memory:
    """The peak RSS of a process during the peer run: its VmHWM when that was reached
    after ``Memory`` began (always, for a process started since), else the highest VmRSS
    sampled."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.hwm_before = memory_mib(pid, "VmHWM")
        self.sampled = 0.0

    def sample(self) -> None:
        self.sampled = max(self.sampled, memory_mib(self.pid))

    def peak_mib(self) -> float:
        hwm = memory_mib(self.pid, "VmHWM")
        return round(hwm if hwm > self.hwm_before else self.sampled, 1)


async def sample_memory(processes: Callable[[], list[Memory]]) -> None:
    while True:
        for process in processes():
            with contextlib.suppress(OSError, KeyError):
                process.sample()
        await asyncio.sleep(0.5)


async def wait_until(done: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll ``done`` every 0.1 s; the time it became true."""
    deadline = time.time() + timeout_s
    while not done():
        if time.time() > deadline:
            raise RuntimeError(f"{what} within {timeout_s:.0f} s")
        await asyncio.sleep(0.1)
    return time.time()


async def absent(api: BenchApi, path: str, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            await api.call("GET", path)
        except RuntimeError:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"{path} was not deleted within {timeout_s:.0f} s")


@dataclass
class Peer:
    """One run of both tools: build the sets, time the converges, watch the window. The
    fields are ``run_peer``'s arguments."""

    plane: ControlPlane
    api: BenchApi
    fake_url: str
    operator_pid: int
    audit_log: Path
    workdir: Path
    size: int = 1000
    window_s: float = 720
    converge_timeout_s: float = 900
    eso_concurrent: int = ESO_CONCURRENT
    eso_args: Sequence[str] = ESO_ARGS
    # bench/run.py's Bench, for its ProviderToken manifest and namespace helpers (one is
    # made when none is given).
    bench: Any = None

    def __post_init__(self) -> None:
        if self.bench is None:
            self.bench = _run_module().Bench(argparse.Namespace())
            self.bench.workdir.rmdir()  # empty: only the helpers are used
        self.tokens = Tokens()
        self.tasks: list[asyncio.Task[None]] = []
        self.pids = {"tokensync": self.operator_pid}
        self.memory = {"tokensync": Memory(self.operator_pid)}
        self.eso: subprocess.Popen[bytes] | None = None
        self.eso_metrics_url = ""
        self.keys: dict[str, Any] = {
            "peer_size": self.size,
            "peer_eso_version": eso.ESO_VERSION,
            "peer_eso_refresh_interval_s": REFRESH_INTERVAL_S,
            "peer_eso_concurrent": self.eso_concurrent,
            "peer_eso_args": list(self.eso_args),
            "peer_lifetimes_s": [LIFETIME_MIN_S, LIFETIME_MAX_S],
        }
        self.series: dict[str, Any] = {}

    def names(self) -> list[str]:
        return [f"t{i}-token" for i in range(self.size)]

    def processes(self) -> list[Memory]:
        return list(self.memory.values())

    def watch(self, namespace: str) -> None:
        path = f"/api/v1/namespaces/{namespace}/secrets"
        self.tasks.append(asyncio.create_task(self.api.watch(path, self.tokens.on_secret)))

    async def converge(
        self, tool: str, namespace: str, create: Callable[[int], Any], warm_up: Callable[[], Any]
    ) -> None:
        """Warm the tool up with one object (index ``size``), then time the set's converge."""
        await warm_up()
        await wait_until(
            lambda: self.tokens.holding(namespace, [f"t{self.size}-token"]) == 1,
            self.converge_timeout_s,
            f"{TOOLS[tool]} wrote no token for its warm-up object",
        )
        began = time.time()
        await self.api.bulk(list(range(self.size)), create, concurrency=48)
        names = self.names()
        ended = await wait_until(
            lambda: self.tokens.holding(namespace, names) == self.size,
            self.converge_timeout_s,
            f"{TOOLS[tool]}: not every target Secret in {namespace} held a token",
        )
        self.keys[f"peer_{tool}_converge_s"] = round(ended - began, 2)
        self.series[f"peer_{tool}_arrivals"] = sorted(
            self.tokens.changes[(namespace, name)][0][0] - began for name in names
        )

    # tokensync
    async def tokensync(self) -> None:
        others = await self.api.call(
            "GET", "/apis/tokensync.dev/v1alpha1/providertokens", params={"limit": "1"}
        )
        if others["items"]:
            count = 1 + int(others["metadata"].get("remainingItemCount") or 0)
            print(
                f"peer: the operator holds {count} other ProviderTokens; its CPU and memory "
                "in the peer figures include them",
                file=sys.stderr,
                flush=True,
            )
        await self.bench.namespace(self.api, TOKENSYNC_NAMESPACE)
        self.watch(TOKENSYNC_NAMESPACE)
        await asyncio.sleep(0.5)  # let the watch open before the first object exists
        base = f"/apis/tokensync.dev/v1alpha1/namespaces/{TOKENSYNC_NAMESPACE}/providertokens"

        async def create(index: int) -> None:
            manifest = self.bench.token_manifest(
                TOKENSYNC_NAMESPACE, index, self.fake_url, lifetime=lifetime(index)
            )
            await self.api.call("POST", base, manifest)

        async def warm_up() -> None:
            await create(self.size)

        await self.converge("tokensync", TOKENSYNC_NAMESPACE, create, warm_up)
        await self.api.call("DELETE", f"{base}/t{self.size}")
        await absent(self.api, f"{base}/t{self.size}")

    # external-secrets
    async def start_eso(self) -> None:
        binary = await asyncio.to_thread(eso.build, log=False)
        await asyncio.to_thread(eso.install_crds, self.plane)
        api = self.api
        await api.call("POST", "/api/v1/namespaces", {"metadata": {"name": ESO_SYSTEM_NAMESPACE}})
        await api.call(
            "POST",
            f"/api/v1/namespaces/{ESO_SYSTEM_NAMESPACE}/serviceaccounts",
            {"metadata": {"name": ESO_ACCOUNT}},
        )
        # Bench only: cluster-admin spares us transcribing the chart's ClusterRoles. RBAC
        # decides whether a request is allowed, not which requests ESO makes.
        await api.call(
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            {
                "metadata": {"name": ESO_BINDING},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [
                    {
                        "kind": "ServiceAccount",
                        "name": ESO_ACCOUNT,
                        "namespace": ESO_SYSTEM_NAMESPACE,
                    }
                ],
            },
        )
        kubeconfig = await asyncio.to_thread(
            self.plane.service_account_kubeconfig,
            ESO_SYSTEM_NAMESPACE,
            ESO_ACCOUNT,
            self.workdir / "eso.kubeconfig",
        )
        metrics_addr, live_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        self.eso_metrics_url = f"http://{metrics_addr}/metrics"
        log_path = self.workdir / "eso.log"
        self.eso = self.spawn_eso(binary, kubeconfig, metrics_addr, live_addr, log_path)
        self.pids["eso"] = self.eso.pid
        self.memory["eso"] = Memory(self.eso.pid)
        async with httpx.AsyncClient() as client:
            deadline = time.time() + 60
            while True:
                if self.eso.poll() is not None:
                    tail = log_path.read_text(errors="replace").splitlines()[-20:]
                    raise RuntimeError(
                        f"external-secrets exited ({self.eso.returncode}):\n" + "\n".join(tail)
                    )
                try:
                    if (await client.get(f"http://{live_addr}/healthz", timeout=1)).is_success:
                        break
                except httpx.HTTPError:
                    pass
                if time.time() > deadline:
                    raise RuntimeError(f"external-secrets not healthy within 60 s; see {log_path}")
                await asyncio.sleep(0.2)

    def spawn_eso(
        self, binary: Path, kubeconfig: Path, metrics_addr: str, live_addr: str, log_path: Path
    ) -> subprocess.Popen[bytes]:
        # Called on the event loop's thread: die_with_parent ties the child to the thread
        # that forks it, and that one lives as long as the bench.
        with log_path.open("ab") as log:
            return subprocess.Popen(
                [
                    str(binary),
                    *eso.run_args(
                        metrics_addr=metrics_addr,
                        live_addr=live_addr,
                        concurrent=self.eso_concurrent,
                        extra=self.eso_args,
                    ),
                ],
                env={**os.environ, "KUBECONFIG": str(kubeconfig)},
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )

    async def external_secrets(self) -> None:
        await self.start_eso()
        api, ns = self.api, ESO_NAMESPACE
        await api.call("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
        await api.call(
            "POST",
            f"/api/v1/namespaces/{ns}/secrets",
            eso.credentials_secret("creds", ns, "bench", "bench-secret"),
        )
        self.watch(ns)
        generators = f"/apis/{eso.GENERATORS_API}/namespaces/{ns}/webhooks"
        external = f"/apis/{eso.EXTERNAL_SECRETS_API}/namespaces/{ns}/externalsecrets"

        async def generator(index: int) -> None:
            body = urlencode(
                {
                    "grant_type": "client_credentials",
                    "n": f"{ns}-{index}",
                    "lifetime": lifetime(index),
                }
            )
            manifest = eso.webhook_generator(
                f"t{index}", ns, f"{self.fake_url}/token", "creds", body=body
            )
            await api.call("POST", generators, manifest)

        async def create(index: int) -> None:
            manifest = eso.external_secret(
                f"t{index}", ns, f"t{index}", REFRESH_INTERVAL, target=f"t{index}-token"
            )
            await api.call("POST", external, manifest)

        async def warm_up() -> None:
            await generator(self.size)
            await create(self.size)

        # The generators exist before the clock starts: they are configuration, not work.
        await api.bulk(list(range(self.size)), generator, concurrency=48)
        await self.converge("eso", ns, create, warm_up)
        await api.call("DELETE", f"{external}/t{self.size}")
        await absent(api, f"{external}/t{self.size}")

    # The window
    async def eso_writes_from_metrics(self) -> dict[str, float]:
        async with httpx.AsyncClient() as client:
            text = (await client.get(self.eso_metrics_url, timeout=5)).text
        counted: dict[str, float] = defaultdict(float)
        for labels, value in metrics(text, "rest_client_requests_total").items():
            method = dict(labels).get("method", "")
            if method in WRITE_METHODS:
                counted[method] += value
        return counted

    def audit_writes(
        self, scopes: dict[str, tuple[str, ...]], began: float, ended: float
    ) -> dict[str, dict[str, int]]:
        """Writes received in [began, ended] by each user of ``scopes``, by verb and
        resource: in the user's namespaces or none (not in namespaces of other phases)."""
        counted: dict[str, dict[str, int]] = {user: defaultdict(int) for user in scopes}
        for entry in iter_audit(self.audit_log):
            user = (entry.get("user") or {}).get("username", "")
            ref = entry.get("objectRef") or {}
            if (
                user not in scopes
                or entry.get("stage") != "ResponseComplete"
                or entry.get("verb") not in WRITE_VERBS
                or ref.get("namespace", "") not in ("", *scopes[user])
            ):
                continue
            if began <= (parse_time(entry.get("requestReceivedTimestamp")) or 0) <= ended:
                sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
                counted[user][f"{entry['verb']} {ref.get('resource', '')}{sub}"] += 1
        return {user: dict(by_verb) for user, by_verb in counted.items()}

    async def audit_flushed(self, ended: float) -> None:
        """Wait (at most 40 s) for the API server's batched audit writer to pass ``ended``."""
        deadline = time.time() + 40
        while time.time() < deadline:
            if self.audit_log.exists() and self.audit_log.stat().st_mtime > ended + 1:
                return
            await asyncio.sleep(1)

    async def window(self) -> None:
        """Both tools running: what each cost and how long its Secrets held expired tokens."""
        policy = self.audit_log.with_name("audit-policy.yaml")
        eso_audited = policy.exists() and ESO_USER in policy.read_text()
        eso_before = {} if eso_audited else await self.eso_writes_from_metrics()
        usage = Usage(self.pids)
        began = time.time()
        await asyncio.sleep(self.window_s)
        ended = time.time()
        cpu = usage.seconds()
        eso_after = {} if eso_audited else await self.eso_writes_from_metrics()
        async with httpx.AsyncClient() as client:
            log = (await client.get(self.fake_url + "/stats")).json()
        await self.audit_flushed(ended)
        tools = {
            "tokensync": (TOKENSYNC_NAMESPACE, OPERATOR_USER, TOKENSYNC_SYSTEM_NAMESPACE),
            "eso": (ESO_NAMESPACE, ESO_USER, ESO_SYSTEM_NAMESPACE),
        }
        writes = self.audit_writes(
            {user: (namespace, home) for namespace, user, home in tools.values()}, began, ended
        )
        if not eso_audited:
            writes[ESO_USER] = {m: v - eso_before.get(m, 0) for m, v in eso_after.items()}
            self.keys["peer_eso_writes_source"] = "rest_client_requests_total of external-secrets"
        hours = (ended - began) / 3600
        names = self.names()
        moments = [began + s for s in range(int(ended - began) + 1)]
        self.series["peer_expired_t"] = [m - began for m in moments]
        self.keys["peer_window_s"] = round(ended - began, 1)
        for tool, (namespace, user, _) in tools.items():
            wanted = {f"{namespace}-{i}" for i in range(self.size)}
            refreshes = sum(1 for at, n in log if n in wanted and began <= at <= ended)
            per_refresh = 1 / refreshes if refreshes else None
            expired = self.tokens.expired_seconds(namespace, names, began, ended)
            self.keys.update(
                {
                    f"peer_{tool}_expired_token_seconds": round(expired, 1),
                    f"peer_{tool}_requests_per_token_per_hour": round(
                        refreshes / self.size / hours, 1
                    ),
                    f"peer_{tool}_api_writes_per_refresh": per_refresh
                    and round(sum(writes[user].values()) * per_refresh, 2),
                    f"peer_{tool}_cpu_ms_per_refresh": per_refresh
                    and round(cpu[tool] * 1000 * per_refresh, 2),
                    f"peer_{tool}_peak_rss_mib": self.memory[tool].peak_mib(),
                    f"peer_{tool}_refreshes": refreshes,
                    f"peer_{tool}_writes_by_verb": writes[user],
                }
            )
            self.series[f"peer_{tool}_expired"] = self.tokens.expired_at(namespace, names, moments)

    # Clean-up
    async def strip_finalizers(self) -> None:
        path = f"/apis/{eso.EXTERNAL_SECRETS_API}/namespaces/{ESO_NAMESPACE}/externalsecrets"
        try:
            listed = await self.api.call("GET", path)
        except RuntimeError:
            return
        for item in listed["items"]:
            name = item["metadata"]["name"]
            await self.api.call("PATCH", f"{path}/{name}", {"metadata": {"finalizers": None}})

    async def clean_up(self) -> None:
        """Stop ESO and delete everything the run made, whatever failed before."""
        for task in self.tasks:
            task.cancel()
        errors: list[str] = []

        async def step(what: Callable[[], Any]) -> None:
            try:
                await what()
            except Exception as error:  # every step runs; the errors are reported
                errors.append(f"{type(error).__name__}: {error}")

        # ESO takes its finalizers off ExternalSecrets only while it runs: its namespace
        # goes first; without ESO, the bench takes them off.
        if self.eso is None or self.eso.poll() is not None:
            await step(self.strip_finalizers)
        await step(lambda: self.remove(ESO_NAMESPACE))
        if self.eso is not None and self.eso.poll() is None:
            self.eso.terminate()
            try:
                await asyncio.to_thread(self.eso.wait, 15)
            except subprocess.TimeoutExpired:
                self.eso.kill()
                self.eso.wait()
        await step(lambda: self.remove(TOKENSYNC_NAMESPACE))
        await step(lambda: self.remove(ESO_SYSTEM_NAMESPACE))
        binding = f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{ESO_BINDING}"
        await step(lambda: self.api.call("DELETE", binding))
        if errors:
            print("peer clean-up: " + "; ".join(errors), file=sys.stderr, flush=True)

    async def remove(self, namespace: str) -> None:
        try:
            await self.api.call("GET", f"/api/v1/namespaces/{namespace}")
        except RuntimeError:
            return
        await self.bench.remove_namespace(self.api, namespace)


async def run_peer(**settings: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both tools, the same job, one run: the ``peer_*`` keys and the series ``plot_peer``
    draws. ``settings``: the fields of ``Peer`` (``plane``, ``api``, ``fake_url``,
    ``operator_pid``, ``audit_log``, ``workdir``, ``size``, ``window_s``, ...)."""
    peer = Peer(**settings)
    peer.tasks.append(asyncio.create_task(sample_memory(peer.processes)))
    try:
        await peer.tokensync()
        await peer.external_secrets()
        await peer.window()
    finally:
        await peer.clean_up()
    return peer.keys, peer.series


BARS = [
    ("converge_s", "converge (s)"),
    ("expired_token_seconds", "expired-token seconds"),
    ("requests_per_token_per_hour", "provider requests / token / h"),
    ("api_writes_per_refresh", "API writes / refresh"),
    ("cpu_ms_per_refresh", "CPU ms / refresh"),
    ("peak_rss_mib", "peak RSS (MiB)"),
]


def plot_peer(keys: dict[str, Any], series: dict[str, Any], out: Path) -> None:
    """``out/peer.png``: six bars, tokensync against external-secrets, and a timeline of
    how many target Secrets held an expired token."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    figure = plt.figure(figsize=(11, 8))
    grid = figure.add_gridspec(3, 3)
    colours = {"tokensync": "tab:blue", "eso": "tab:orange"}
    for k, (suffix, title) in enumerate(BARS):
        axis = figure.add_subplot(grid[k // 3, k % 3])
        values = [keys.get(f"peer_{tool}_{suffix}") or 0 for tool in TOOLS]
        bars = axis.bar(list(TOOLS.values()), values, color=list(colours.values()))
        axis.bar_label(bars, fmt="%g", fontsize=8)
        axis.set_title(title, fontsize=10)
        axis.set_ylim(bottom=0, top=max(1.0, *values) * 1.15)
    axis = figure.add_subplot(grid[2, :])
    for tool, label in TOOLS.items():
        if series.get(f"peer_{tool}_expired"):
            axis.plot(
                series["peer_expired_t"],
                series[f"peer_{tool}_expired"],
                label=label,
                color=colours[tool],
            )
    axis.set_ylim(bottom=0)
    axis.set_xlabel("seconds into the window")
    axis.set_ylabel("Secrets holding an expired token")
    axis.legend()
    figure.suptitle(
        f"{keys.get('peer_size')} tokens living {LIFETIME_MIN_S}-{LIFETIME_MAX_S} s; "
        f"external-secrets {keys.get('peer_eso_version')} refreshing every "
        f"{keys.get('peer_eso_refresh_interval_s')} s; window {keys.get('peer_window_s')} s"
    )
    figure.tight_layout()
    figure.savefig(out / "peer.png", dpi=100)
    plt.close(figure)


async def _standalone(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    # ``peer``: the Bench's audit policy then records ESO_USER too.
    settings = argparse.Namespace(expires_in=300, latency=0.0, workers=32, peer=args.size)
    bench = _run_module().Bench(settings)
    plane = bench.start_cluster()
    api: BenchApi | None = None
    try:
        url = bench.start_fake()
        bench.start_operator(url.removeprefix("http://"))
        api = BenchApi(plane)
        return await run_peer(
            plane=plane,
            api=api,
            fake_url=url,
            operator_pid=bench.operator.pid,
            audit_log=bench.audit_log,
            workdir=bench.workdir,
            size=args.size,
            window_s=args.window_s,
            eso_concurrent=args.eso_concurrent,
            eso_args=ESO_ARGS if args.eso_arg is None else [a for a in args.eso_arg if a],
            bench=bench,
        )
    finally:
        if api is not None:
            await api.close()
        for process in (bench.operator, bench.fake):
            if process and process.poll() is None:
                process.kill()
        plane.stop()
        print(f"logs in {bench.workdir}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=50)
    parser.add_argument("--window-s", type=float, default=200)
    parser.add_argument("--eso-concurrent", type=int, default=ESO_CONCURRENT)
    parser.add_argument(
        "--eso-arg", action="append", help="an ESO flag instead of ESO_ARGS (repeat; '' for none)"
    )
    parser.add_argument("--out", type=Path, required=True, help="not bench/results")
    args = parser.parse_args()
    keys, series = asyncio.run(_standalone(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peer.json").write_text(json.dumps({"keys": keys, "series": series}, indent=1))
    plot_peer(keys, series, args.out)
    print(json.dumps(keys, indent=1))


if __name__ == "__main__":
    main()
