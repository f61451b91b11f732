"""A small async Kubernetes client for the operator's own reads and writes.

kopf watches ProviderTokens; this writes Secrets, status and Events, and lists and
watches the labelled Secrets (``secret_watch``). It speaks JSON over aiohttp (kopf's own
HTTP stack) and never blocks the event loop. The ``kubernetes`` client is synchronous;
it is used here only to load the kubeconfig or in-cluster configuration, including token
refresh through its ``refresh_api_key_hook``. Why aiohttp and not httpx here: the
benchmark (docs/decisions/0004-scale.md).
"""

from __future__ import annotations

import json
import os
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterable, Mapping
from typing import Any, NamedTuple
from urllib.parse import quote

import aiohttp
from kubernetes import config as k8s_config
from kubernetes.client import Configuration

from tokensync import connection_errors
from tokensync.priority import Lane, PriorityGate

MERGE_PATCH = "application/merge-patch+json"
# Far shorter than any service-account token's life (kubelet rotates at 80% of an hour).
_AUTH_REFRESH_S = 10.0


class ApiError(Exception):
    """A non-2xx answer from the API server. The message never includes a request body."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    """409: AlreadyExists on create, or a resourceVersion conflict."""


def _api_error(status_code: int, body: bytes) -> ApiError:
    try:
        status = json.loads(body)
        reason, message = str(status.get("reason", "")), str(status.get("message", ""))
    except (ValueError, AttributeError):
        # Not a Kubernetes Status: not quoted (whatever answered may echo headers).
        reason, message = "", f"a non-JSON answer of {len(body)} bytes"
    error_type = {404: NotFound, 409: Conflict}.get(status_code, ApiError)
    return error_type(status_code, reason, message)


class SecretList(NamedTuple):
    items: list[dict[str, Any]]
    # The list's own resourceVersion: where a watch goes on from without missing a change.
    resource_version: str


async def _lines(chunks: AsyncIterable[bytes]) -> AsyncGenerator[bytearray, None]:
    """A watch stream's lines (one JSON event each), whatever their length.

    aiohttp's own line iteration refuses a line over 128 KiB, and one Secret may hold
    1 MiB (kopf splits its watch streams itself for the same reason).
    """
    pending = bytearray()
    async for chunk in chunks:
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", start)) >= 0:
            if end > start:
                yield pending[start:end]
            start = end + 1
        del pending[:start]
    if pending.strip():
        yield pending


def load_configuration() -> Configuration:
    """KUBECONFIG when set (and then only it), else ~/.kube/config when present, else the
    in-cluster service account."""
    configuration = Configuration()
    try:
        k8s_config.load_kube_config(client_configuration=configuration)
    except (k8s_config.ConfigException, FileNotFoundError):
        if os.environ.get("KUBECONFIG"):
            raise  # named on purpose: broken is an error, not a reason to try another
        k8s_config.load_incluster_config(client_configuration=configuration)
    return configuration


def authorization(configuration: Configuration) -> str | None:
    """The Authorization header value (``Bearer ...``) the configuration holds, refreshed
    by its hook (a rotated ServiceAccount token, an exec plugin's new token)."""
    value: str | None = configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
    return value or None


class KubeApi:
    def __init__(
        self,
        configuration: Configuration,
        *,
        timeout_s: float = 30.0,
        in_flight: int = 32,
    ):
        self._configuration = configuration
        # Secrets, status and Events only: the Lease and readiness probes never queue
        # behind a burst of writes.
        self._gate = PriorityGate(in_flight)
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if not configuration.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if configuration.cert_file and configuration.key_file:
            context.load_cert_chain(configuration.cert_file, configuration.key_file)
        self._ssl = context
        self._base = configuration.host.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._watch_session: aiohttp.ClientSession | None = None
        self._auth: dict[str, str] = {}
        self._auth_fresh_until = 0.0

    @property
    def server(self) -> str:
        return self._base

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily: a session belongs to the event loop it is first used on.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=64),
                timeout=self._timeout,
                headers={"User-Agent": "tokensync", "Accept": "application/json"},
            )
        return self._session

    def _watch_client(self) -> aiohttp.ClientSession:
        # A watch holds its connection for minutes: on a connector of their own, the
        # watches (one per namespace with --namespace) never take a slot a write needs.
        if self._watch_session is None:
            self._watch_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=0),
                headers={"User-Agent": "tokensync", "Accept": "application/json"},
            )
        return self._watch_session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._watch_session is not None:
            await self._watch_session.close()

    def _auth_headers(self) -> dict[str, str]:
        # The refresh hook picks up rotated service-account tokens, but from a kubeconfig
        # it reloads the whole file (and reads the proxy environment) on every call: asked
        # once per interval, not once per request.
        now = time.monotonic()
        if now >= self._auth_fresh_until:
            value = authorization(self._configuration)
            self._auth = {"Authorization": value} if value else {}
            self._auth_fresh_until = now + _AUTH_REFRESH_S
        return dict(self._auth)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        lane: Lane | None = None,
    ) -> Any:
        if lane is None:
            return await self._send(method, path, json_body, params, content_type)
        async with self._gate.slot(lane):
            return await self._send(method, path, json_body, params, content_type)

    async def _send(
        self,
        method: str,
        path: str,
        json_body: Any,
        params: Mapping[str, str] | None,
        content_type: str,
    ) -> Any:
        headers = self._auth_headers()
        data = None
        if json_body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(json_body)
        try:
            async with self._client().request(
                method, self._base + path, data=data, params=params, headers=headers
            ) as response:
                body = await response.read()
                status_code = response.status
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ApiError(0, "Unreachable", connection_errors.describe(error)) from None
        if status_code >= 400:
            raise _api_error(status_code, body)
        try:
            return json.loads(body) if body else None
        except ValueError:
            # An ingress or a web page at the server's address; its body is not quoted.
            raise ApiError(status_code, "NotJSON", "the answer is not JSON") from None

    async def request(self, method: str, path: str, *, json_body: Any = None) -> Any:
        """Any other call (the Lease of leader election): JSON in, JSON out."""
        return await self._request(method, path, json_body=json_body)

    async def reachable(self) -> bool:
        """The API server's own readiness (a non-resource URL every account may read)."""
        try:
            async with self._client().get(
                self._base + "/readyz", headers=self._auth_headers()
            ) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    # Secrets
    @staticmethod
    def _secret_path(namespace: str, name: str | None = None) -> str:
        base = f"/api/v1/namespaces/{quote(namespace)}/secrets"
        return f"{base}/{quote(name)}" if name else base

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            secret: dict[str, Any] = await self._request(
                "GET", self._secret_path(namespace, name), lane=Lane.TOKEN
            )
        except NotFound:
            return None
        return secret

    @classmethod
    def _secrets_path(cls, namespace: str | None) -> str:
        return cls._secret_path(namespace) if namespace else "/api/v1/secrets"

    async def list_secrets(self, label_selector: str, namespace: str | None = None) -> SecretList:
        """The selected Secrets of one namespace, or of all (``None``)."""
        listing = await self._request(
            "GET", self._secrets_path(namespace), params={"labelSelector": label_selector}
        )
        return SecretList(
            listing.get("items") or [],
            str((listing.get("metadata") or {}).get("resourceVersion", "")),
        )

    async def watch_secrets(
        self,
        label_selector: str,
        namespace: str | None,
        resource_version: str,
        *,
        timeout_s: int,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """One watch request: its events (``{"type", "object"}``) as they come, until the
        API server ends it after ``timeout_s``. Raises ``ApiError`` (status 0 when there
        was no answer, or it broke off); close it with ``contextlib.aclosing``."""
        params = {
            "watch": "true",
            "labelSelector": label_selector,
            "resourceVersion": resource_version,
            # Bookmarks move the resourceVersion on while nothing selected changes, so a
            # reconnect after a quiet spell resumes instead of getting 410 and relisting.
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_s),
        }
        # The server ends the watch; the client's own limit only catches a connection
        # that went silent (kopf's client_timeout, 30 s past its server_timeout).
        timeout = aiohttp.ClientTimeout(total=timeout_s + 30, sock_connect=self._timeout.total)
        try:
            async with self._watch_client().get(
                self._base + self._secrets_path(namespace),
                params=params,
                headers=self._auth_headers(),
                timeout=timeout,
            ) as response:
                if response.status >= 400:
                    raise _api_error(response.status, await response.read())
                async for line in _lines(response.content.iter_any()):
                    event: dict[str, Any] = json.loads(line)
                    yield event
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ApiError(0, "Unreachable", connection_errors.describe(error)) from None
        except ValueError:
            # A line cut off or not JSON: not quoted (it may be part of a Secret).
            raise ApiError(0, "NotJSON", "a watch event is not JSON") from None

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = await self._request(
            "POST", self._secret_path(namespace), json_body=body, lane=Lane.TOKEN
        )
        return created

    async def patch_secret(
        self, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        patched: dict[str, Any] = await self._request(
            "PATCH",
            self._secret_path(namespace, name),
            json_body=patch,
            content_type=MERGE_PATCH,
            lane=Lane.TOKEN,
        )
        return patched

    # Custom resources
    async def patch_status(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
    ) -> dict[str, Any]:
        path = (
            f"/apis/{group}/{version}/namespaces/{quote(namespace)}/{plural}/{quote(name)}/status"
        )
        patched: dict[str, Any] = await self._request(
            "PATCH", path, json_body=patch, content_type=MERGE_PATCH, lane=Lane.STATUS
        )
        return patched

    # Events
    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        await self._request(
            "POST",
            f"/apis/events.k8s.io/v1/namespaces/{quote(namespace)}/events",
            json_body=body,
            lane=Lane.EVENT,
        )

    # Workloads (apps/v1), for rollouts on rotation (--rollouts): only ever listed with the
    # opt-in label selector, and patched with a merge patch. On the status lane: a restart
    # delivers a token already in its Secret, as the status reports it; it can wait for
    # the token writes, and needs not wait behind Events.
    @staticmethod
    def _workload_path(kind_plural: str, namespace: str, name: str | None = None) -> str:
        base = f"/apis/apps/v1/namespaces/{quote(namespace)}/{quote(kind_plural)}"
        return f"{base}/{quote(name)}" if name else base

    async def list_workloads(
        self, kind_plural: str, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        listing = await self._request(
            "GET",
            self._workload_path(kind_plural, namespace),
            params={"labelSelector": label_selector},
            lane=Lane.STATUS,
        )
        items: list[dict[str, Any]] = listing.get("items", [])
        return items

    async def patch_workload(
        self, kind_plural: str, namespace: str, name: str, merge_patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        patched: dict[str, Any] = await self._request(
            "PATCH",
            self._workload_path(kind_plural, namespace, name),
            json_body=merge_patch,
            content_type=MERGE_PATCH,
            lane=Lane.STATUS,
        )
        return patched

    # ServiceAccount tokens (TokenRequest), for oauth2's clientAuth service_account and
    # subjectTokenSource serviceAccount: allowed only where a namespace's owner granted
    # create on serviceaccounts/token for that one ServiceAccount (docs/security.md).
    async def create_service_account_token(
        self, namespace: str, name: str, audience: str, seconds: int
    ) -> str:
        """A token for the ServiceAccount, for one audience; the caller never stores it."""
        path = f"/api/v1/namespaces/{quote(namespace)}/serviceaccounts/{quote(name)}/token"
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [audience], "expirationSeconds": seconds},
        }
        answer = await self._request("POST", path, json_body=body, lane=Lane.TOKEN)
        token = ((answer or {}).get("status") or {}).get("token")
        if not isinstance(token, str) or not token:
            raise ApiError(200, "NoToken", "the TokenRequest answer holds no token")
        return token

    # The ProviderToken's own metadata, for the revocation finalizer only (revokeOnDelete):
    # a merge patch of metadata.finalizers, guarded by the resourceVersion it was built from
    # so that another controller's finalizer added in between is never dropped.
    async def patch_finalizers(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str,
        name: str,
        finalizers: list[str],
        resource_version: str,
    ) -> dict[str, Any]:
        path = f"/apis/{group}/{version}/namespaces/{quote(namespace)}/{plural}/{quote(name)}"
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}}
        patched: dict[str, Any] = await self._request(
            "PATCH", path, json_body=patch, content_type=MERGE_PATCH, lane=Lane.STATUS
        )
        return patched
