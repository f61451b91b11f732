"""The operator's image, built from the Dockerfile and run as the shipped Deployments run it.

Nothing else in the suite runs the image. Here it is built once per session (on a
STAND-IN for the python base image when, as on our machines, no registry is reachable:
hack/image/standin-base.sh, docs/decisions/0006-image.md), and each rendering of the
Deployment (``kubectl kustomize deploy/``, ``helm template``) is run with ``docker run``
the way a kubelet would run its pod (tests/support/pod.py): args, env, securityContext,
volumes and limits as rendered, the rendering's own ServiceAccount and RBAC applied to
the suite's API server, its token mounted where a kubelet mounts it, the in-cluster
configuration in use. The only difference in what the operator is told: it may reach the
suite's fake provider on 127.0.0.1 (plain http), given as extra args to the kustomize
rendering (which has no knob for it) and as the chart's own values to the helm one.

The suite's own operator steps aside while an image runs: two operators would write at
once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from fakes.oauth2_server import FakeOAuth2Server
from support.cluster import REPO
from support.docker import BuiltImage, Docker, build_image, docker_engine
from support.objects import Cluster, provider_token
from support.operator import OperatorProcess
from support.pod import (
    ContainerRun,
    PodSite,
    Probe,
    Rendering,
    documents,
    of_kind,
    translate,
    write_service_account,
)
from support.waiting import wait_for
from tokensync_dev.devcluster.build import helm_binary
from tokensync_dev.devcluster.cluster import free_port

# Cold, the session's first test also pays for the stand-in base (debootstrap) and the
# build; each step has its own deadline (support/docker.py), this is the backstop.
pytestmark = pytest.mark.timeout(1200)

IMAGE_TAG = "tokensync:image-test"
CHART = REPO / "deploy" / "helm" / "tokensync"
HELM_RELEASE = "tokensync-helm"  # its own ServiceAccount and RBAC, not deploy/rbac's
NAMESPACE = "tokensync-system"
LABEL = "dev.tokensync.test"
LEASE = "tokensync-leader"


# The engine and the image: once per session.


@pytest.fixture(scope="session")
def docker() -> Iterator[Docker]:
    """The environment's engine, or a private dockerd started here and stopped at the end.

    No Docker is a failure with the reason, never a skip: CI installs it (`make tools`).
    """
    with docker_engine() as engine:
        try:
            yield engine
        finally:
            leftovers = engine.run("ps", "-aq", "--filter", f"label={LABEL}", check=False)
            for container in leftovers.stdout.split():
                engine.run("rm", "-f", container, check=False)


@pytest.fixture(scope="session")
def image(docker: Docker, tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    log = tmp_path_factory.mktemp("image") / "build.log"
    built = build_image(docker, IMAGE_TAG, log=log)
    # Older builds of ours (the tag moved on): dangling, never used again.
    docker.run(
        "image",
        "prune",
        "--force",
        "--filter",
        "label=org.opencontainers.image.title=tokensync",
        check=False,
    )
    base = (
        f"a STAND-IN for {built.base} (hack/image/standin-base.sh: Debian's python3, not "
        "the official image)"
        if built.stand_in
        else built.base
    )
    print(
        f"\nimage {built.tag}: {built.size / 1e6:.1f} MB, built in {built.seconds:.0f} s on "
        f"{base}; build log {log}"
    )
    return built


# Renderings, applied as an install would, but for the Deployment.


def kustomize(cluster: Cluster) -> Rendering:
    return Rendering(
        "kustomize", documents(cluster.plane.kubectl("kustomize", str(REPO / "deploy")))
    )


def helm(*values: str, name: str = "helm") -> Rendering:
    result = subprocess.run(
        [
            str(helm_binary()),
            "template",
            HELM_RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            # `helm install` applies the chart's crds/ too.
            "--include-crds",
            *values,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return Rendering(name, documents(result.stdout))


def install(cluster: Cluster, rendering: Rendering) -> None:
    """Namespace, CRD, ServiceAccount and RBAC of the rendering, applied for real."""
    namespace = rendering.deployment["metadata"]["namespace"]
    objects = rendering.applied()
    if not any(o["kind"] == "Namespace" for o in objects):
        # As `helm install --create-namespace` does.
        objects.insert(
            0, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        )
    cluster.apply({"apiVersion": "v1", "kind": "List", "items": objects})


def provider_access(oauth2_server: FakeOAuth2Server) -> list[str]:
    """What the chart is told so that the operator may call the fake on 127.0.0.1."""
    return ["--set", f"allowedHosts={{{oauth2_server.host}}}", "--set", "allowInsecureHttp=true"]


# A pod, run.

_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes uses in generated names


def pod_name(deployment: dict[str, Any]) -> str:
    """<deployment>-<template hash>-<random>, as a ReplicaSet names its pods."""
    digest = hashlib.sha256(json.dumps(deployment["spec"]["template"]).encode()).digest()
    template = "".join(_HASH_ALPHABET[b % len(_HASH_ALPHABET)] for b in digest[:10])
    suffix = "".join(secrets.choice(_HASH_ALPHABET) for _ in range(5))
    return f"{deployment['metadata']['name']}-{template}-{suffix}"


@dataclass
class Pod:
    docker: Docker
    run: ContainerRun
    site: PodSite

    @property
    def name(self) -> str:
        return self.site.name

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.docker.inspect("container", self.run.container)["State"]
        return state

    def logs(self) -> str:
        result = self.docker.run("logs", self.run.container, check=False)
        return result.stdout + result.stderr

    def probe(self, probe: Probe | None) -> tuple[int, str]:
        """What a kubelet's httpGet probe would get: (status, body), or (0, "") for none."""
        assert probe is not None, "the manifest declares this probe"
        try:
            answer = httpx.get(probe.url(), timeout=2)
        except httpx.HTTPError:
            return 0, ""
        return answer.status_code, answer.text

    def exec(self, *command: str) -> str:
        return self.docker.run("exec", self.run.container, *command).stdout.strip()


