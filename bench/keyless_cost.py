"""What the keyless client proofs of issue 18 cost at scale, on the local control plane.

    .venv/bin/python bench/keyless_cost.py [--tokens 500] [--out bench/results]

Starts the local control plane (with an audit log of the operator's requests), a fast
token endpoint on loopback (this file, ``endpoint`` subcommand, its own process) and,
per mode, a fresh operator (``tokensync run``, deploy/rbac, watching that mode's
namespace only). For N ProviderTokens in each of client_secret_basic (the baseline),
service_account (a TokenRequest per mint, no credentials Secret) and tls_client_auth (one
kubernetes.io/tls Secret per ProviderToken, distinct certificates): apply to all Ready,
then a forced renewal of all (tokensync.dev/renew) to all renewed; operator CPU and RSS
(/proc), API requests per mint by verb and resource (audit log), the TokenRequests' API
server time (audit timestamps). Then revokeOnDelete: delete N ProviderTokens, time until
all are gone, revocation calls per ProviderToken. Writes bench/results/keyless.{json,md}.

The endpoint verifies what it is given, so every mint pays the real cost: a
ServiceAccount token's signature against the API server's JWKS (discovery fetched once,
then cached), its iss, aud, sub and exp; a client certificate on a TLS listener that
requires one (CERT_REQUIRED, a CA of the bench's own) whose CN is the client_id; a client
secret. All listeners are HTTPS (the baseline too), so the modes differ only by the proof.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import ipaddress
import json
import os
import platform
import re
import secrets
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx
import jwt
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "operator"), str(REPO / "dev"), str(REPO / "bench")]

from kubeclient import OPERATOR_USER, BenchApi, audit_args, read_audit  # noqa: E402
from run import parse_time, percentile  # noqa: E402

from tokensync_dev.devcluster.cluster import (  # noqa: E402
    ControlPlane,
    die_with_parent,
    free_port,
    start,
)

GROUP_PATH = "/apis/tokensync.dev/v1alpha1"
ACCOUNT = "bench-client"
AUDIENCE = "https://bench-idp.example.test/tokensync"
CLIENT_ID, CLIENT_SECRET = "bench", "bench-secret"
USERNAME, PASSWORD = "bench-user", "bench-password"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ROLE_FILE = REPO / "deploy" / "service-account-tokens" / "role.yaml"
MINTED_LINE = re.compile(r" minted \S+ provider=\S+ cause=(\w+) duration=([0-9.]+)s")
# The modes, their short prefix in the results, and their namespace.
MODES = {
    "client_secret_basic": "basic",
    "service_account": "sa",
    "tls_client_auth": "tls",
    "revoke_on_delete": "revoke",
}


# ---------------------------------------------------------------------------------------
# PKI: a CA of the bench's own, the endpoint's serving certificate, client certificates.


class Ca:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tokensync-bench-ca")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), False)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, common_name: str, *, server: bool = False) -> tuple[str, str]:
        """(certificate PEM, unencrypted key PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


# ---------------------------------------------------------------------------------------
# The token endpoint (its own process): checks every proof, logs every request.


class Refused(Exception):
    pass


class Endpoint:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.basic = "Basic " + base64.b64encode(
            f"{quote_plus(CLIENT_ID)}:{quote_plus(CLIENT_SECRET)}".encode()
        ).decode("ascii")
        # (received, n, client authentication, grant) of every token issued.
        self.issued: list[tuple[float, str, str, str]] = []
        self.refused: Counter[str] = Counter()
        # (received, n, token_type_hint) of every revocation.
        self.revocations: list[tuple[float, str, str]] = []
        self.jwks_fetches = 0
        self.assertions_verified = 0
        self.verify_cpu_s = 0.0
        self._keys: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def _fetch_keys(self) -> None:
        """The issuer's discovery document, then its JWKS, as an identity provider reads
        them: anonymously, TLS verified with the cluster CA."""
        context = ssl.create_default_context(cafile=self.args.cluster_ca)
        async with httpx.AsyncClient(verify=context, timeout=10, trust_env=False) as http:
            issuer = self.args.issuer.rstrip("/")
            document = (await http.get(issuer + "/.well-known/openid-configuration")).json()
            if document.get("issuer") != self.args.issuer:
                raise Refused("discovery names another issuer")
            keyset = jwt.PyJWKSet.from_dict((await http.get(document["jwks_uri"])).json())
        self._keys = {str(key.key_id): key for key in keyset.keys}
        self.jwks_fetches += 1

    async def _signing_key(self, kid: str) -> Any:
        if kid not in self._keys:
            async with self._lock:
                if kid not in self._keys:
                    await self._fetch_keys()
        key = self._keys.get(kid)
        if key is None:
            raise Refused("signed with a key the issuer does not publish")
        return key.key

    async def _verify_assertion(self, token: str, n: str) -> None:
        header = jwt.get_unverified_header(token)
        if header.get("alg") != "RS256":
            raise Refused("not RS256")
        key = await self._signing_key(str(header.get("kid")))
        began = time.process_time()
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=AUDIENCE,
                issuer=self.args.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as error:
            raise Refused(type(error).__name__) from None
        finally:
            self.verify_cpu_s += time.process_time() - began
        namespace = n.rsplit("-", 1)[0]
        if claims["sub"] != f"system:serviceaccount:{namespace}:{ACCOUNT}":
            raise Refused("sub")
        self.assertions_verified += 1

    async def _authenticate(self, request: web.Request, form: Any, n: str) -> str:
        transport = request.transport
        sockname = transport.get_extra_info("sockname") if transport else None
        if sockname and sockname[1] == self.args.mtls_port:
            # CERT_REQUIRED: the handshake already refused a missing or foreign certificate.
            peer = transport.get_extra_info("peercert") if transport else None
            subject = dict(pair for rdn in (peer or {}).get("subject", ()) for pair in rdn)
            if not peer or subject.get("commonName") != form.get("client_id"):
                raise Refused("client certificate subject")
            return "tls_client_auth"
        if form.get("client_assertion_type") == JWT_BEARER:
            await self._verify_assertion(str(form.get("client_assertion", "")), n)
            return "service_account"
        if request.headers.get("Authorization") == self.basic:
            return "client_secret_basic"
        raise Refused("no client authentication")

    async def token(self, request: web.Request) -> web.Response:
        received = time.time()
        form = await request.post()
        grant = str(form.get("grant_type", ""))
        n = str(form.get("n", ""))
        if grant == "refresh_token":
            n = str(form.get("refresh_token", "")).split(".")[1]
        try:
            method = await self._authenticate(request, form, n)
            if grant == "password" and (
                form.get("username") != USERNAME or form.get("password") != PASSWORD
            ):
                raise Refused("password")
            if grant not in ("client_credentials", "password", "refresh_token"):
                raise Refused(f"grant {grant}")
        except Refused as error:
            self.refused[str(error)] += 1
            return web.json_response({"error": "invalid_client"}, status=401)
        self.issued.append((received, n, method, grant))
        body: dict[str, Any] = {
            "access_token": f"at.{n}.{secrets.token_hex(12)}",
            "token_type": "Bearer",
            "expires_in": self.args.expires_in,
        }
        if grant != "client_credentials":
            body["refresh_token"] = f"rt.{n}.{secrets.token_hex(12)}"
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    async def revoke(self, request: web.Request) -> web.Response:
        received = time.time()
        form = await request.post()
        token = str(form.get("token", ""))
        parts = token.split(".")
        try:
            await self._authenticate(request, form, parts[1] if len(parts) == 3 else "")
        except Refused as error:
            self.refused[f"revoke: {error}"] += 1
            return web.json_response({"error": "invalid_client"}, status=401)
        n = parts[1] if len(parts) == 3 else "?"
        self.revocations.append((received, n, str(form.get("token_type_hint", ""))))
        return web.Response(status=200)

    async def stats(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "issued": self.issued,
                "refused": dict(self.refused),
                "revocations": self.revocations,
                "jwks_fetches": self.jwks_fetches,
                "assertions_verified": self.assertions_verified,
                "verify_cpu_s": self.verify_cpu_s,
            }
        )


