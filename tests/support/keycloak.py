"""A real Keycloak for the integration suite: fetched once per version, one server per run.

The distribution is downloaded from Maven Central, checked against its published SHA-1,
extracted and augmented (``kc.sh build``) once into ``~/.cache/tokensync/keycloak/<version>``
under the same file lock family as the control-plane binaries. Every run then starts
``kc.sh start --optimized`` from that read-only copy with a home directory of its own (its
``data/``) and an in-memory database, so runs never see each other's realms.

Why ``start --optimized`` and not ``start-dev``: a dev-mode server cannot be pre-built
(``kc.sh build`` refuses the dev profile), and its implicit augmentation on first start
writes into the shared distribution while another run may be reading it. A production-mode
build done once under the lock gives the same warm start (about 11 s on two cores) without
that race. Clustering is switched off (``--cache=local``): its JGroups ports are fixed and
would collide between concurrent runs.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import glob
import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from support.waiting import wait_for
from tokensync_dev.devcluster import pki
from tokensync_dev.devcluster.build import _build_lock, cache_root
from tokensync_dev.devcluster.cluster import die_with_parent, free_port

KEYCLOAK_VERSION = "26.7.3"
_DIST_URL = (
    "https://repo1.maven.org/maven2/org/keycloak/keycloak-quarkus-dist/"
    f"{KEYCLOAK_VERSION}/keycloak-quarkus-dist-{KEYCLOAK_VERSION}.tar.gz"
)
_DIST_SHA1 = "4ff244668809213a1c91ad2505390287203029d0"
MIN_JAVA = 21
# Build-time options: `start --optimized` refuses to run unless they match the build.
_BUILD_OPTIONS = ("--db=dev-mem",)
_BUILT_MARKER = ".tokensync-built"
_READY_TIMEOUT_S = 180.0
_STOP_GRACE_S = 20.0

# Saved by default in Keycloak are only some event types (REFRESH_TOKEN is not among them):
# the tests count exactly these, so every realm stores exactly these.
EVENT_TYPES = (
    "LOGIN",
    "LOGIN_ERROR",
    "REFRESH_TOKEN",
    "REFRESH_TOKEN_ERROR",
    "CLIENT_LOGIN",
    "CLIENT_LOGIN_ERROR",
    "TOKEN_EXCHANGE",
    "TOKEN_EXCHANGE_ERROR",
    "LOGOUT",
)


class KeycloakError(RuntimeError):
    """Keycloak could not be fetched, built or started; the message says what was seen."""


# --- Java -------------------------------------------------------------------------------

_JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


def java_major(java: Path) -> int | None:
    """The feature release of a ``java`` binary (8 for "1.8.0"), or None if it will not say."""
    try:
        result = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _JAVA_VERSION.search(result.stderr + result.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def java_candidates(env: Mapping[str, str]) -> list[tuple[str, Path]]:
    """Where a JVM may be, in order of preference: JAVA_HOME, PATH, /usr/lib/jvm."""
    found: list[tuple[str, Path]] = []
    if env.get("JAVA_HOME"):
        found.append(("JAVA_HOME", Path(env["JAVA_HOME"]) / "bin" / "java"))
    on_path = shutil.which("java", path=env.get("PATH"))
    if on_path:
        found.append(("PATH", Path(on_path)))
    found += [("/usr/lib/jvm", Path(p)) for p in sorted(glob.glob("/usr/lib/jvm/*/bin/java"))]
    return found


def find_java(env: Mapping[str, str] | None = None) -> Path:
    """The first JVM of release 21 or later; a loud failure naming every one looked at."""
    looked: list[str] = []
    for origin, java in java_candidates(os.environ if env is None else env):
        major = java_major(java) if java.is_file() else None
        if major is not None and major >= MIN_JAVA:
            return java
        looked.append(f"{java} ({origin}): {major if major is not None else 'not runnable'}")
    raise KeycloakError(
        f"Keycloak {KEYCLOAK_VERSION} needs Java {MIN_JAVA}+; looked at "
        + ("; ".join(looked) or "JAVA_HOME (unset), PATH (no java), /usr/lib/jvm/*/bin/java")
    )


# --- The distribution, cached by version --------------------------------------------------


def version_dir() -> Path:
    return cache_root() / "keycloak" / KEYCLOAK_VERSION


def dist_dir() -> Path:
    return version_dir() / "dist"


def _marker() -> str:
    return " ".join(_BUILD_OPTIONS) + "\n"


def _download(url: str, target: Path, sha1: str) -> None:
    """Stream ``url`` into ``target`` only if its SHA-1 matches; a torn download leaves no file."""
    partial = target.with_name(f"{target.name}.part-{os.getpid()}")
    digest = hashlib.sha1(usedforsecurity=False)
    try:
        with (
            httpx.stream("GET", url, follow_redirects=True, timeout=120) as response,
            partial.open("wb") as sink,
        ):
            response.raise_for_status()
            for chunk in response.iter_bytes(1 << 20):
                digest.update(chunk)
                sink.write(chunk)
        if digest.hexdigest() != sha1:
            raise KeycloakError(f"{url}: SHA-1 {digest.hexdigest()}, expected {sha1}")
        partial.rename(target)
    finally:
        partial.unlink(missing_ok=True)


def ensure_dist(java: Path) -> tuple[Path, bool]:
    """The extracted and built distribution, and whether this call had to make it.

    Every step writes under a temporary name and renames, and the marker comes last: a run
    interrupted at any point leaves either nothing or something the next run redoes.
    """
    dist = dist_dir()
    if (dist / _BUILT_MARKER).is_file() and (dist / _BUILT_MARKER).read_text() == _marker():
        return dist, False
    home = version_dir()
    home.mkdir(parents=True, exist_ok=True)
    with _build_lock(f"keycloak-{KEYCLOAK_VERSION}"):
        if (dist / _BUILT_MARKER).is_file() and (dist / _BUILT_MARKER).read_text() == _marker():
            return dist, False  # another run finished it while this one waited
        if not (dist / "bin" / "kc.sh").is_file():
            tarball = home / f"keycloak-{KEYCLOAK_VERSION}.tar.gz"
            _download(_DIST_URL, tarball, _DIST_SHA1)
            staging = home / f"extract.tmp-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            try:
                with tarfile.open(tarball) as archive:
                    archive.extractall(staging, filter="data")
                shutil.rmtree(dist, ignore_errors=True)
                (staging / f"keycloak-{KEYCLOAK_VERSION}").rename(dist)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
                tarball.unlink(missing_ok=True)
        log = home / "build.log"
        with log.open("wb") as sink:
            built = subprocess.run(
                [str(dist / "bin" / "kc.sh"), "build", *_BUILD_OPTIONS],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env={**os.environ, "JAVA_HOME": str(java.parent.parent), "JAVA": str(java)},
                preexec_fn=die_with_parent,
                timeout=600,
                check=False,
            )
        if built.returncode != 0:
            raise KeycloakError(f"kc.sh build failed ({built.returncode}):\n{_tail(log)}")
        marker = dist / f"{_BUILT_MARKER}.tmp"
        marker.write_text(_marker())
        marker.rename(dist / _BUILT_MARKER)
    return dist, True


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} unreadable)"


# --- One server --------------------------------------------------------------------------


@dataclass(frozen=True)
class KeycloakPlan:
    """Everything the operator must know before Keycloak runs: ports and the CA to trust.

    Made up front (cheap) so the suite's one operator can be started with Keycloak allowed,
    whether or not a test ever starts Keycloak.
    """

    workdir: Path
    http_port: int
    https_port: int
    ca_cert: Path
    cert: Path
    key: Path
    admin_username: str = "tokensync-admin"
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    # CA certificates (PEM) Keycloak trusts for its own outgoing HTTPS, on top of the JDK's:
    # a Kubernetes identity provider fetches the API server's discovery document and JWKS.
    # Keycloak reads them once, at boot (its truststore SPI has no reload): each file must
    # exist before ``start``.
    trust: tuple[Path, ...] = ()

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def hosts(self) -> tuple[str, str]:
        return f"127.0.0.1:{self.http_port}", f"127.0.0.1:{self.https_port}"


def plan(workdir: Path, *, trust: Iterable[Path] = ()) -> KeycloakPlan:
    """Ports and a CA of Keycloak's own; ``trust``: CAs it must trust (see KeycloakPlan)."""
    # The devcluster CA's serving certificate names 127.0.0.1: Keycloak serves it as is.
    certs = pki.generate(workdir / "pki")
    return KeycloakPlan(
        workdir=workdir,
        http_port=free_port(),
        https_port=free_port(),
        ca_cert=certs.ca_cert,
        cert=certs.serving_cert,
        key=certs.serving_key,
        trust=tuple(trust),
    )


