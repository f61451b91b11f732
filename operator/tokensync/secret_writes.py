"""Writes to the Secrets a ProviderToken owns: its target and its provider state.

Create, or merge-patch one this ProviderToken owns; never touch someone else's. The
answer of each write goes into the Secret cache at once, so the watch event that follows
is not news.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from tokensync import names
from tokensync.decision import TargetConflict, type_immutable
from tokensync.kube import ApiError, Conflict, NotFound
from tokensync.model import ProviderTokenView, controller_uid
from tokensync.secret_bodies import StateQuestion, state_secret, templated_keys

logger = logging.getLogger(__name__)


class SecretApi(Protocol):
    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def patch_secret(
        self, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]: ...


class OwnedSecrets(Protocol):
    """The part of the Secret cache a writer needs."""

    async def labelled(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    def remember(self, secret: Mapping[str, Any]) -> None: ...

    def forget(self, namespace: str, name: str) -> None: ...


class SecretWrites:
    def __init__(self, kube: SecretApi, secrets: OwnedSecrets) -> None:
        self._kube = kube
        self._secrets = secrets

    async def write(self, view: ProviderTokenView, desired: dict[str, Any]) -> dict[str, Any]:
        """Create or merge-patch a Secret this ProviderToken owns; never someone else's.

        Raises ``TargetConflict`` for a Secret of that name owned by anything else,
        ``TargetTypeImmutable`` for ours with another type, and ``ApiError`` when the API
        server refuses or does not answer.
        """
        written = await self._create_or_patch(view, desired)
        self._secrets.remember(written)
        return written

    async def save_state(
        self, view: ProviderTokenView, question: StateQuestion, state: Mapping[str, str]
    ) -> None:
        """Keep the provider's state (a refresh token) for the next mint, restarts included,
        marked with the question it answers. Empty ``state`` discards what was saved."""
        try:
            await self.write(view, state_secret(view, question, state))
        except (ApiError, TargetConflict) as error:
            # Not fatal: the next mint falls back to the provider's first grant.
            logger.warning(
                "provider state of %s/%s not saved: %s",
                view.namespace,
                view.name,
                type(error).__name__,
            )

    async def _create_or_patch(
        self, view: ProviderTokenView, desired: dict[str, Any]
    ) -> dict[str, Any]:
        name = desired["metadata"]["name"]
        existing = await self._secrets.labelled(view.namespace, name)
        if existing is None:
            try:
                return await self._kube.create_secret(view.namespace, desired)
            except Conflict:
                # It exists but is not in our cache (not labelled): look before touching it.
                existing = await self._kube.get_secret(view.namespace, name)
                if existing is None:
                    raise
        if controller_uid(existing) != view.uid:
            raise TargetConflict(
                f"Secret {name} already exists and is not owned by this ProviderToken; "
                "choose another spec.target.name or delete that Secret"
            )
        wanted_type, actual_type = desired.get("type", "Opaque"), existing.get("type") or "Opaque"
        if actual_type != wanted_type:
            # decide() refuses this before a mint; here for a Secret replaced in between.
            raise type_immutable(name, actual_type, wanted_type)
        metadata = {k: v for k, v in desired["metadata"].items() if k not in ("name", "namespace")}
        # Keys we no longer want are removed: null deletes a key in a merge patch. Of the
        # labels and annotations, only those our template put there and no longer does.
        old_labels, old_annotations = templated_keys(existing)
        old_annotations.add(names.TEMPLATED_KEYS_ANNOTATION)
        metadata["labels"] = _dropping(old_labels, metadata["labels"])
        metadata["annotations"] = _dropping(old_annotations, metadata["annotations"])
        stale = {key: None for key in existing.get("data") or {} if key not in desired["data"]}
        patch = {"metadata": metadata, "data": {**stale, **desired["data"]}, "type": wanted_type}
        try:
            return await self._kube.patch_secret(view.namespace, name, patch)
        except NotFound:
            # The cache still held a Secret that is gone (its DELETED event was missed).
            self._secrets.forget(view.namespace, name)
            return await self._kube.create_secret(view.namespace, desired)


def _dropping(previous: set[str], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """``wanted`` as a merge patch that also removes what was ``previous``ly ours."""
    return {**{key: None for key in previous if key not in wanted}, **wanted}
