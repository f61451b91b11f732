"""ProviderTokens as the watch shows them, and as the operator's own status writes
left them (newer than the watch has shown yet).

The per-token gauges follow what is held here: the status is the one source of truth
about a token.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from tokensync import metrics
from tokensync.model import Key, Status, object_key, resource_version, trimmed


class TokenCache:
    def __init__(self) -> None:
        self._items: dict[Key, Mapping[str, Any]] = {}

    def __iter__(self) -> Iterator[Key]:
        # A copy: a requeue may run while watch events change what is held.
        return iter(list(self._items))

    def get(self, key: Key) -> Mapping[str, Any] | None:
        return self._items.get(key)

    def observe(self, body: Mapping[str, Any]) -> bool:
        """Hold ``body``; False when it is older than what is held (nothing new)."""
        key = object_key(body)
        held = self._items.get(key)
        if held is not None and resource_version(body) <= resource_version(held):
            return False
        self._items[key] = trimmed(body)
        _export_status(key, body)
        return True

    def observe_own_status(self, body: Mapping[str, Any]) -> None:
        """The answer to our own status write. Only for a token still held: one deleted
        while the write was in flight stays gone."""
        if object_key(body) in self._items:
            self.observe(body)

    def forget(self, key: Key) -> None:
        self._items.pop(key, None)
        metrics.forget_token(*key)


def _export_status(key: Key, body: Mapping[str, Any]) -> None:
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