# kc.sh runs java as its child, not by exec: a parent-death signal set on kc.sh alone would
# leave the JVM running after the test process dies. Passed as $JAVA, this wrapper sets the
# signal on the JVM too, tied to kc.sh (whose pid kc.sh passes as -Dkc.script.pid).
_JAVA_WRAPPER = """#!{python}
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
parent = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("-Dkc.script.pid=")), "")
if parent and str(os.getppid()) != parent:
    sys.exit("kc.sh is gone")
os.execv({java!r}, [{java!r}, *sys.argv[1:]])
"""


class KeycloakServer:
    def __init__(self, plan: KeycloakPlan, dist: Path, java: Path) -> None:
        self.plan = plan
        self.dist = dist
        self.java = java
        self.log = plan.workdir / "keycloak.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        home = self.plan.workdir / "home"
        home.mkdir(parents=True, exist_ok=True)
        # The distribution stays read-only: only data/ (transaction logs, temp files) is
        # written at run time, and it goes to this run's own home.
        for part in ("bin", "lib", "conf", "themes", "providers"):
            link = home / part
            if not link.is_symlink():
                link.symlink_to(self.dist / part)
        (home / "data").mkdir(exist_ok=True)
        wrapper = self.plan.workdir / "java"
        wrapper.write_text(_JAVA_WRAPPER.format(python=sys.executable, java=str(self.java)))
        wrapper.chmod(0o755)
        env = {
            **os.environ,
            "JAVA": str(wrapper),
            "JAVA_HOME": str(self.java.parent.parent),
            "KC_BOOTSTRAP_ADMIN_USERNAME": self.plan.admin_username,
            "KC_BOOTSTRAP_ADMIN_PASSWORD": self.plan.admin_password,
        }
        args = [
            str(self.dist / "bin" / "kc.sh"),
            "start",
            "--optimized",
            f"-Dkc.home.dir={home}",
            "--cache=local",
            "--http-enabled=true",
            "--http-host=127.0.0.1",
            f"--http-port={self.plan.http_port}",
            f"--https-port={self.plan.https_port}",
            f"--https-certificate-file={self.plan.cert}",
            f"--https-certificate-key-file={self.plan.key}",
            # Issuers follow the URL asked (http or https): each test knows which it used.
            "--hostname-strict=false",
        ]
        if self.plan.trust:
            missing = [str(path) for path in self.plan.trust if not path.is_file()]
            if missing:
                raise KeycloakError(f"CA files to trust do not exist: {', '.join(missing)}")
            # A runtime option (no rebuild); the JDK's own CAs stay trusted too.
            args.append("--truststore-paths=" + ",".join(str(p) for p in self.plan.trust))
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.plan.workdir,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log, lines)

    def _ready(self) -> bool:
        if not self.alive():
            code = self.process.returncode if self.process else None
            raise KeycloakError(f"Keycloak exited ({code}) before it was ready:\n{self.log_tail()}")
        try:
            answer = httpx.get(
                f"{self.plan.http_url}/realms/master/.well-known/openid-configuration", timeout=2
            )
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    def wait_ready(self, timeout_s: float = _READY_TIMEOUT_S) -> None:
        try:
            wait_for(self._ready, timeout_s=timeout_s, what="Keycloak to serve", interval_s=0.2)
        except AssertionError as error:
            raise KeycloakError(f"{error}\n{self.log_tail()}") from None

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        # kc.sh forwards SIGTERM to the JVM and waits for it; the group kill is the backstop.
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=_STOP_GRACE_S)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@dataclass
class StartTimes:
    """Seconds spent, for the report: fetching and building (0 when cached), then booting."""

    cold: bool = False
    prepare_s: float = 0.0
    boot_s: float = 0.0


