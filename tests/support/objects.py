"""Arrange and inspect Kubernetes objects from tests (as admin, through the real API)."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from support.waiting import wait_for
from tokensync_dev.devcluster.cluster import ControlPlane

GROUP, VERSION, PLURAL = "tokensync.dev", "v1alpha1", "providertokens"


class Cluster:
    """Thin helpers over an admin ApiClient and the built kubectl."""

    def __init__(self, plane: ControlPlane, api_client: client.ApiClient) -> None:
        self.plane = plane
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.events_api = client.EventsV1Api(api_client)

    def namespace(self, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.core.create_namespace({"metadata": {"name": name}})
        return name

    def apply(self, manifest: dict[str, Any]) -> str:
        """``kubectl apply`` as a user would; returns kubectl's output."""
        return self.plane.kubectl("apply", "-f", "-", input_text=json.dumps(manifest))

    def apply_refused(self, manifest: dict[str, Any]) -> str:
        """Apply something the API server must refuse; returns kubectl's error text."""
        out = self.plane.kubectl("apply", "-f", "-", input_text=json.dumps(manifest), check=False)
        return out

    def credentials(self, namespace: str, name: str, data: dict[str, str]) -> None:
        body = {"metadata": {"name": name}, "stringData": data}
        try:
            self.core.create_namespaced_secret(namespace, body)
        except ApiException as error:
            if error.status != 409:
                raise
            self.core.patch_namespaced_secret(name, namespace, {"stringData": data})

    def secret(self, namespace: str, name: str) -> Any | None:
        try:
            return self.core.read_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def secret_value(self, namespace: str, name: str, key: str = "token") -> str | None:
        secret = self.secret(namespace, name)
        if secret is None or not secret.data or key not in secret.data:
            return None
        return base64.b64decode(secret.data[key]).decode()

    def token(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def ready(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Ready condition, or None while there is none."""
        body = self.token(namespace, name) or {}
        for condition in (body.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Ready":
                return dict(condition)
        return None

    def wait_ready(
        self, namespace: str, name: str, status: str = "True", timeout_s: float = 30
    ) -> dict[str, Any]:
        """Wait until the Ready condition has ``status``; returns the condition."""
        return wait_for(
            lambda: (c := self.ready(namespace, name)) and c["status"] == status and c,
            timeout_s=timeout_s,
            what=f"Ready={status} on {namespace}/{name}",
        )

    def events(self, namespace: str, name: str | None = None) -> list[Any]:
        items = self.events_api.list_namespaced_event(namespace).items
        return [e for e in items if name is None or e.regarding.name == name]

    def operator_output(self) -> list[tuple[str, str]]:
        """Every Event's reason and note, every ProviderToken's status, and every
        Secret's labels and annotations (a template must not put a value there), as text."""
        events = self.events_api.list_event_for_all_namespaces().items
        tokens = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
        # The Secrets the operator writes; a user's own (kubectl's last-applied copy of a
        # credentials Secret holds its values) are not the operator's output.
        secrets = self.core.list_secret_for_all_namespaces(
            label_selector="tokensync.dev/role in (token,state)"
        ).items
        return [
            ("events", "\n".join(f"{e.reason} {e.note}" for e in events)),
            ("status", json.dumps([t.get("status") for t in tokens])),
            (
                "secret metadata",
                json.dumps(
                    [[s.metadata.labels, s.metadata.annotations] for s in secrets], default=str
                ),
            ),
        ]

    def patch_token(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch)

    def delete_token(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def provider_token(
    name: str,
    *,
    provider: dict[str, Any],
    credentials: str | None,
    target: str,
    key: str | None = None,
    refresh: dict[str, Any] | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "provider": provider,
        # None: a spec that needs no credentials Secret (a ServiceAccount token or a client
        # certificate is the client's proof).
        **({"credentialsRef": {"name": credentials}} if credentials is not None else {}),
        "target": {"name": target, **({"key": key} if key else {})},
    }
    if refresh:
        spec["refresh"] = refresh
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ProviderToken",
        "metadata": metadata,
        "spec": spec,
    }
