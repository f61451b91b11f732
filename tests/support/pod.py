"""A rendered Deployment's pod, run with ``docker run`` the way a kubelet would run it.

The suite's control plane has no nodes and no kubelet, so nothing ever runs a Pod. This
module reads the pod template of a rendered Deployment (``kubectl kustomize``, ``helm
template``) and translates it into ``docker run`` options: the container's args and env
exactly as rendered (fieldRefs resolved to the pod's name and namespace), its
securityContext, its emptyDir volumes, its resource limits, a ServiceAccount token
mounted where a kubelet mounts it, and the ``KUBERNETES_SERVICE_*`` variables a kubelet
sets, so that the in-cluster configuration is what the container uses.

It is strict: a field it cannot reproduce raises ``Untranslatable`` naming it, so that a
chart growing a feature fails here rather than running something other than what ships.
Fields that only steer scheduling or the API objects around the pod (no effect on the
process in the container) are listed in ``_IGNORED`` with the reason.

What differs from a node, by necessity: the container uses the host's network (a pod
gets a network namespace of its own; here everything it talks to, the API server and
the fake providers, is on the host's 127.0.0.1, and its ports are the host's), an
emptyDir is a tmpfs, and the token comes from the TokenRequest API without a pod to bind
it to.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# The address a pod's own IP resolves to here: the host's loopback (host networking).
POD_IP = "127.0.0.1"

# Pod and container fields with no effect on the process a single node runs: why each is
# safe to leave out.
_IGNORED: Mapping[str, str] = {
    "nodeSelector": "scheduling",
    "tolerations": "scheduling",
    "affinity": "scheduling",
    "topologySpreadConstraints": "scheduling",
    "priorityClassName": "scheduling and preemption",
    "imagePullSecrets": "the image is already present; nothing is pulled",
    "terminationMessagePath": "where the kubelet reads the exit message",
    "terminationMessagePolicy": "where the kubelet reads the exit message",
    "dnsPolicy": "host networking uses the host's resolver",
    "restartPolicy": "a Deployment's is Always; the test wants to see a crash, not a restart",
    "schedulerName": "scheduling",
}
_POD_FIELDS = {
    "containers",
    "serviceAccountName",
    "serviceAccount",
    "automountServiceAccountToken",
    "securityContext",
    "volumes",
    "terminationGracePeriodSeconds",
    "enableServiceLinks",
    *_IGNORED,
}
_CONTAINER_FIELDS = {
    "name",
    "image",
    "imagePullPolicy",
    "command",
    "args",
    "env",
    "ports",
    "livenessProbe",
    "readinessProbe",
    "resources",
    "securityContext",
    "volumeMounts",
    *_IGNORED,
}
_SECURITY_FIELDS = {
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "readOnlyRootFilesystem",
    "allowPrivilegeEscalation",
    "capabilities",
    "seccompProfile",
}


class Untranslatable(ValueError):
    """The pod spec asks for something this translation cannot reproduce faithfully."""


@dataclass(frozen=True)
class Probe:
    """An httpGet probe, its named port resolved to the container's port."""

    path: str
    port: int
    scheme: str = "HTTP"
    period_s: int = 10
    failure_threshold: int = 3

    def url(self, host: str = POD_IP) -> str:
        return f"{self.scheme.lower()}://{host}:{self.port}{self.path}"


@dataclass(frozen=True)
class PodSite:
    """Where the pod "runs": its name and namespace, and the API server it reaches."""

    name: str
    namespace: str
    api_host: str
    api_port: int
    # token, ca.crt and namespace, as a kubelet projects them (see ``write_service_account``).
    service_account_dir: Path
    node_name: str = "localhost"


