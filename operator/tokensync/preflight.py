"""What must hold before the operator starts, checked once, each failure one line.

A mistake in the install (no kubeconfig, an API server out of reach, the CRD or an RBAC
verb missing) would otherwise surface as a traceback inside kopf, or as a process that
stays up, retries in its logs and never works. Here each becomes a ``StartupError``:
``tokensync run`` prints its message as one line and exits non-zero, so a pod
crash-loops with the reason in ``kubectl logs --previous``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml
from kubernetes.client import Configuration

from tokensync import names
from tokensync.config import OperatorConfig
from tokensync.kube import ApiError, KubeApi, load_configuration

logger = logging.getLogger(__name__)

_ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
_SELF_REVIEWS = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
# The API server must answer this fast; a pod that waits longer is better restarted.
PREFLIGHT_TIMEOUT_S = 5.0
_REVIEWS_IN_FLIGHT = 8


class StartupError(Exception):
    """A mistake in the install or the environment: its message is the one line shown."""


@dataclass(frozen=True)
class Permission:
    """One verb the operator needs; ``namespace`` None means in every namespace."""

    verb: str
    resource: str
    group: str = ""
    subresource: str = ""
    namespace: str | None = None
    cluster_scoped: bool = False

    def describe(self) -> str:
        what = self.resource + (f"/{self.subresource}" if self.subresource else "")
        if self.group:
            what += f" ({self.group})"
        if self.cluster_scoped:
            where = ""
        elif self.namespace is None:
            where = " in all namespaces"
        else:
            where = f" in namespace {self.namespace}"
        return f"{self.verb} {what}{where}"


def required_permissions(config: OperatorConfig) -> list[Permission]:
    """Every verb the operator uses, where it uses it (deploy/rbac grants exactly these)."""
    wanted: list[Permission] = []
    scopes: tuple[str | None, ...] = config.namespaces or (None,)
    for namespace in scopes:
        wanted += [
            Permission(verb, names.PLURAL, names.GROUP, namespace=namespace)
            # patch: the revocation finalizer (metadata.finalizers) of revokeOnDelete only.
            for verb in ("list", "watch", "patch")
        ]
        wanted.append(Permission("patch", names.PLURAL, names.GROUP, "status", namespace))
        wanted += [
            Permission(verb, "secrets", namespace=namespace)
            for verb in ("get", "list", "watch", "create", "patch")
        ]
        wanted.append(Permission("create", "events", "events.k8s.io", namespace=namespace))
    # The digest key lives in the operator's own namespace, watched or not.
    home = config.operator_namespace
    wanted += [Permission(verb, "secrets", namespace=home) for verb in ("get", "create")]
    if config.leader_election:
        wanted += [
            Permission(verb, "leases", "coordination.k8s.io", namespace=home)
            for verb in ("get", "create", "update")
        ]
    # kopf watches CRDs to learn which resources the API server serves.
    wanted += [
        Permission(verb, "customresourcedefinitions", "apiextensions.k8s.io", cluster_scoped=True)
        for verb in ("list", "watch")
    ]
    return list(dict.fromkeys(wanted))


def kube_configuration() -> Configuration:
    """The kubeconfig or in-cluster account, or one line on why there is neither."""
    from kubernetes.config import ConfigException

    try:
        return load_configuration()
    except (ConfigException, OSError, ValueError, TypeError, yaml.YAMLError) as error:
        if os.environ.get("KUBECONFIG"):
            raise StartupError(
                f"cannot load the kubeconfig named by KUBECONFIG ({os.environ['KUBECONFIG']}): "
                f"{_first_line(error)}"
            ) from None
        raise StartupError(
            "no Kubernetes API to talk to: no usable kubeconfig (KUBECONFIG or "
            "~/.kube/config) and not in a pod with a ServiceAccount token "
            f"({_first_line(error)})"
        ) from None


def probe_client(configuration: Configuration) -> KubeApi:
    """A client for the checks; building it loads the CA and client certificate."""
    try:
        return KubeApi(configuration, timeout_s=PREFLIGHT_TIMEOUT_S)
    except (ssl.SSLError, OSError, ValueError) as error:
        raise StartupError(
            "the kubeconfig's or ServiceAccount's TLS material (CA, client certificate "
            f"or key) cannot be loaded: {_first_line(error)}"
        ) from None


async def check(kube: KubeApi, config: OperatorConfig) -> None:
    """Reachable, credentials accepted, ProviderToken API served, every verb granted."""
    version = await _server_version(kube)
    account = await _who_am_i(kube)
    await _api_served(kube)
    await _permissions(kube, config, account)
    logger.info(
        "preflight: API server %s at %s, %s API served, %d permissions granted to %s",
        version,
        kube.server,
        names.API_VERSION,
        len(required_permissions(config)),
        account,
    )


async def _server_version(kube: KubeApi) -> str:
    try:
        answer = await kube.request("GET", "/version")
    except ApiError as error:
        if error.status == 0:
            raise StartupError(
                f"cannot reach the Kubernetes API server at {kube.server}: {error.message}"
            ) from None
        if error.status == 401:
            raise _unauthorized(kube) from None
        raise StartupError(
            f"the Kubernetes API server at {kube.server} answered /version with {error}"
        ) from None
    return str((answer or {}).get("gitVersion", "unknown version"))


def _unauthorized(kube: KubeApi) -> StartupError:
    return StartupError(
        f"the Kubernetes API server at {kube.server} refused this operator's credentials "
        "(401 Unauthorized): check the ServiceAccount token or the kubeconfig's user"
    )


async def _who_am_i(kube: KubeApi) -> str:
    """The account's name, for messages; older API servers may not say."""
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    try:
        answer = await kube.request("POST", _SELF_REVIEWS, json_body=body)
    except ApiError as error:
        if error.status == 401:
            raise _unauthorized(kube) from None
        return "this operator's account"
    user = ((answer or {}).get("status") or {}).get("userInfo") or {}
    return str(user.get("username") or "this operator's account")