class BackgroundKeycloak:
    """Fetches, builds and starts Keycloak in a thread of its own, while other tests run.

    The thread lives until ``stop``: a parent-death signal fires when the *thread* that
    forked a child ends, so the thread that starts Keycloak must outlive it.
    """

    def __init__(self, plan: KeycloakPlan) -> None:
        self.plan = plan
        self.times = StartTimes()
        self._server: KeycloakServer | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keycloak", daemon=True)

    def start(self) -> BackgroundKeycloak:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            began = time.monotonic()
            java = find_java()
            dist, self.times.cold = ensure_dist(java)
            booting = time.monotonic()
            self.times.prepare_s = booting - began
            self._server = KeycloakServer(self.plan, dist, java)
            self._server.start()
            self._server.wait_ready()
            self.times.boot_s = time.monotonic() - booting
        except BaseException as error:  # reported to the test that waits, not lost here
            self._error = error
        finally:
            self._ready.set()
        self._stop.wait()
        if self._server is not None:
            self._server.stop()

    def result(self, timeout_s: float = 600.0) -> KeycloakServer:
        if not self._ready.wait(timeout_s):
            raise KeycloakError(f"Keycloak not ready after {timeout_s}s")
        if self._error is not None:
            raise KeycloakError(f"Keycloak did not start: {self._error}") from self._error
        assert self._server is not None
        return self._server

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=_STOP_GRACE_S + 10)