@contextlib.contextmanager
def running(
    docker: Docker,
    cluster: Cluster,
    image: BuiltImage,
    rendering: Rendering,
    workdir: Path,
    logs_dir: Path,
    *,
    extra_args: Sequence[str] = (),
) -> Iterator[Pod]:
    deployment = rendering.deployment
    namespace = deployment["metadata"]["namespace"]
    name = pod_name(deployment)
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    # The token a kubelet would project: the TokenRequest API, for the rendering's account.
    token = cluster.plane.kubectl("create", "token", account, "-n", namespace)
    api = urlsplit(cluster.plane.server)
    site = PodSite(
        name=name,
        namespace=namespace,
        api_host=str(api.hostname),
        api_port=int(api.port or 443),
        service_account_dir=write_service_account(
            workdir / name / "serviceaccount",
            token=token,
            ca_pem=cluster.plane.ca_cert.read_bytes(),
            namespace=namespace,
        ),
    )
    run = translate(
        deployment,
        site,
        container=f"tokensync-test-{name}",
        extra_args=extra_args,
        labels={LABEL: "image"},
        services=of_kind(rendering.objects, "Service"),
    )
    # The image the manifest names is this build (imagePullPolicy IfNotPresent: present).
    docker.run("tag", image.tag, run.image)
    docker.run(*run.command())
    pod = Pod(docker, run, site)
    try:
        yield pod
    finally:
        # For the suite's last word on leaks and RBAC (test_zz_no_secret_leaks.py).
        (logs_dir / f"image-{rendering.name}-{name}.log").write_text(pod.logs())
        docker.run("rm", "--force", run.container, check=False)
        # Only the tag: on a developer's own engine, leave no image under the shipped name.
        docker.run("image", "rm", run.image, check=False)


@pytest.fixture
def suite_operator_aside(operator: OperatorProcess) -> Iterator[None]:
    """The suite's operator stops while an image runs, and starts again after."""
    operator.stop()
    try:
        yield
    finally:
        operator.start()


@pytest.fixture
def token_namespace(cluster: Cluster) -> Iterator[str]:
    namespace = cluster.namespace("image")
    try:
        yield namespace
    finally:
        # Before the suite's operator is back: it must not inherit a 30 s rotation.
        cluster.core.delete_namespace(namespace)


def ready_and_running(pod: Pod) -> bool:
    status, _ = pod.probe(pod.run.readiness)
    if not pod.state()["Running"]:
        raise AssertionError(f"the container exited: {pod.state()}\n{pod.logs()}")
    return status == 200


