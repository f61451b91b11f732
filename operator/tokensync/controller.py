"""Routes watch events to the right ProviderTokens and runs them through the work queue.

Holds what the watches have shown: the latest ProviderTokens and the Secrets labelled
``tokensync.dev/role`` (targets the operator wrote, credentials it was pointed at).
Nothing else in the cluster is listed or watched.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from tokensync import metrics, names
from tokensync.kube import ApiError, KubeApi
from tokensync.model import Key, Status, resource_version, trimmed
from tokensync.reconcile import Reconciler, StatusWrite
from tokensync.workqueue import WorkQueue

logger = logging.getLogger(__name__)

# When reconciling raised something unexpected, look again this soon.
_ERROR_RETRY = timedelta(seconds=5)


def _key(body: Mapping[str, Any]) -> Key:
    metadata = body.get("metadata") or {}
    return (metadata.get("namespace", ""), metadata.get("name", ""))


def _export_status(key: Key, body: Mapping[str, Any]) -> None:
    """The per-token gauges follow the status, the one source of truth about a token."""
    providers = (body.get("spec") or {}).get("provider") or {}
    if len(providers) != 1:
        return
    status = Status.parse(body.get("status") or {})
    if status.ready is None:
        return
    metrics.token_state(
        key[0],
        key[1],
        next(iter(providers)),
        ready=status.ready == "True",
        expires_at=status.expires_at,
        renewal_at=status.renewal_time,
        minted_at=status.last_mint_time,
    )


class SecretCache:
    """Labelled Secrets as the watch shows them, plus what the operator itself wrote."""

    def __init__(self, kube: KubeApi) -> None:
        self._kube = kube
        self._items: dict[Key, Mapping[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> bool:
        """Apply a watch event; False when it is older than what is held (nothing new)."""
        key = _key(body)
        held = self._items.get(key)
        if held is not None and resource_version(body) <= resource_version(held):
            return False
        if event_type == "DELETED":
            self._items.pop(key, None)
        else:
            self._items[key] = trimmed(body)
        return True

    def remember(self, secret: Mapping[str, Any]) -> None:
        self.observe("MODIFIED", secret)

    def forget(self, namespace: str, name: str) -> None:
        self._items.pop((namespace, name), None)

    async def labelled(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        # Every Secret tokensync writes (target, provider state) carries the role label,
        # so the watch holds it. One that exists unlabelled is found by the 409 on create.
        return self._items.get((namespace, name))

    async def credentials(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        cached = self._items.get((namespace, name))
        if cached is not None:
            return cached
        secret = await self._kube.get_secret(namespace, name)
        if secret is None:
            return None
        labels = (secret.get("metadata") or {}).get("labels") or {}
        if names.ROLE_LABEL not in labels:
            # Labelling the credentials Secret brings it into our selected watch, so a
            # change to it is noticed at once. One write, the first time only.
            try:
                secret = await self._kube.patch_secret(
                    namespace,
                    name,
                    {"metadata": {"labels": {names.ROLE_LABEL: names.ROLE_CREDENTIALS}}},
                )
            except ApiError as error:
                logger.warning(
                    "could not label credentials Secret %s/%s (status %s); changes to it "
                    "will be noticed at the next renewal",
                    namespace,
                    name,
                    error.status,
                )
                return secret
        self.remember(secret)
        return secret


class Controller:
    def __init__(
        self,
        reconciler: Reconciler,
        secrets: SecretCache,
        *,
        workers: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._reconciler = reconciler
        reconciler.on_status = self.observe_own_status
        self.secrets = secrets
        self._clock = clock
        self.tokens: dict[Key, Mapping[str, Any]] = {}
        self._referrers: dict[Key, set[Key]] = defaultdict(set)
        self._references: dict[Key, tuple[Key, ...]] = {}
        self.queue: WorkQueue[Key] = WorkQueue(self._process, workers=workers)
        metrics.QUEUE_DEPTH.set_function(lambda: len(self.queue))

    def start(self) -> None:
        self.queue.start()

    async def stop(self) -> None:
        await self.queue.stop()

    def observe_token(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        key = _key(body)
        if event_type == "DELETED":
            self.tokens.pop(key, None)
            self._index(key, ())
            self.queue.forget(key)
            self._reconciler.forget(key)
            metrics.forget_token(*key)
            return
        if not self._store_token(body):
            return
        spec = body.get("spec") or {}
        namespace = key[0]
        referenced = tuple(
            (namespace, name)
            for name in (
                (spec.get("credentialsRef") or {}).get("name"),
                (spec.get("target") or {}).get("name"),
            )
            if name
        )
        self._index(key, referenced)
        self.queue.enqueue(key)

    def requeue_all(self) -> None:
        """Look at every token again (this replica just became the leader)."""
        for key in list(self.tokens):
            self.queue.enqueue(key)

    def observe_own_status(self, body: Mapping[str, Any]) -> None:
        """The answer to our own status write: newer than the watch has shown yet.

        Only for a token still known: one deleted while the write was in flight stays gone.
        """
        if _key(body) in self.tokens:
            self._store_token(body)

    def observe_secret(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        if not self.secrets.observe(event_type, body):
            return
        for referrer in self._referrers.get(_key(body), ()):
            self.queue.enqueue(referrer)

    def _store_token(self, body: Mapping[str, Any]) -> bool:
        key = _key(body)
        held = self.tokens.get(key)
        if held is not None and resource_version(body) <= resource_version(held):
            return False
        self.tokens[key] = trimmed(body)
        _export_status(key, body)
        return True

    def _index(self, key: Key, referenced: tuple[Key, ...]) -> None:
        for old in self._references.pop(key, ()):
            referrers = self._referrers.get(old)
            if referrers is not None:
                referrers.discard(key)
                if not referrers:
                    del self._referrers[old]
        if referenced:
            self._references[key] = referenced
            for secret in referenced:
                self._referrers[secret].add(key)

    async def _process(self, key: Key) -> Awaitable[None] | None:
        body = self.tokens.get(key)
        if body is None:
            return None
        try:
            outcome = await self._reconciler.step(body)
        except Exception as error:
            self._unexpected(key, error)
            outcome = self._clock() + _ERROR_RETRY
        if isinstance(outcome, StatusWrite):
            # The token is in its Secret: the worker moves on to the next token while
            # this key stays busy until its status is written.
            return self._write_status(key, outcome)
        self._schedule(key, outcome)
        return None

    async def _write_status(self, key: Key, status: StatusWrite) -> None:
        try:
            due = await status.write()
        except Exception as error:
            self._unexpected(key, error)
            due = self._clock() + _ERROR_RETRY
        self._schedule(key, due)

    def _schedule(self, key: Key, due: datetime | None) -> None:
        self.queue.schedule(key, due.timestamp() if due is not None else None)

    @staticmethod
    def _unexpected(key: Key, error: Exception) -> None:
        # Never drop a token: whatever broke, look at it again soon.
        # The type only: an exception's text may quote a URL with credentials in it.
        logger.error(
            "reconcile of %s/%s failed unexpectedly: %s", key[0], key[1], type(error).__name__
        )
        logger.debug("traceback of the failed reconcile", exc_info=True)