# --- Admin REST client --------------------------------------------------------------------


class KeycloakAdmin:
    """The admin REST API, as the tests need it: realms, clients, users, sessions, events."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url
        self._username = username
        self._password = password
        self._http = httpx.Client(base_url=base_url, timeout=30)
        self._token = ""
        self._token_until = 0.0

    def close(self) -> None:
        self._http.close()

    def _headers(self) -> dict[str, str]:
        # The master realm's tokens live 60 s; a long test outlives several.
        if time.monotonic() >= self._token_until:
            answer = self._http.post(
                "/realms/master/protocol/openid-connect/token",
                data={
                    "grant_type": "password",
                    "client_id": "admin-cli",
                    "username": self._username,
                    "password": self._password,
                },
            )
            answer.raise_for_status()
            body = answer.json()
            self._token = body["access_token"]
            self._token_until = time.monotonic() + float(body["expires_in"]) / 2
        return {"Authorization": f"Bearer {self._token}"}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        answer = self._http.request(
            method, f"/admin/realms{path}", headers=self._headers(), **kwargs
        )
        if answer.is_error:
            raise KeycloakError(f"{method} {path}: {answer.status_code} {answer.text[:500]}")
        return answer

    def _created_id(self, answer: httpx.Response) -> str:
        return answer.headers["Location"].rstrip("/").rsplit("/", 1)[-1]

    def create_realm(
        self,
        realm: str,
        *,
        access_token_lifespan_s: int,
        single_use_refresh_tokens: bool = True,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.request(
            "POST",
            "",
            json={
                "realm": realm,
                "enabled": True,
                "accessTokenLifespan": access_token_lifespan_s,
                "revokeRefreshToken": single_use_refresh_tokens,
                "refreshTokenMaxReuse": 0,
                "eventsEnabled": True,
                "enabledEventTypes": list(EVENT_TYPES),
                "eventsExpiration": 3600,
                **(extra or {}),
            },
        )

    def create_client(self, realm: str, representation: Mapping[str, Any]) -> str:
        """Create a client; returns its internal id."""
        answer = self.request("POST", f"/{realm}/clients", json=dict(representation))
        return self._created_id(answer)

    def public_client(self, realm: str, client_id: str) -> str:
        return self.create_client(
            realm,
            {
                "clientId": client_id,
                "publicClient": True,
                "directAccessGrantsEnabled": True,
                "standardFlowEnabled": False,
            },
        )

    def confidential_client(
        self,
        realm: str,
        client_id: str,
        *,
        service_account: bool = False,
        direct_access: bool = False,
        authenticator: str = "client-secret",
        attributes: Mapping[str, str] | None = None,
    ) -> str:
        return self.create_client(
            realm,
            {
                "clientId": client_id,
                "publicClient": False,
                "clientAuthenticatorType": authenticator,
                "serviceAccountsEnabled": service_account,
                "directAccessGrantsEnabled": direct_access,
                "standardFlowEnabled": False,
                "attributes": dict(attributes or {}),
            },
        )

    def kubernetes_identity_provider(self, realm: str, alias: str, issuer: str) -> None:
        """A Kubernetes cluster as an identity provider whose ServiceAccount tokens clients
        may present as their assertion (Keycloak's federated client authentication).

        ``issuer`` is the cluster's ``--service-account-issuer``: Keycloak matches it against
        the assertion's ``iss`` and fetches ``<issuer>/.well-known/openid-configuration``,
        then its ``jwks_uri``, over HTTPS it must trust (``KeycloakPlan.trust``), without
        credentials: the cluster must let anyone read both documents. A realm holds one
        client-assertion identity provider per issuer. The two features this needs,
        ``client-auth-federated`` and ``kubernetes-service-accounts``, are on by default in
        Keycloak 26.7.3 (``Profile.Feature`` type DEFAULT): no ``--features``, no rebuild.
        """
        self.request(
            "POST",
            f"/{realm}/identity-provider/instances",
            json={
                "alias": alias,
                "providerId": "kubernetes",
                "enabled": True,
                "config": {"issuer": issuer},
            },
        )

    def federated_client(
        self,
        realm: str,
        client_id: str,
        *,
        identity_provider: str,
        subject: str,
        attributes: Mapping[str, str] | None = None,
    ) -> str:
        """A confidential client with a service account that authenticates with a JWT from
        ``identity_provider`` (its alias) whose ``sub`` is ``subject`` (for a Kubernetes
        ServiceAccount: ``system:serviceaccount:NS:NAME``). Keycloak finds the client by these two
        attributes, so the request need not name it; a ``client_id`` sent must match.
        """
        return self.confidential_client(
            realm,
            client_id,
            service_account=True,
            authenticator="federated-jwt",
            attributes={
                "jwt.credential.issuer": identity_provider,
                "jwt.credential.sub": subject,
                **(attributes or {}),
            },
        )

    def client_secret(self, realm: str, client_uuid: str) -> str:
        value: str = self.request("GET", f"/{realm}/clients/{client_uuid}/client-secret").json()[
            "value"
        ]
        return value

    def audience_mapper(self, realm: str, client_uuid: str, audience: str) -> None:
        """Put ``audience`` into the access tokens the client gets (Keycloak leaves it out)."""
        self.request(
            "POST",
            f"/{realm}/clients/{client_uuid}/protocol-mappers/models",
            json={
                "name": f"audience-{audience}",
                "protocol": "openid-connect",
                "protocolMapper": "oidc-audience-mapper",
                "config": {
                    "included.custom.audience": audience,
                    "access.token.claim": "true",
                    "id.token.claim": "false",
                    "introspection.token.claim": "true",
                },
            },
        )

    def create_user(self, realm: str, username: str, password: str) -> str:
        # A user without names or a verified e-mail is "not fully set up" for Keycloak 26's
        # default user profile, and the password grant refuses it.
        answer = self.request(
            "POST",
            f"/{realm}/users",
            json={
                "username": username,
                "enabled": True,
                "email": f"{uuid.uuid4().hex[:12]}@example.test",
                "emailVerified": True,
                "firstName": "Test",
                "lastName": "Device",
                "credentials": [{"type": "password", "value": password, "temporary": False}],
            },
        )
        return self._created_id(answer)

    def reset_password(self, realm: str, user_id: str, password: str) -> None:
        self.request(
            "PUT",
            f"/{realm}/users/{user_id}/reset-password",
            json={"type": "password", "value": password, "temporary": False},
        )

    def logout_user(self, realm: str, user_id: str) -> None:
        self.request("POST", f"/{realm}/users/{user_id}/logout")

    def events(
        self,
        realm: str,
        *,
        types: Iterable[str] = EVENT_TYPES,
        user_id: str | None = None,
        client_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """The realm's stored events, oldest first (Keycloak answers newest first)."""
        params: list[tuple[str, str]] = [("type", t) for t in types]
        params.append(("max", "10000"))
        if user_id:
            params.append(("user", user_id))
        if client_id:
            params.append(("client", client_id))
        events: list[dict[str, Any]] = self.request(
            "GET", f"/{quote(realm)}/events", params=params
        ).json()
        return sorted(events, key=lambda e: int(e["time"]))


# --- Tokens ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientKey:
    """An RSA key pair and the self-signed certificate Keycloak checks assertions with."""

    private_pem: str = field(repr=False)
    certificate_b64: str

    @staticmethod
    def generate(client_id: str) -> ClientKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, client_id)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        der = certificate.public_bytes(serialization.Encoding.DER)
        return ClientKey(private_pem=pem, certificate_b64=base64.b64encode(der).decode())