async def serve(args: argparse.Namespace) -> None:
    endpoint = Endpoint(args)
    app = web.Application()
    app.router.add_post("/token", endpoint.token)
    app.router.add_post("/revoke", endpoint.revoke)
    app.router.add_get("/stats", endpoint.stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    plain = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    plain.load_cert_chain(args.server_cert, args.server_key)
    mutual = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=args.client_ca)
    mutual.load_cert_chain(args.server_cert, args.server_key)
    mutual.verify_mode = ssl.CERT_REQUIRED
    await web.TCPSite(runner, "127.0.0.1", args.port, ssl_context=plain).start()
    await web.TCPSite(runner, "127.0.0.1", args.mtls_port, ssl_context=mutual).start()
    await asyncio.Event().wait()


# ---------------------------------------------------------------------------------------
# The benchmark.


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_memory(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM")):
            values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values["VmRSS"], values["VmHWM"]


def processes() -> dict[int, tuple[str, int, float]]:
    """Every process: (short command line, parent pid, CPU seconds so far)."""
    found: dict[int, tuple[str, int, float]] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        parts = [p.decode(errors="replace") for p in cmdline[:3] if p]
        if parts:
            parts[0] = Path(parts[0]).name
        command = " ".join(parts)[:60]
        name = command or text.split("(", 1)[1].rsplit(")", 1)[0]
        found[int(stat.parent.name)] = (
            name,
            int(fields[1]),
            (int(fields[11]) + int(fields[12])) / ticks,
        )
    return found


class Watcher:
    """What the ProviderToken watch saw, per name."""

    def __init__(self) -> None:
        self.ready_at: dict[str, float] = {}
        self.renewed_at: dict[str, float] = {}
        self.deleted_at: dict[str, float] = {}
        self.renew_value: str | None = None
        self.not_ready: set[tuple[str, str]] = set()

    def on_token(self, at: float, kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if kind == "DELETED":
            self.deleted_at.setdefault(name, at)
            return
        status = obj.get("status") or {}
        conditions: list[dict[str, Any]] = status.get("conditions") or []
        ready = next((c for c in conditions if c.get("type") == "Ready"), {})
        if ready.get("status") == "True":
            self.ready_at.setdefault(name, at)
            if self.renew_value and status.get("lastRenewRequest") == self.renew_value:
                self.renewed_at.setdefault(name, at)
        elif ready.get("status") == "False":
            self.not_ready.add((name, str(ready.get("reason"))))


class Operator:
    def __init__(self, bench: Bench, namespace: str) -> None:
        self.health_port = free_port()
        self.log_path = bench.workdir / f"operator-{namespace}.log"
        self.log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tokensync",
                "run",
                "--allowed-hosts",
                "127.0.0.1",
                "--ca-file",
                str(bench.ca_file),
                "--metrics-port",
                "0",
                "--health-port",
                str(self.health_port),
                "--workers",
                str(bench.args.workers),
            ],
            env={
                **os.environ,
                "KUBECONFIG": str(bench.operator_kubeconfig),
                "PYTHONPATH": str(REPO / "operator"),
            },
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait_ready(self) -> None:
        deadline = time.time() + 60
        async with httpx.AsyncClient(trust_env=False) as http:
            while time.time() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError("the operator exited; see its log")
                try:
                    answer = await http.get(f"http://127.0.0.1:{self.health_port}/readyz")
                    if answer.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError("the operator was not ready within 60 s")

    def cpu(self) -> float:
        return proc_cpu(self.pid)

    def memory(self) -> tuple[float, float]:
        return proc_memory(self.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="tokensync-keyless-"))
        self.results: dict[str, Any] = {}
        # (mode prefix, phase) -> (start, end, mints or ProviderTokens)
        self.windows: dict[tuple[str, str], tuple[float, float, int]] = {}
        self.ca = Ca()
        self.ca_file = self.workdir / "bench-ca.crt"
        self.ca_file.write_text(self.ca.pem)
        self.client_certs: list[tuple[str, str]] = []

    # Processes -------------------------------------------------------------------------
    def start_cluster(self) -> ControlPlane:
        audit, self.audit_log = audit_args(self.workdir, max_size_mb=2000)
        plane = start(
            self.workdir / "cluster",
            crd_dir=REPO / "crds",
            extra_apiserver_args=[*audit, "--audit-log-batch-max-wait=2s"],
        )
        plane.kubectl("apply", "-k", str(REPO / "deploy" / "rbac"))
        self.operator_kubeconfig = plane.service_account_kubeconfig(
            "tokensync-system", "tokensync", self.workdir / "operator.kubeconfig"
        )
        self.component_pids = {c.name: c.pid for c in plane.components}
        return plane

    def start_endpoint(self, plane: ControlPlane) -> None:
        cert, key = self.ca.issue("127.0.0.1", server=True)
        (self.workdir / "endpoint.crt").write_text(cert)
        (self.workdir / "endpoint.key").write_text(key)
        self.port, self.mtls_port = free_port(), free_port()
        self.endpoint = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "endpoint",
                f"--port={self.port}",
                f"--mtls-port={self.mtls_port}",
                f"--server-cert={self.workdir / 'endpoint.crt'}",
                f"--server-key={self.workdir / 'endpoint.key'}",
                f"--client-ca={self.ca_file}",
                f"--issuer={plane.service_account_issuer}",
                f"--cluster-ca={plane.ca_cert}",
                f"--expires-in={self.args.expires_in}",
            ],
            preexec_fn=die_with_parent,
        )
        self.url = f"https://127.0.0.1:{self.port}"
        self.mtls_url = f"https://127.0.0.1:{self.mtls_port}"
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                httpx.get(self.url + "/stats", verify=self.client_tls(), timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the token endpoint did not start")

    def client_tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    async def endpoint_stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(verify=self.client_tls(), trust_env=False) as http:
            answer: dict[str, Any] = (await http.get(self.url + "/stats", timeout=30)).json()
            return answer

    def cpu_of(self, name: str) -> float:
        pid = self.endpoint.pid if name == "endpoint" else self.component_pids[name]
        return proc_cpu(pid)

    def others_cpu(self) -> dict[str, float]:
        return {name: self.cpu_of(name) for name in ("kube-apiserver", "etcd", "endpoint")}

    # Objects ---------------------------------------------------------------------------
    def manifest(self, mode: str, namespace: str, index: int) -> dict[str, Any]:
        oauth2: dict[str, Any] = {
            "tokenUrl": f"{self.url}/token",
            # Distinct per ProviderToken: no two share a mint (client_credentials sharing).
            "extraParams": {"n": f"{namespace}-{index}"},
        }
        spec: dict[str, Any] = {"target": {"name": f"t{index}-token"}}
        if mode == "client_secret_basic":
            spec["credentialsRef"] = {"name": "creds"}
        elif mode == "service_account":
            oauth2["clientAuth"] = "service_account"
            oauth2["serviceAccountRef"] = {"name": ACCOUNT, "audience": AUDIENCE}
        elif mode == "tls_client_auth":
            oauth2["tokenUrl"] = f"{self.mtls_url}/token"
            oauth2["clientAuth"] = "tls_client_auth"
            oauth2["clientId"] = f"{namespace}-{index}"
            oauth2["tlsSecretRef"] = {"name": f"t{index}-tls"}
        else:
            oauth2["grantType"] = "password"
            oauth2["revokeOnDelete"] = True
            oauth2["revocationUrl"] = f"{self.url}/revoke"
            spec["credentialsRef"] = {"name": "creds"}
        spec["provider"] = {"oauth2": oauth2}
        return {
            "apiVersion": "tokensync.dev/v1alpha1",
            "kind": "ProviderToken",
            "metadata": {"name": f"t{index}", "namespace": namespace},
            "spec": spec,
        }

    async def prepare(self, api: BenchApi, plane: ControlPlane, mode: str, namespace: str) -> None:
        """What the namespace's owner sets up first (not timed)."""
        await api.call("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
        if mode in ("client_secret_basic", "revoke_on_delete"):
            await api.call(
                "POST",
                f"/api/v1/namespaces/{namespace}/secrets",
                {
                    "metadata": {"name": "creds"},
                    "stringData": {
                        "clientId": CLIENT_ID,
                        "clientSecret": CLIENT_SECRET,
                        "username": USERNAME,
                        "password": PASSWORD,
                    },
                },
            )
        if mode == "service_account":
            await api.call(
                "POST",
                f"/api/v1/namespaces/{namespace}/serviceaccounts",
                {"metadata": {"name": ACCOUNT}},
            )
            # deploy/service-account-tokens/role.yaml as its owner applies it: resourceNames
            # set to the one ServiceAccount.
            documents = [d for d in yaml.safe_load_all(ROLE_FILE.read_text()) if d]
            for document in documents:
                for rule in document.get("rules") or []:
                    rule["resourceNames"] = [ACCOUNT]
            listing = {"apiVersion": "v1", "kind": "List", "items": documents}
            plane.kubectl("apply", "-n", namespace, "-f", "-", input_text=json.dumps(listing))
        if mode == "tls_client_auth":
            while len(self.client_certs) < self.args.tokens:
                self.client_certs.append(self.ca.issue(f"{namespace}-{len(self.client_certs)}"))

            async def create(index: int) -> None:
                cert, key = self.client_certs[index]
                await api.call(
                    "POST",
                    f"/api/v1/namespaces/{namespace}/secrets",
                    {
                        "metadata": {"name": f"t{index}-tls"},
                        "type": "kubernetes.io/tls",
                        "stringData": {"tls.crt": cert, "tls.key": key},
                    },
                )

            await api.bulk(list(range(self.args.tokens)), create, concurrency=32)

    async def remove_namespace(self, api: BenchApi, namespace: str) -> None:
        """The mode before, gone before the next operator starts (it watches every
        namespace): its startup lists only the next mode's objects."""
        await api.call("DELETE", f"/api/v1/namespaces/{namespace}")
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                await api.call("GET", f"/api/v1/namespaces/{namespace}")
            except RuntimeError:
                return
            await asyncio.sleep(1)
        raise RuntimeError(f"namespace {namespace} was not deleted within 300 s")

    # Phases ----------------------------------------------------------------------------
    async def wait_for(self, what: str, done: Callable[[], bool]) -> bool:
        deadline = time.time() + self.args.timeout
        while time.time() < deadline:
            if done():
                return True
            await asyncio.sleep(0.1)
        print(f"  timed out waiting for {what}", flush=True)
        return False

    async def settle(self, operator: Operator) -> float:
        """Until the operator is idle (its background Events posted): two quiet seconds."""
        previous, quiet = operator.cpu(), 0
        deadline = time.time() + 60
        while quiet < 2 and time.time() < deadline:
            await asyncio.sleep(1)
            now = operator.cpu()
            quiet = quiet + 1 if now - previous < 0.03 else 0
            previous = now
        return time.time()

    async def sample_rss(self, operator: Operator, into: list[float]) -> None:
        while operator.process.poll() is None:
            try:
                into.append(operator.memory()[0])
            except (OSError, KeyError):
                return
            await asyncio.sleep(0.5)

    def issued_between(self, stats: dict[str, Any], start: float, end: float) -> int:
        return sum(1 for received, *_ in stats["issued"] if start <= received <= end)

    async def measure(
        self,
        prefix: str,
        phase: str,
        operator: Operator,
        act: Callable[[], Any],
        done: Callable[[], bool],
        count: Callable[[float, float], Any],
    ) -> dict[str, Any]:
        """One timed phase: act, wait until done, settle; CPU of each process over it."""
        cpu0, others0 = operator.cpu(), self.others_cpu()
        began = time.time()
        started = await act()
        acted = time.time()
        converged = await self.wait_for(f"{prefix} {phase}", done)
        ended = time.time()
        rss, hwm = operator.memory()
        settled = await self.settle(operator)
        cpu1, others1 = operator.cpu(), self.others_cpu()
        units = await count(began, settled)
        self.windows[(prefix, phase)] = (began, settled, units)
        per = max(units, 1)
        figures = {
            f"{prefix}_{phase}_s": round(ended - began, 2),
            f"{prefix}_{phase}_requests_s": round(acted - began, 2),
            f"{prefix}_{phase}_converged": converged,
            f"{prefix}_{phase}_units": units,
            f"{prefix}_{phase}_operator_cpu_ms_per_unit": round((cpu1 - cpu0) / per * 1000, 2),
            f"{prefix}_{phase}_rss_mib": round(rss, 1),
            f"{prefix}_{phase}_hwm_mib": round(hwm, 1),
        }
        for name in others0:
            key = name.replace("kube-", "")
            figures[f"{prefix}_{phase}_{key}_cpu_ms_per_unit"] = round(
                (others1[name] - others0[name]) / per * 1000, 2
            )
        self.results.update(figures)
        return {"started": started}

    async def run_mode(self, api: BenchApi, plane: ControlPlane, mode: str) -> None:
        prefix, tokens = MODES[mode], self.args.tokens
        namespace = f"kl-{prefix}"
        await self.prepare(api, plane, mode, namespace)
        operator = Operator(self, namespace)
        await operator.wait_ready()
        await asyncio.sleep(2)
        idle_rss, _ = operator.memory()
        self.results[f"{prefix}_rss_idle_mib"] = round(idle_rss, 1)
        rss_series: list[float] = []
        sampler = asyncio.create_task(self.sample_rss(operator, rss_series))
        watcher = Watcher()
        base = f"{GROUP_PATH}/namespaces/{namespace}/providertokens"
        watch = asyncio.create_task(api.watch(base, watcher.on_token))
        await asyncio.sleep(0.5)
        names = [f"t{i}" for i in range(tokens)]

        async def mints(start: float, end: float) -> int:
            return self.issued_between(await self.endpoint_stats(), start, end)

        async def apply() -> list[float]:
            return await api.bulk(
                list(range(tokens)),
                lambda i: api.call("POST", base, self.manifest(mode, namespace, i)),
                concurrency=48,
            )

        try:
            applied = await self.measure(
                prefix,
                "apply",
                operator,
                apply,
                lambda: all(n in watcher.ready_at for n in names),
                mints,
            )
            latencies = [
                watcher.ready_at[f"t{i}"] - at
                for i, at in enumerate(applied["started"])
                if f"t{i}" in watcher.ready_at
            ]
            self.results[f"{prefix}_apply_ready_p50_s"] = round(percentile(latencies, 0.5), 3)
            self.results[f"{prefix}_apply_ready_p99_s"] = round(percentile(latencies, 0.99), 3)
            if mode == "revoke_on_delete":
                await self.delete_phase(api, operator, watcher, namespace, base, names)
            else:
                for round_ in range(1, self.args.renewals + 1):
                    await self.renew(api, operator, watcher, prefix, round_, base, names, mints)
            rss, hwm = operator.memory()
            self.results[f"{prefix}_rss_end_mib"] = round(rss, 1)
            self.results[f"{prefix}_rss_peak_mib"] = round(max([hwm, *rss_series]), 1)
            self.results[f"{prefix}_rss_series_max_mib"] = round(max(rss_series or [0]), 1)
            self.results[f"{prefix}_not_ready_reasons"] = dict(
                Counter(reason for _, reason in watcher.not_ready)
            )
        finally:
            watch.cancel()
            sampler.cancel()
            operator.stop()
        self.mint_durations(prefix, operator.log_path)
        stats = await self.endpoint_stats()
        self.results[f"{prefix}_endpoint_refused_total"] = dict(stats["refused"])
        if mode == "service_account":
            self.results["sa_jwks_fetches"] = stats["jwks_fetches"]
            self.results["sa_assertions_verified"] = stats["assertions_verified"]
            self.results["sa_endpoint_verify_cpu_ms_per_assertion"] = round(
                stats["verify_cpu_s"] / max(stats["assertions_verified"], 1) * 1000, 3
            )
        print(
            f"{mode}: "
            + json.dumps({k: v for k, v in self.results.items() if k.startswith(prefix + "_")}),
            flush=True,
        )

    async def renew(
        self,
        api: BenchApi,
        operator: Operator,
        watcher: Watcher,
        prefix: str,
        round_: int,
        base: str,
        names: list[str],
        mints: Callable[[float, float], Any],
    ) -> None:
        """Every ProviderToken renewed at once through tokensync.dev/renew."""
        watcher.renew_value = uuid.uuid4().hex[:12]
        watcher.renewed_at.clear()
        patch = {"metadata": {"annotations": {"tokensync.dev/renew": watcher.renew_value}}}
        await self.measure(
            prefix,
            "renew" if round_ == 1 else f"renew{round_}",
            operator,
            lambda: api.bulk(
                names, lambda n: api.call("PATCH", f"{base}/{n}", patch), concurrency=48
            ),
            lambda: all(n in watcher.renewed_at for n in names),
            mints,
        )

    def mint_durations(self, prefix: str, log: Path) -> None:
        """The operator's own 'minted ... duration=' lines: its proofs (TokenRequest,
        client certificate read) and the token endpoint's call, as it timed them."""
        durations: dict[str, list[float]] = defaultdict(list)
        for match in MINTED_LINE.finditer(log.read_text(errors="replace")):
            phase = {"Initial": "apply", "RenewRequested": "renew"}.get(match[1])
            if phase:
                durations[phase].append(float(match[2]) * 1000)
        for phase, values in durations.items():
            self.results[f"{prefix}_{phase}_mint_duration_p50_ms"] = round(
                percentile(values, 0.5), 1
            )
            self.results[f"{prefix}_{phase}_mint_duration_p99_ms"] = round(
                percentile(values, 0.99), 1
            )

    async def delete_phase(
        self,
        api: BenchApi,
        operator: Operator,
        watcher: Watcher,
        namespace: str,
        base: str,
        names: list[str],
    ) -> None:
        revocations: list[tuple[float, str, str]] = []

        async def revoked(start: float, end: float) -> int:
            stats = await self.endpoint_stats()
            revocations.extend(r for r in stats["revocations"] if start <= r[0] <= end)
            return len(names)

        await self.measure(
            "revoke",
            "delete",
            operator,
            lambda: api.bulk(names, lambda n: api.call("DELETE", f"{base}/{n}"), concurrency=48),
            lambda: all(n in watcher.deleted_at for n in names),
            revoked,
        )
        per_token = Counter(n for _, n, _ in revocations)
        events = await api.call("GET", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events")
        reasons = Counter(
            e.get("reason")
            for e in events.get("items", [])
            if e.get("reason") in ("Revoked", "RevocationFailed", "RevocationAbandoned")
        )
        expected = {f"{namespace}-{i}" for i in range(len(names))}
        self.results.update(
            {
                "revoke_calls_total": len(revocations),
                "revoke_calls_per_token": round(len(revocations) / len(names), 3),
                "revoke_calls_by_hint": dict(Counter(hint for *_, hint in revocations)),
                "revoke_tokens_without_two_calls": sum(
                    1 for n in expected if per_token.get(n, 0) != 2
                ),
                "revoke_events": dict(reasons),
            }
        )

    # Audit -----------------------------------------------------------------------------
    def analyse_audit(self) -> None:
        by_window: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        token_requests: list[float] = []
        for entry in read_audit(self.audit_log):
            if (
                entry.get("user", {}).get("username") != OPERATOR_USER
                or entry.get("stage") != "ResponseComplete"
            ):
                continue
            ref = entry.get("objectRef") or {}
            if ref.get("resource"):
                name = f"{entry['verb']} {ref['resource']}" + (
                    f"/{ref['subresource']}" if ref.get("subresource") else ""
                )
            else:  # a non-resource URL: its path
                name = f"{entry['verb']} {entry.get('requestURI', '').split('?')[0]}"
            received = parse_time(entry.get("requestReceivedTimestamp")) or 0.0
            if name == "create serviceaccounts/token":
                completed = parse_time(entry.get("stageTimestamp")) or received
                token_requests.append((completed - received) * 1000)
            for key, (opened, closed, _) in self.windows.items():
                if opened <= received <= closed:
                    by_window[key][name] += 1
        for (prefix, phase), (_, _, units) in self.windows.items():
            counted = by_window.get((prefix, phase), Counter())
            self.results[f"{prefix}_{phase}_api_requests_per_unit"] = {
                name: round(value / max(units, 1), 3) for name, value in sorted(counted.items())
            }
        self.results.update(
            {
                "sa_tokenrequest_count": len(token_requests),
                "sa_tokenrequest_audit_p50_ms": round(percentile(token_requests, 0.5), 2),
                "sa_tokenrequest_audit_p99_ms": round(percentile(token_requests, 0.99), 2),
                "sa_tokenrequest_audit_max_ms": round(max(token_requests), 2)
                if token_requests
                else None,
            }
        )

    # What a new certificate's pool costs, in this process (the operator's own code) ----
    async def pool_cost(self) -> None:
        from tokensync import client_certificates, endpoints

        count = max(self.args.pool_certificates, 2 * client_certificates.MAX_POOLS)
        while len(self.client_certs) < count:
            self.client_certs.append(self.ca.issue(f"pool-{len(self.client_certs)}"))
        certificates = [
            client_certificates.ClientCertificate(c, k) for c, k in self.client_certs[:count]
        ]
        http = endpoints.HttpClient(endpoints.EndpointPolicy(), ca_file=str(self.ca_file))
        bound = client_certificates.MAX_POOLS
        rss0 = proc_memory(os.getpid())[0]
        began = time.process_time()
        for certificate in certificates[:bound]:
            await http._client_for(certificate)
        filled = time.process_time()
        rss1 = proc_memory(os.getpid())[0]
        for certificate in certificates[bound:]:
            await http._client_for(certificate)
        beyond = time.process_time()
        rss2 = proc_memory(os.getpid())[0]
        await http.close()
        reps = 50
        began_ctx = time.process_time()
        for _ in range(reps):
            client_certificates.trust_context(str(self.ca_file))
        context_cost = (time.process_time() - began_ctx) / reps
        context = client_certificates.trust_context(str(self.ca_file))
        began_load = time.process_time()
        for certificate in certificates[:reps]:
            client_certificates.load(context, certificate)
        load_cost = (time.process_time() - began_load) / reps
        self.results.update(
            {
                "tls_pool_bound": bound,
                "tls_new_pool_cpu_ms": round((filled - began) / bound * 1000, 2),
                "tls_new_pool_with_eviction_cpu_ms": round(
                    (beyond - filled) / (count - bound) * 1000, 2
                ),
                "tls_pool_context_cpu_ms": round(context_cost * 1000, 2),
                "tls_pool_load_cert_chain_cpu_ms": round(load_cost * 1000, 3),
                "tls_pool_rss_kib_each_up_to_bound": round((rss1 - rss0) * 1024 / bound, 1),
                "tls_pool_rss_growth_beyond_bound_mib": round(rss2 - rss1, 1),
                "tls_pool_microbench_certificates": count,
            }
        )

    async def run(self) -> None:
        began = time.time()
        neighbours = Neighbours()
        following = asyncio.create_task(neighbours.follow())
        load_start = os.getloadavg()
        plane = self.start_cluster()
        self.start_endpoint(plane)
        api = BenchApi(plane)
        try:
            for number, mode in enumerate(self.args.modes):
                if number:
                    await self.remove_namespace(api, f"kl-{MODES[self.args.modes[number - 1]]}")
                await self.run_mode(api, plane, mode)
        finally:
            await api.close()
            following.cancel()
            neighbours.sample()
            if self.endpoint.poll() is None:
                self.endpoint.kill()
            plane.stop()
        self.analyse_audit()
        await self.pool_cost()
        self.results["run_s"] = round(time.time() - began, 1)
        self.results["load_average_start"] = [round(v, 2) for v in load_start]
        self.results["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
        self.results["other_processes_cpu_s"] = neighbours.used()
        self.results["machine"] = {
            "cores": os.cpu_count(),
            "memory_gib": round(
                os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
            ),
            "python": platform.python_version(),
            "platform": platform.platform(),
        }
        self.results["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.results["parameters"] = {
            "tokens": self.args.tokens,
            "modes": self.args.modes,
            "workers": self.args.workers,
            "renewals": self.args.renewals,
            "expires_in": self.args.expires_in,
        }


class Neighbours:
    """What else ran on the machine: CPU seconds of every process that is neither the
    bench nor one of its descendants, from /proc every 2 s (one that lived less is
    missed)."""

    def __init__(self) -> None:
        self.first = processes()
        self.last = dict(self.first)
        self.ours = {os.getpid()}

    def sample(self) -> None:
        now = processes()
        changed = True
        while changed:
            changed = False
            for pid, (_, parent, _) in now.items():
                if parent in self.ours and pid not in self.ours:
                    self.ours.add(pid)
                    changed = True
        self.last.update(now)

    async def follow(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(2)

    def used(self) -> dict[str, float]:
        spent: defaultdict[str, float] = defaultdict(float)
        for pid, (name, _, cpu) in self.last.items():
            if pid in self.ours:
                continue
            used = cpu - (self.first[pid][2] if pid in self.first else 0.0)
            if used >= 1.0:
                spent[name] += used
        largest = sorted(spent.items(), key=lambda item: -item[1])[:8]
        return {name: round(cpu, 1) for name, cpu in largest}


# ---------------------------------------------------------------------------------------
# Report.

LABELS = {
    "basic": "client_secret_basic",
    "sa": "service_account",
    "tls": "tls_client_auth",
    "revoke": "password grant, revokeOnDelete",
}


PER_MODE = [
    (
        "apply_s",
        "apply N to all Ready (s)",
        "first create sent to the last Ready=True on the watch",
    ),
    ("apply_ready_p99_s", "create to Ready, p99 (s)", "per ProviderToken"),
    (
        "renew_s",
        "forced renewal of all (s)",
        "first tokensync.dev/renew patch sent to the last Ready=True with that lastRenewRequest",
    ),
    ("renew2_s", "second forced renewal (s)", "the same, again"),
    (
        "apply_operator_cpu_ms_per_unit",
        "operator CPU per first mint (ms)",
        "/proc utime+stime of the operator from the first create until idle, / tokens issued",
    ),
    (
        "renew_operator_cpu_ms_per_unit",
        "operator CPU per renewal mint (ms)",
        "the same over the first forced renewal",
    ),
    (
        "renew2_operator_cpu_ms_per_unit",
        "operator CPU per renewal mint, 2nd round (ms)",
        "the same over the second",
    ),
    (
        "renew_mint_duration_p50_ms",
        "one renewal mint as the operator timed it, p50 (ms), both rounds",
        "its log's duration= (proofs obtained + the endpoint's call), wall time, "
        "32 workers at once",
    ),
    ("renew_mint_duration_p99_ms", "the same, p99 (ms)", ""),
    (
        "renew_apiserver_cpu_ms_per_unit",
        "kube-apiserver CPU per renewal mint (ms)",
        "/proc of kube-apiserver over the first renewal (it signs the TokenRequests)",
    ),
    (
        "renew_etcd_cpu_ms_per_unit",
        "etcd CPU per renewal mint (ms)",
        "/proc of etcd, the same window",
    ),
    (
        "renew_endpoint_cpu_ms_per_unit",
        "token endpoint CPU per renewal mint (ms)",
        "/proc of the endpoint process (TLS handshakes, JWT verification)",
    ),
    ("rss_idle_mib", "operator RSS at start (MiB)", "VmRSS once ready, before any ProviderToken"),
    ("apply_rss_mib", "operator RSS, all Ready (MiB)", "VmRSS when the last was Ready"),
    ("renew_rss_mib", "operator RSS, 1st renewal done (MiB)", "VmRSS"),
    ("renew2_rss_mib", "operator RSS, 2nd renewal done (MiB)", "VmRSS"),
    ("rss_peak_mib", "operator peak RSS (MiB)", "max of VmHWM and 0.5 s samples of VmRSS"),
]

SINGLE = [
    (
        "sa_tokenrequest_audit_p50_ms",
        "TokenRequest in the API server, p50 (ms)",
        "audit requestReceivedTimestamp to stageTimestamp (ResponseComplete) of the "
        "operator's create serviceaccounts/token, every one of the run",
    ),
    ("sa_tokenrequest_audit_p99_ms", "TokenRequest in the API server, p99 (ms)", "the same"),
    ("sa_tokenrequest_audit_max_ms", "TokenRequest in the API server, max (ms)", "the same"),
    ("sa_tokenrequest_count", "TokenRequests audited", "= service_account mints"),
    (
        "sa_endpoint_verify_cpu_ms_per_assertion",
        "endpoint: RS256 verification per assertion (ms CPU)",
        "process_time around jwt.decode with the cached JWKS key",
    ),
    ("sa_jwks_fetches", "endpoint: JWKS fetches", "discovery + JWKS once, then cached"),
    (
        "tls_pool_bound",
        "per-certificate connection pools kept",
        "client_certificates.MAX_POOLS",
    ),
    (
        "tls_new_pool_cpu_ms",
        "CPU to build one certificate's pool (ms)",
        "HttpClient._client_for with a new certificate (its TLS context built in a thread), "
        "bench process, no connection made",
    ),
    (
        "tls_pool_context_cpu_ms",
        "of which: a fresh TLS context (ms)",
        "client_certificates.trust_context: the system CA directory looked up lazily (or the "
        "whole bundle where the directory lacks some of its CAs) + the --ca-file",
    ),
    (
        "tls_pool_load_cert_chain_cpu_ms",
        "of which: loading the certificate via memfd (ms)",
        "client_certificates.load",
    ),
    (
        "tls_pool_rss_kib_each_up_to_bound",
        "RSS per pool, up to the bound (KiB)",
        "VmRSS growth of the bench process over the first 64 pools / 64",
    ),
    (
        "tls_pool_rss_growth_beyond_bound_mib",
        "RSS growth past the bound (MiB)",
        "VmRSS growth while as many pools again are made (the oldest closed)",
    ),
    (
        "revoke_delete_s",
        "revokeOnDelete: delete N to all gone (s)",
        "first DELETE sent to the last DELETED on the watch",
    ),
    (
        "revoke_calls_per_token",
        "revocation calls per ProviderToken",
        "the endpoint's /revoke log over the deletion (refresh token, then access token)",
    ),
    (
        "revoke_tokens_without_two_calls",
        "ProviderTokens not revoked exactly twice",
        "per ProviderToken, by the index its tokens carry",
    ),
    (
        "revoke_delete_operator_cpu_ms_per_unit",
        "operator CPU per deletion (ms)",
        "/proc of the operator from the first DELETE until idle, / N",
    ),
]


def mode_table(results: dict[str, Any]) -> list[str]:
    prefixes = [p for p in LABELS if f"{p}_apply_s" in results]
    lines = [
        "| figure | " + " | ".join(LABELS[p] for p in prefixes) + " | how |",
        "|---|" + "---|" * (len(prefixes) + 1),
    ]
    for suffix, what, how in PER_MODE:
        if not any(f"{p}_{suffix}" in results for p in prefixes):
            continue
        cells = [str(results.get(f"{p}_{suffix}", "n/a")) for p in prefixes]
        lines.append(f"| {what} (`*_{suffix}`) | " + " | ".join(cells) + f" | {how} |")
    return lines


def single_table(results: dict[str, Any]) -> list[str]:
    return [
        "| figure | measured | how |",
        "|---|---|---|",
        *(
            f"| {what} (`{key}`) | {results[key]} | {how} |"
            for key, what, how in SINGLE
            if key in results
        ),
    ]


def requests_table(results: dict[str, Any], phase: str) -> list[str]:
    prefixes = [
        p
        for p in ("basic", "sa", "tls", "revoke")
        if f"{p}_{phase}_api_requests_per_unit" in results
    ]
    names = sorted({n for p in prefixes for n in results[f"{p}_{phase}_api_requests_per_unit"]})
    lines = [
        "| request | " + " | ".join(LABELS[p] for p in prefixes) + " |",
        "|---|" + "---|" * len(prefixes),
    ]
    for name in names:
        cells = [str(results[f"{p}_{phase}_api_requests_per_unit"].get(name, 0)) for p in prefixes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "keyless.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    machine = results["machine"]
    others = results.get("other_processes_cpu_s") or {}
    busy = (
        "; ".join(f"`{name}` {cpu} s" for name, cpu in others.items())
        if others
        else "nothing measurable"
    )
    lines = [
        f"# Keyless client proofs at scale (issue 18), {results['date']}",
        "",
        f"`.venv/bin/python bench/keyless_cost.py --tokens {results['parameters']['tokens']}` "
        f"({results['run_s']} s). {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"Python {machine['python']} ({machine['platform']}). Operator: `tokensync run "
        f"--workers {results['parameters']['workers']}` (every namespace), a fresh process "
        "per mode (the mode before deleted first), as ServiceAccount "
        "tokensync-system/tokensync with deploy/rbac (and, for "
        "service_account, deploy/service-account-tokens/role.yaml applied in the namespace "
        "with resourceNames [bench-client]).",
        "",
        "Other work on the machine during the run (CPU seconds, 1 s or more, of processes "
        f"neither the bench nor its children, sampled every 2 s): {busy}. "
        f"Load average at start {results['load_average_start']}, at end "
        f"{results['load_average_end']}.",
        "",
        f"N = {results['parameters']['tokens']} ProviderTokens per mode (revokeOnDelete: "
        "password grant, client_secret_basic, a refresh token and an access token each):",
        "",
        *mode_table(results),
        "",
        *single_table(results),
        "",
        "API requests of the operator per renewal mint (audit log, ResponseComplete, "
        "requests received from the first renew patch until the operator was idle):",
        "",
        *requests_table(results, "renew"),
        "",
        "Per first mint (apply to idle; includes the first read of each Secret and the "
        "finalizer write of revokeOnDelete):",
        "",
        *requests_table(results, "apply"),
        "",
    ]
    bound = results.get("tls_pool_bound")
    if bound and results["parameters"]["tokens"] > bound and "tls_apply_s" in results:
        lines += [
            f"tls_client_auth with N > {bound}: the operator keeps the {bound} most recently "
            "used per-certificate pools, and a renewal of every ProviderToken uses the "
            f"certificates in turn, so no mint finds its pool: each one builds a pool "
            f"(`tls_new_pool_cpu_ms`, nearly all of it `ssl.create_default_context()` "
            "reading the system CA bundle, on the event loop) and opens a new mutual-TLS "
            f"connection. The operator's RSS over {2 * results['parameters']['tokens']} "
            "such pool builds (the two renewals): "
            f"{results.get('tls_apply_rss_mib')} MiB all Ready, "
            f"{results.get('tls_renew_rss_mib')} after the first, "
            f"{results.get('tls_renew2_rss_mib')} after the second.",
            "",
        ]
    if "revoke_delete_api_requests_per_unit" in results:
        lines += [
            "Per deleted ProviderToken (revokeOnDelete): "
            + ", ".join(
                f"{name} {value}"
                for name, value in results["revoke_delete_api_requests_per_unit"].items()
            )
            + f". Events: {results.get('revoke_events')}; calls by hint: "
            f"{results.get('revoke_calls_by_hint')}.",
            "",
        ]
    lines += [
        "How measured: the local control plane of tokensync_dev.devcluster (etcd, "
        "kube-apiserver with an audit log of the operator's requests, kube-controller-manager) "
        "and a token endpoint in its own process (this file's `endpoint`), all on loopback "
        "and HTTPS. The endpoint checks every proof: the ServiceAccount token's RS256 "
        "signature against the API server's JWKS (discovery and JWKS fetched once, then "
        "cached), iss, aud, sub and exp; for tls_client_auth a listener with CERT_REQUIRED "
        "and the bench's CA, the certificate's CN equal to the client_id; the Basic "
        "credentials. Each ProviderToken has its own extraParams so no two share a mint, "
        "and tokens last an hour so nothing renews on its own. A phase's CPU runs from its "
        "first request until the operator has used under 30 ms CPU in each of two seconds "
        "(its Events posted); units are the tokens the endpoint issued in that window "
        "(ProviderTokens for the deletion). The pool figures come from the operator's own "
        "HttpClient driven in the bench process after the cluster stopped. The operator "
        "watches every namespace, as bench/run.py runs it: with `--namespace` and "
        "deploy/rbac (no list on namespaces) kopf retried listing namespaces for about "
        "54 s before its first watch (a trial run of this bench), while /readyz already "
        "answered 200, which would have been timed as every mode's apply.",
        "",
    ]
    (out / "keyless.md").write_text("\n".join(lines))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "endpoint":
        parser = argparse.ArgumentParser(prog="keyless_cost.py endpoint")
        for name in ("server-cert", "server-key", "client-ca", "issuer", "cluster-ca"):
            parser.add_argument(f"--{name}", required=True)
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--mtls-port", type=int, required=True)
        parser.add_argument("--expires-in", type=int, default=3600)
        asyncio.run(serve(parser.parse_args(sys.argv[2:])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tokens", type=int, default=500, help="ProviderTokens per mode")
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma-separated, from: " + ", ".join(MODES),
    )
    parser.add_argument("--renewals", type=int, default=2, help="forced renewal rounds")
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--expires-in", type=int, default=3600)
    parser.add_argument("--timeout", type=float, default=300, help="per phase (s)")
    parser.add_argument("--pool-certificates", type=int, default=256)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    args.modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        parser.error(f"unknown modes: {', '.join(unknown)}")
    bench = Bench(args)
    asyncio.run(bench.run())
    write(bench.results, args.out)
    print(f"results in {args.out}")


if __name__ == "__main__":
    main()