@dataclass(frozen=True)
class ContainerRun:
    """One container of a pod, as ``docker run`` arguments."""

    container: str  # docker's name for it
    image: str
    entrypoint: str | None  # the pod's `command[0]`, if it overrides the image's
    args: tuple[str, ...]  # command[1:] and args, exactly as rendered, then any extra
    env: Mapping[str, str]  # as rendered, fieldRefs resolved, plus the kubelet's own
    options: tuple[str, ...]  # securityContext, volumes, limits, network
    ports: Mapping[str, int]
    liveness: Probe | None
    readiness: Probe | None
    run_as: tuple[int | None, int | None]  # (uid, gid) the pod asks for
    service_account: str | None  # mounted at SERVICE_ACCOUNT_DIR, or None

    def command(self) -> list[str]:
        env = [f"--env={name}={value}" for name, value in self.env.items()]
        entry = [f"--entrypoint={self.entrypoint}"] if self.entrypoint else []
        return [
            "run",
            "--detach",
            f"--name={self.container}",
            *self.options,
            *entry,
            *env,
            self.image,
            *self.args,
        ]


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def of_kind(objects: Iterable[Mapping[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [dict(o) for o in objects if o.get("kind") in kinds]


def the_deployment(objects: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    found = of_kind(objects, "Deployment")
    if len(found) != 1:
        raise Untranslatable(f"expected one Deployment in the rendering, found {len(found)}")
    return found[0]


def write_service_account(directory: Path, *, token: str, ca_pem: bytes, namespace: str) -> Path:
    """The files a kubelet projects into every pod that automounts its token."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    for name, content in (
        ("token", token.strip().encode()),
        ("ca.crt", ca_pem),
        ("namespace", namespace.encode()),
    ):
        path = directory / name
        path.write_bytes(content)
        # The kubelet's default mode (0644): readable by the container's non-root user.
        path.chmod(0o644)
    return directory


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (384Mi, 1G, 128974848) in bytes."""
    match = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(quantity))
    if not match:
        raise Untranslatable(f"memory quantity {quantity!r}")
    factor = {
        None: 1,
        "k": 10**3,
        "M": 10**6,
        "G": 10**9,
        "T": 10**12,
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
    }[match.group(2)]
    return int(float(match.group(1)) * factor)


def millicores(quantity: str | int | float) -> int:
    text = str(quantity)
    if text.endswith("m"):
        return int(text[:-1])
    return int(float(text) * 1000)


def _unknown(section: str, body: Mapping[str, Any], known: set[str]) -> None:
    extra = sorted(set(body) - known)
    if extra:
        raise Untranslatable(f"{section}: {', '.join(extra)} not translated to docker run")


def _security(pod_context: Mapping[str, Any], container_context: Mapping[str, Any]) -> list[str]:
    """The container's securityContext over the pod's, as docker options."""
    _unknown("pod securityContext", pod_context, _SECURITY_FIELDS | {"fsGroup"})
    _unknown("container securityContext", container_context, _SECURITY_FIELDS | {"privileged"})
    merged = {**pod_context, **container_context}
    options: list[str] = []
    uid, gid = merged.get("runAsUser"), merged.get("runAsGroup")
    if merged.get("runAsNonRoot") and uid in (None, 0):
        # The kubelet refuses to start it; so does this.
        raise Untranslatable("runAsNonRoot without a non-zero runAsUser")
    if uid is not None:
        options.append(f"--user={uid}" + (f":{gid}" if gid is not None else ""))
    if "fsGroup" in pod_context:
        options.append(f"--group-add={pod_context['fsGroup']}")
    if merged.get("readOnlyRootFilesystem"):
        options.append("--read-only")
    if merged.get("allowPrivilegeEscalation") is False:
        options.append("--security-opt=no-new-privileges")
    if merged.get("privileged"):
        raise Untranslatable("a privileged container")
    capabilities = merged.get("capabilities") or {}
    _unknown("capabilities", capabilities, {"drop", "add"})
    options += [f"--cap-drop={c}" for c in capabilities.get("drop") or []]
    options += [f"--cap-add={c}" for c in capabilities.get("add") or []]
    seccomp = (merged.get("seccompProfile") or {}).get("type", "RuntimeDefault")
    if seccomp == "Unconfined":
        options.append("--security-opt=seccomp=unconfined")
    elif seccomp != "RuntimeDefault":
        # RuntimeDefault is docker's default profile: nothing to add.
        raise Untranslatable(f"seccompProfile {seccomp}")
    return options


# No Service is reachable at its cluster IP here (host networking): the address only
# shapes the values, as a kubelet writes them.
SERVICE_CLUSTER_IP = "10.96.0.100"


def _service_links(services: Iterable[Mapping[str, Any]], namespace: str) -> dict[str, str]:
    """The Docker-link variables a kubelet sets for every Service of the pod's namespace
    (``<NAME>_SERVICE_HOST``, ``<NAME>_PORT=tcp://...``, ...): names a program's own
    environment variables can collide with."""
    env: dict[str, str] = {}
    for service in services:
        metadata = service.get("metadata") or {}
        ports = (service.get("spec") or {}).get("ports") or []
        if metadata.get("namespace", namespace) != namespace or not ports:
            continue
        prefix = str(metadata["name"]).upper().replace("-", "_")
        ip = SERVICE_CLUSTER_IP
        first = ports[0]
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(first["port"])
        env[f"{prefix}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
        for port in ports:
            protocol = port.get("protocol", "TCP")
            if port.get("name"):
                env[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(
                    port["port"]
                )
            link = f"{prefix}_PORT_{port['port']}_{protocol}"
            env[link] = f"{protocol.lower()}://{ip}:{port['port']}"
            env[f"{link}_PROTO"] = protocol.lower()
            env[f"{link}_PORT"] = str(port["port"])
            env[f"{link}_ADDR"] = ip
    return env


def _env(container: Mapping[str, Any], pod: PodSite, service_account: str | None) -> dict[str, str]:
    if container.get("envFrom"):
        raise Untranslatable("envFrom")
    fields = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "spec.serviceAccountName": service_account or "default",
        "spec.nodeName": pod.node_name,
        "status.podIP": POD_IP,
        "status.hostIP": POD_IP,
    }
    env: dict[str, str] = {}
    for entry in container.get("env") or []:
        name = entry["name"]
        if "valueFrom" not in entry:
            env[name] = str(entry.get("value", ""))
            continue
        source = entry["valueFrom"]
        path = (source.get("fieldRef") or {}).get("fieldPath")
        if set(source) != {"fieldRef"} or path not in fields:
            raise Untranslatable(f"env {name}: valueFrom {source}")
        env[name] = fields[path]
    return env


def _volumes(pod_spec: Mapping[str, Any], container: Mapping[str, Any]) -> list[str]:
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    options: list[str] = []
    for mount in container.get("volumeMounts") or []:
        _unknown(f"volumeMount {mount.get('name')}", mount, {"name", "mountPath", "readOnly"})
        volume = volumes.get(mount["name"])
        if volume is None or set(volume) != {"name", "emptyDir"}:
            raise Untranslatable(f"volume {mount['name']}: only emptyDir is translated")
        empty_dir = volume["emptyDir"] or {}
        # An emptyDir is a fresh directory writable by anyone in the pod: a tmpfs here.
        spec = f"type=tmpfs,destination={mount['mountPath']},tmpfs-mode=1777"
        if "sizeLimit" in empty_dir:
            spec += f",tmpfs-size={memory_bytes(empty_dir['sizeLimit'])}"
        if mount.get("readOnly"):
            spec += ",readonly"
        options.append(f"--mount={spec}")
    return options


def _resources(container: Mapping[str, Any]) -> list[str]:
    resources = container.get("resources") or {}
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    options = []
    if "memory" in limits:
        options.append(f"--memory={memory_bytes(limits['memory'])}")
    if "cpu" in limits:
        options.append(f"--cpus={millicores(limits['cpu']) / 1000}")
    if "cpu" in requests:
        # What the kubelet gives the container's cgroup for its request.
        options.append(f"--cpu-shares={max(2, millicores(requests['cpu']) * 1024 // 1000)}")
    return options


def _probe(spec: Mapping[str, Any] | None, ports: Mapping[str, int]) -> Probe | None:
    if spec is None:
        return None
    http = spec.get("httpGet")
    if http is None:
        raise Untranslatable(f"probe {spec}: only httpGet is translated")
    port = http["port"]
    if isinstance(port, str):
        if port not in ports:
            raise Untranslatable(f"probe port {port!r} names no container port")
        port = ports[port]
    return Probe(
        path=http.get("path", "/"),
        port=int(port),
        scheme=http.get("scheme", "HTTP"),
        period_s=int(spec.get("periodSeconds", 10)),
        failure_threshold=int(spec.get("failureThreshold", 3)),
    )


def translate(
    deployment: Mapping[str, Any],
    pod: PodSite,
    *,
    container: str,
    extra_args: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    services: Iterable[Mapping[str, Any]] = (),
) -> ContainerRun:
    """The Deployment's one container as ``docker run`` would start it on ``pod``.

    ``services``: the Services a kubelet would find in the pod's namespace; unless the pod
    sets ``enableServiceLinks: false``, each becomes environment variables, as it does.
    """
    spec = deployment["spec"]["template"]["spec"]
    _unknown("pod spec", spec, _POD_FIELDS)
    if len(spec["containers"]) != 1 or spec.get("initContainers"):
        raise Untranslatable("only a pod with one container is translated")
    body = spec["containers"][0]
    _unknown(f"container {body['name']}", body, _CONTAINER_FIELDS)
    if body.get("imagePullPolicy") == "Always":
        raise Untranslatable("imagePullPolicy Always: no registry is reachable here")

    service_account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    mount_token = spec.get("automountServiceAccountToken", True)
    ports = {p["name"]: int(p["containerPort"]) for p in body.get("ports") or [] if "name" in p}
    env = _env(body, pod, service_account)
    if mount_token:
        # What a kubelet adds to every container: the API server's Service address.
        env |= {
            "KUBERNETES_SERVICE_HOST": pod.api_host,
            "KUBERNETES_SERVICE_PORT": str(pod.api_port),
        }
    if spec.get("enableServiceLinks", True):
        env = _service_links(services, pod.namespace) | env
    merged_security = {**(spec.get("securityContext") or {}), **(body.get("securityContext") or {})}

    options = [
        # See the module's docstring: the host's network, its 127.0.0.1.
        "--network=host",
        f"--hostname={pod.name}",
        # The image is the one this run built; a kubelet would find it present too.
        "--pull=never",
        f"--stop-timeout={int(spec.get('terminationGracePeriodSeconds', 30))}",
        *(f"--label={k}={v}" for k, v in (labels or {}).items()),
        *_security(spec.get("securityContext") or {}, body.get("securityContext") or {}),
        *_volumes(spec, body),
        *_resources(body),
    ]
    if mount_token:
        options.append(
            f"--mount=type=bind,source={pod.service_account_dir},"
            f"destination={SERVICE_ACCOUNT_DIR},readonly"
        )
    command = list(body.get("command") or [])
    return ContainerRun(
        container=container,
        image=body["image"],
        entrypoint=command[0] if command else None,
        args=(*command[1:], *(body.get("args") or []), *extra_args),
        env=env,
        options=tuple(options),
        ports=ports,
        liveness=_probe(body.get("livenessProbe"), ports),
        readiness=_probe(body.get("readinessProbe"), ports),
        run_as=(merged_security.get("runAsUser"), merged_security.get("runAsGroup")),
        service_account=service_account if mount_token else None,
    )


@dataclass
class Rendering:
    """A rendered install: every object, and which of them the test applies for real."""

    name: str
    objects: list[dict[str, Any]] = field(default_factory=list)

    # What `kubectl apply` / `helm install` would create that a pod needs to run: its
    # namespace, the CRD, its ServiceAccount and its RBAC. Never the Deployment (no
    # kubelet would run it), nor Services, budgets or policies (nothing to select).
    APPLIED_KINDS = (
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    )

    def applied(self) -> list[dict[str, Any]]:
        return of_kind(self.objects, *self.APPLIED_KINDS)

    @property
    def deployment(self) -> dict[str, Any]:
        return the_deployment(self.objects)