class JwksVerifier:
    """Checks a token the way a resource server would: signature, issuer, audience, expiry."""

    def __init__(self, http_base_url: str) -> None:
        # JWKS are fetched over plain HTTP: the keys are the same whatever scheme issued.
        self._base = http_base_url
        self._keys: dict[tuple[str, str], jwt.PyJWK] = {}

    def _key(self, realm: str, kid: str) -> jwt.PyJWK:
        if (realm, kid) not in self._keys:
            answer = httpx.get(f"{self._base}/realms/{realm}/protocol/openid-connect/certs")
            answer.raise_for_status()
            for entry in answer.json()["keys"]:
                if entry.get("use", "sig") == "sig":
                    self._keys[(realm, entry["kid"])] = jwt.PyJWK(entry)
        return self._keys[(realm, kid)]

    def verify(self, token: str, *, realm: str, issuer: str, audience: str) -> dict[str, Any]:
        header = jwt.get_unverified_header(token)
        key = self._key(realm, str(header["kid"]))
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[str(header["alg"])],
            audience=audience,
            issuer=issuer,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
        return claims


def event_counts(events: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(
        (
            "LOGIN",
            "REFRESH_TOKEN",
            "REFRESH_TOKEN_ERROR",
            "CLIENT_LOGIN",
            "TOKEN_EXCHANGE",
            "LOGIN_ERROR",
        ),
        0,
    )
    for event in events:
        if event["type"] in counts:
            counts[event["type"]] += 1
    return counts


@contextlib.contextmanager
def running(plan: KeycloakPlan) -> Iterator[KeycloakServer]:
    """Start in the foreground (for scripts and experiments); the suite uses the background."""
    background = BackgroundKeycloak(plan).start()
    try:
        yield background.result()
    finally:
        background.stop()
