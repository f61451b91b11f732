"""Labelled Secrets as the watch shows them, plus what the operator itself wrote.

The Secret watch selects on ``tokensync.dev/role``: targets and provider state the
operator wrote, and credentials Secrets it was pointed at and labelled. Nothing else in
the cluster is listed or watched.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tokensync import names
from tokensync.kube import ApiError, KubeApi
from tokensync.model import Key, object_key, resource_version, trimmed

logger = logging.getLogger(__name__)


class SecretCache:
    def __init__(self, kube: KubeApi) -> None:
        self._kube = kube
        self._items: dict[Key, Mapping[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> bool:
        """Apply a watch event; False when it is older than what is held (nothing new)."""
        key = object_key(body)
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

    def keys(self, namespace: str | None = None) -> list[Key]:
        """The Secrets held, of one namespace or of all: what a relist compares with, to
        find those deleted while the watch was away."""
        return [key for key in self._items if namespace is None or key[0] == namespace]

    async def labelled(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        # Every Secret tokensync writes (target, provider state) carries the role label,
        # so the watch holds it. One that exists unlabelled is found by the 409 on create.
        return self._items.get((namespace, name))

    async def read(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """A Secret from the cache, else from the API server (a credentials Secret not
        labelled yet); ``None`` when it does not exist."""
        cached = self._items.get((namespace, name))
        if cached is not None:
            return cached
        secret = await self._kube.get_secret(namespace, name)
        if secret is not None and names.ROLE_LABEL in _labels(secret):
            # Labelled, so the watch will show it: hold it until then.
            self.remember(secret)
        return secret

    async def label_credentials(self, secret: Mapping[str, Any]) -> Mapping[str, Any]:
        """Bring a credentials Secret into the selected watch, so a change to it is
        noticed at once. One write, the first time only; returns the Secret as held."""
        if names.ROLE_LABEL in _labels(secret):
            return secret
        namespace, name = object_key(secret)
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


def _labels(secret: Mapping[str, Any]) -> Mapping[str, str]:
    return (secret.get("metadata") or {}).get("labels") or {}