def assert_clean_logs(pod: Pod, client_secret: str, issued: Sequence[str]) -> None:
    logs = pod.logs()
    assert "minted" in logs, logs
    # A bool, so that a failure does not print the secret it found.
    secret_logged = client_secret in logs
    assert not secret_logged, f"the client secret is in docker logs of {pod.name}"
    leaked = [token[:6] + "…" for token in issued if token in logs]
    assert not leaked, f"tokens in docker logs of {pod.name}: {leaked}"
    assert "Traceback" not in logs, logs
    # The rendering's own RBAC was enough: nothing the operator asked for was refused.
    assert "forbidden" not in logs.lower(), logs


def lease_holder(cluster: Cluster, namespace: str) -> str | None:
    out = cluster.plane.kubectl("get", "lease", LEASE, "-n", namespace, "-o", "json", check=False)
    try:
        return str(json.loads(out)["spec"].get("holderIdentity") or "") or None
    except (ValueError, KeyError):
        return None


# The image itself.


def test_the_image_is_lean_and_its_user_has_no_passwd_entry(
    docker: Docker, image: BuiltImage
) -> None:
    config = docker.inspect("image", image.tag)["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["tokensync"] and config["Cmd"] == ["run"]
    assert "POD_ID" not in " ".join(config.get("Env") or [])

    # What made kopf crash (getpass.getuser() under 65532): the base has no such user,
    # like the official slim image. Without this the run tests below would prove nothing.
    lookup = docker.run(
        "run",
        "--rm",
        "--entrypoint",
        "python",
        image.tag,
        "-c",
        "import pwd; pwd.getpwuid(65532)",
        check=False,
    )
    assert lookup.returncode != 0 and "uid not found: 65532" in lookup.stderr, lookup.stderr

    # No pip, setuptools or wheel: not in the venv, not importable from the base's
    # site-packages, not on PATH. No development tooling (tokensync_dev, the devcluster).
    check = """
import importlib.util, json, os, shutil, subprocess, sys
probe = ("import importlib.util, json; print(json.dumps(sorted(m for m in "
         "('pip', 'setuptools', 'wheel', 'pkg_resources', '_distutils_hack') "
         "if importlib.util.find_spec(m))))")
base = os.path.realpath(sys.executable)  # the venv's python links to the base's
print(json.dumps({
    "venv": json.loads(subprocess.check_output([sys.executable, "-c", probe])),
    "base": json.loads(subprocess.check_output([base, "-c", probe])),
    "base_python": base,
    "on_path": sorted(n for n in ("pip", "pip3", "pip3.11", "wheel", "easy_install")
                      if shutil.which(n)),
    "dev": sorted(m for m in ("tokensync_dev", "tokensync.devcluster")
                  if importlib.util.find_spec(m)),
}))
"""
    found = json.loads(
        docker.run("run", "--rm", "--entrypoint", "python", image.tag, "-c", check).stdout
    )
    assert found["venv"] == [] and found["base"] == [] and found["on_path"] == [], found
    assert found["dev"] == [], found
    sizes = docker.run(
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        image.tag,
        "-c",
        "du -sk /opt/tokensync/lib/python3.11/site-packages/* | sort -rn | head -12",
    ).stdout
    print(f"\nfinal stage, base python {found['base_python']}; largest in the venv (KiB):")
    print(sizes)


def test_with_no_cluster_it_stops_at_once_with_one_line(docker: Docker, image: BuiltImage) -> None:
    """No kubeconfig, no ServiceAccount mount, no KUBERNETES_SERVICE_HOST: one line, exit 1."""
    started = time.monotonic()
    result = docker.run("run", "--rm", image.tag, "run", check=False, timeout_s=60)
    took = time.monotonic() - started
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 1, output
    assert took < 20, f"took {took:.1f}s"
    assert "Traceback" not in output and "KeyError" not in output, output
    lines = output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tokensync: error: "), output


# The renderings, run.


@pytest.mark.parametrize("renderer", ["kustomize", "helm"])
def test_the_rendered_pod_runs_mints_and_rotates(
    renderer: str,
    docker: Docker,
    image: BuiltImage,
    cluster: Cluster,
    oauth2_server: FakeOAuth2Server,
    operator_logs_dir: Path,
    suite_operator_aside: None,
    token_namespace: str,
    tmp_path: Path,
) -> None:
    if renderer == "kustomize":
        rendering = kustomize(cluster)
        # The kustomize base has no knob for endpoints: extra args, after the rendered ones.
        extra = ["--allowed-hosts", oauth2_server.host, "--allow-insecure-http"]
    else:
        rendering = helm(*provider_access(oauth2_server))
        extra = []
    install(cluster, rendering)
    deployment = rendering.deployment
    container = deployment["spec"]["template"]["spec"]["containers"][0]

    with running(
        docker, cluster, image, rendering, tmp_path, operator_logs_dir, extra_args=extra
    ) as pod:
        # The translation: exactly what the manifest says, and the kubelet's additions.
        assert list(pod.run.args) == [*container["args"], *extra]
        field_values = {"metadata.name": pod.name, "metadata.namespace": NAMESPACE}
        for entry in container.get("env") or []:
            source = entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            expected = field_values[source] if source else entry.get("value", "")
            assert pod.run.env[entry["name"]] == expected, entry
        rendered_env = {e["name"] for e in container.get("env") or []}
        assert set(pod.run.env) - rendered_env == {
            "KUBERNETES_SERVICE_HOST",
            "KUBERNETES_SERVICE_PORT",
        }
        assert "POD_ID" not in pod.run.env, "the operator names itself to kopf, not POD_ID"
        for option in (
            "--user=65532:65532",
            "--read-only",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            "--mount=type=tmpfs,destination=/tmp,tmpfs-mode=1777",
        ):
            assert option in pod.run.options, pod.run.options
        named = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe, declared in (
            (pod.run.liveness, container["livenessProbe"]),
            (pod.run.readiness, container["readinessProbe"]),
        ):
            assert probe is not None
            assert probe.path == declared["httpGet"]["path"]
            assert probe.port == named[declared["httpGet"]["port"]]

        wait_for(lambda: ready_and_running(pod), timeout_s=60, what=f"{pod.name} ready")
        started_at = pod.state()["StartedAt"]
        assert pod.probe(pod.run.liveness) == (200, "ok")
        assert pod.probe(pod.run.readiness) == (200, "ok: leading")
        assert pod.exec("id", "-u") == "65532"
        names = {line.split("=", 1)[0] for line in pod.exec("env").splitlines()}
        assert "POD_ID" not in names and "KUBERNETES_SERVICE_HOST" in names

        # A token, minted by the image against the fake provider, then rotated.
        client_id = f"image-{renderer}-{uuid.uuid4().hex[:6]}"
        client_secret = f"image-secret-{uuid.uuid4().hex}"
        oauth2_server.add_client(client_id, client_secret, expires_in=30)
        cluster.credentials(
            token_namespace, "creds", {"clientId": client_id, "clientSecret": client_secret}
        )
        cluster.apply(
            provider_token(
                "api",
                namespace=token_namespace,
                provider={"oauth2": {"tokenUrl": oauth2_server.token_url}},
                credentials="creds",
                target="api-token",
            )
        )
        cluster.wait_ready(token_namespace, "api", timeout_s=60)
        first = oauth2_server.issued_to(client_id)[0].value
        assert cluster.secret_value(token_namespace, "api-token") == first

        # Renewed before the 30 s are up: a second token lands in the Secret.
        second = wait_for(
            lambda: (
                (issued := oauth2_server.issued_to(client_id))
                and len(issued) >= 2
                and cluster.secret_value(token_namespace, "api-token") == issued[-1].value
                and issued[-1].value
            ),
            timeout_s=60,
            what="the token to rotate in the Secret",
        )
        assert second != first

        state = pod.state()
        assert state["Running"] and state["StartedAt"] == started_at, state
        assert not state["OOMKilled"]
        assert_clean_logs(pod, client_secret, [i.value for i in oauth2_server.issued_to(client_id)])


def test_two_replicas_one_leads_and_the_other_takes_over(
    docker: Docker,
    image: BuiltImage,
    cluster: Cluster,
    oauth2_server: FakeOAuth2Server,
    operator_logs_dir: Path,
    suite_operator_aside: None,
    token_namespace: str,
    tmp_path: Path,
) -> None:
    """The chart with replicaCount=2: one Lease holder mints; killed, the other takes over.

    On a node each pod has its own network namespace; here both share the host's, so
    they cannot both bind the chart's ports. The second replica comes from the same
    chart rendered with other `metrics.port` / `health.port` values: the Deployments
    differ in those ports only (checked), and each replica's probes use its own.
    """
    common = ["--set", "replicaCount=2", *provider_access(oauth2_server)]
    first_rendering = helm(*common, name="helm-ha")
    other_ports = ["--set", f"metrics.port={free_port()}", "--set", f"health.port={free_port()}"]
    second_rendering = helm(*common, *other_ports, name="helm-ha")
    assert (
        "--leader-election"
        in first_rendering.deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    assert without_ports(first_rendering.deployment) == without_ports(second_rendering.deployment)
    install(cluster, first_rendering)

    with contextlib.ExitStack() as stack:
        pods = [
            stack.enter_context(
                running(docker, cluster, image, rendering, tmp_path, operator_logs_dir)
            )
            for rendering in (first_rendering, second_rendering)
        ]
        assert pods[0].name != pods[1].name
        for pod in pods:
            assert pod.run.env["TOKENSYNC_IDENTITY"] == pod.name
            assert "POD_ID" not in pod.run.env

        # Both ready (a standby that is not would stall rolling updates and drains), one
        # leading, and it is the Lease's holder.
        wait_for(
            lambda: (
                sorted(p.probe(p.run.readiness) for p in pods)
                == [(200, "ok: leading"), (200, "ok: standby")]
            ),
            timeout_s=60,
            what="one ready leader and one ready standby",
        )
        leader = next(p for p in pods if p.probe(p.run.readiness)[1] == "ok: leading")
        standby = next(p for p in pods if p is not leader)
        assert lease_holder(cluster, NAMESPACE) == leader.name

        client_id = f"image-ha-{uuid.uuid4().hex[:6]}"
        client_secret = f"image-ha-secret-{uuid.uuid4().hex}"
        oauth2_server.add_client(client_id, client_secret, expires_in=600)
        cluster.credentials(
            token_namespace, "creds", {"clientId": client_id, "clientSecret": client_secret}
        )
        provider = {"oauth2": {"tokenUrl": oauth2_server.token_url}}
        for name in ("first", "second"):
            if name == "second":
                killed = time.monotonic()
                docker.run("kill", leader.run.container)
                wait_for(
                    lambda: lease_holder(cluster, NAMESPACE) == standby.name,
                    timeout_s=45,
                    what="the standby to take the Lease",
                    interval_s=0.25,
                )
                handover = time.monotonic() - killed
                # A 15 s Lease, renewed every 5 s: taken within the Lease and a renewal.
                assert handover < 30, f"handover took {handover:.1f}s"
                print(f"\nhandover after docker kill: {handover:.1f}s")
                # The Lease is written a moment before the new leader hears back.
                wait_for(
                    lambda: standby.probe(standby.run.readiness) == (200, "ok: leading"),
                    timeout_s=10,
                    what="the new leader to say so",
                )
            cluster.apply(
                provider_token(
                    name,
                    namespace=token_namespace,
                    provider=provider,
                    credentials="creds",
                    target=f"{name}-token",
                )
            )
            cluster.wait_ready(token_namespace, name, timeout_s=60)

        issued = [i.value for i in oauth2_server.issued_to(client_id)]
        # One token each: the new leader did not mint the valid first token again.
        assert len(issued) == 2, issued
        assert cluster.secret_value(token_namespace, "first-token") == issued[0]
        assert cluster.secret_value(token_namespace, "second-token") == issued[1]
        assert f"minted {token_namespace}/first " in leader.logs()
        assert f"minted {token_namespace}/first " not in standby.logs()
        assert f"minted {token_namespace}/second " in standby.logs()
        assert standby.state()["Running"]
        for pod in pods:
            assert_clean_logs(pod, client_secret, issued)


def without_ports(deployment: dict[str, Any]) -> dict[str, Any]:
    """The Deployment with its metrics and health ports blanked out, to compare two."""
    copy: dict[str, Any] = json.loads(json.dumps(deployment))
    container = copy["spec"]["template"]["spec"]["containers"][0]
    container["args"] = [
        a for a in container["args"] if not a.startswith(("--metrics-port=", "--health-port="))
    ]
    for port in container["ports"]:
        port["containerPort"] = 0
    return copy