async def _api_served(kube: KubeApi) -> None:
    try:
        listing = await kube.request("GET", f"/apis/{names.GROUP}/{names.VERSION}")
    except ApiError as error:
        if error.status == 404:
            raise StartupError(
                f"the ProviderToken CRD is not installed: the API server serves no "
                f"{names.API_VERSION}; apply it with `kubectl apply -k deploy/` (or the "
                "chart's crds/) and start again"
            ) from None
        raise StartupError(f"cannot read the {names.API_VERSION} API: {error}") from None
    served = {r.get("name") for r in (listing or {}).get("resources", [])}
    missing = {names.PLURAL, f"{names.PLURAL}/status"} - served
    if missing:
        raise StartupError(
            f"the API server serves {names.API_VERSION} without {', '.join(sorted(missing))}: "
            "the installed CRD is not this version's; apply crds/ from this release"
        )


async def _permissions(kube: KubeApi, config: OperatorConfig, account: str) -> None:
    wanted = required_permissions(config)
    # A few at a time: with many watched namespaces, a burst would meet the API server's
    # priority and fairness limits and fail the check for no fault of the install.
    gate = asyncio.Semaphore(_REVIEWS_IN_FLIGHT)

    async def allowed(permission: Permission) -> bool | None:
        async with gate:
            return await _allowed(kube, permission)

    answers = await asyncio.gather(*(allowed(p) for p in wanted))
    if None in answers:
        logger.warning(
            "preflight: this cluster does not let %s ask what it may do "
            "(selfsubjectaccessreviews refused); RBAC not checked before start",
            account,
        )
        return
    denied = [p for p, ok in zip(wanted, answers, strict=True) if not ok]
    if denied:
        raise StartupError(
            f"RBAC: {account} may not {_join(p.describe() for p in denied)}; grant it with "
            "the ClusterRole and Roles in deploy/rbac (or the chart's), see docs/security.md"
        )


async def _allowed(kube: KubeApi, permission: Permission) -> bool | None:
    """Allowed or not; None when the cluster refuses the question itself (a hardened
    cluster without system:basic-user), which is no reason not to start."""
    attributes: dict[str, Any] = {
        "verb": permission.verb,
        "group": permission.group,
        "resource": permission.resource,
    }
    if permission.subresource:
        attributes["subresource"] = permission.subresource
    if permission.namespace is not None:
        attributes["namespace"] = permission.namespace
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    try:
        answer = await kube.request("POST", _ACCESS_REVIEWS, json_body=body)
    except ApiError as error:
        if error.status in (403, 404):
            return None
        raise StartupError(f"cannot check the operator's RBAC permissions: {error}") from None
    return bool(((answer or {}).get("status") or {}).get("allowed"))


def _join(parts: Iterable[str]) -> str:
    return ", ".join(parts)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
