"""Routes watch events to the right ProviderTokens and runs them through the work queue.

The watches fill two caches (``TokenCache``, ``SecretCache``); an index from Secret to
the ProviderTokens that name it turns a Secret event into work for those tokens. A
worker runs ``Reconciler.step``; when that hands back a pending status write, the worker
moves on and ``Reconciler.write_status`` finishes the token as a follow-up.
"""

from __future__ import annotations

import logging
import traceback
from collections import defaultdict
from collections.abc import Awaitable, Mapping
from datetime import timedelta
from typing import Any

from tokensync import metrics
from tokensync.clock import Clock
from tokensync.model import Key, object_key
from tokensync.reconcile import PendingStatus, Reconciler
from tokensync.secret_cache import SecretCache
from tokensync.token_cache import TokenCache
from tokensync.workqueue import WorkQueue

logger = logging.getLogger(__name__)

# When reconciling raised something unexpected, look again this soon.
_ERROR_RETRY = timedelta(seconds=5)
# Status writes waiting behind Secret writes are written by this many tasks; the priority
# gate lets 16 requests in flight, so more would only wait there (docs/decisions/0012).
_STATUS_WRITERS = 32


class Controller:
    def __init__(
        self,
        reconciler: Reconciler,
        *,
        tokens: TokenCache,
        secrets: SecretCache,
        workers: int,
        clock: Clock,
    ) -> None:
        self._reconciler = reconciler
        self._tokens = tokens
        self._secrets = secrets
        self._clock = clock
        self._referrers: dict[Key, set[Key]] = defaultdict(set)
        self._references: dict[Key, tuple[Key, ...]] = {}
        self.queue: WorkQueue[Key] = WorkQueue(
            self._process, workers=workers, clock=clock, finishers=_STATUS_WRITERS
        )
        metrics.QUEUE_DEPTH.set_function(lambda: len(self.queue))

    def start(self) -> None:
        self.queue.start()

    async def stop(self) -> None:
        await self.queue.stop()

    def observe_token(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        key = object_key(body)
        if event_type == "DELETED":
            self._tokens.forget(key)
            self._index(key, ())
            self.queue.forget(key)
            self._reconciler.forget(key, str((body.get("metadata") or {}).get("uid", "")))
            return
        if not self._tokens.observe(body):
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
        for key in self._tokens:
            self.queue.enqueue(key)

    def observe_secret(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        if not self._secrets.observe(event_type, body):
            return
        for referrer in self._referrers.get(object_key(body), ()):
            self.queue.enqueue(referrer)

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
        body = self._tokens.get(key)
        if body is None:
            return None
        try:
            outcome = await self._reconciler.step(body)
        except Exception as error:
            self._unexpected(key, error)
            outcome = self._clock() + _ERROR_RETRY
        if isinstance(outcome, PendingStatus):
            # The token is in its Secret: the worker moves on to the next token while
            # this key stays busy until its status is written.
            return self._write_status(key, outcome)
        self.queue.schedule(key, outcome)
        return None

    async def _write_status(self, key: Key, pending: PendingStatus) -> None:
        try:
            due = await self._reconciler.write_status(pending)
        except Exception as error:
            self._unexpected(key, error)
            due = self._clock() + _ERROR_RETRY
        self.queue.schedule(key, due)

    @staticmethod
    def _unexpected(key: Key, error: Exception) -> None:
        # Never drop a token: whatever broke, look at it again soon.
        # The type only: an exception's text may quote a URL with credentials in it.
        logger.error(
            "reconcile of %s/%s failed unexpectedly: %s", key[0], key[1], type(error).__name__
        )
        # The stack without the message, for the same reason (even at debug level).
        logger.debug("where: %s", "".join(traceback.format_tb(error.__traceback__)))
