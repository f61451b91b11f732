"""Revocation on delete (RFC 7009), for ProviderTokens whose provider block asks for it.

The ProviderToken carries the finalizer ``tokensync.dev/revoke-on-delete`` while its spec
says ``revokeOnDelete``. When it is deleted, the refresh token and the access token it
minted (kept in its state Secret for this) are revoked at the provider with the same
client authentication as a mint, and the finalizer is removed. It never holds a deletion
for long: a failure that may pass is tried again for 30 seconds from the deletion, then
given up on with an Event; one that will not pass is given up on at once. Adding and
removing the finalizer is the one write to a ProviderToken's own metadata (deploy/rbac:
patch on providertokens, cluster-wide so that a namespace's deletion can always finish).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

from tokensync import names
from tokensync.clock import Clock
from tokensync.digest import DigestKey
from tokensync.endpoints import HttpClient
from tokensync.events import EventRecorder, ObjectRef
from tokensync.kube import ApiError
from tokensync.mint_inputs import MintInputs
from tokensync.model import ProviderTokenView, object_key
from tokensync.providers.base import MintError, Provider, Revocable
from tokensync.secret_bodies import provider_state, state_question, state_secret_name

logger = logging.getLogger("tokensync.revocation")

FINALIZER = names.REVOKE_FINALIZER
GRANT = "deploy/rbac/clusterrole.yaml"
# How long after its deletion a ProviderToken may wait for its revocation.
GIVE_UP_AFTER = timedelta(seconds=30)
_RETRY = timedelta(seconds=3)
# A write that lost a race with another writer: the watch brings the newer object soon.
_LOOK_AGAIN = timedelta(seconds=1)
_REMOVAL_RETRY = timedelta(seconds=30)


class RevocationNotPermitted(MintError):
    """revokeOnDelete without the grant to hold the ProviderToken until it is done."""

    reason = "RevocationNotPermitted"
    awaits_user = True


class FinalizerNotWritten(MintError):
    """The API server did not take the finalizer (failing, or a webhook refusing it)."""

    reason = "FinalizerNotWritten"


class FinalizerApi(Protocol):
    async def patch_finalizers(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str,
        name: str,
        finalizers: list[str],
        resource_version: str,
    ) -> dict[str, Any]: ...


class StateSource(Protocol):
    async def labelled(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...


def wants_finalizer(view: ProviderTokenView, provider: Provider) -> bool:
    return isinstance(provider, Revocable) and provider.revokes_on_delete(view.provider_spec)


class Revocations:
    def __init__(
        self,
        *,
        kube: FinalizerApi,
        inputs: MintInputs,
        secrets: StateSource,
        http: HttpClient,
        digest: DigestKey,
        events: EventRecorder,
        clock: Clock,
        on_patched: Callable[[Mapping[str, Any]], None],
    ) -> None:
        self._kube = kube
        self._inputs = inputs
        self._secrets = secrets
        self._http = http
        self._digest = digest
        self._events = events
        self._clock = clock
        # Told about the object each finalizer write hands back, so the next look sees it.
        self._on_patched = on_patched
        # Deletions (by uid: a successor of the same name is another) whose revocation
        # ended, done or given up: never sent twice, even when removing the finalizer
        # has to be tried again.
        self._settled: set[str] = set()

    async def hold(self, view: ProviderTokenView, provider: Provider) -> bool:
        """The finalizer on the object exactly while its spec asks for revocation.
        False: the object changed under the write; look again once the watch has it."""
        wanted = wants_finalizer(view, provider)
        if wanted == (FINALIZER in view.finalizers):
            return True
        try:
            await self._set(view, wanted)
        except ApiError as error:
            if error.status == 409:
                return False
            if error.status == 403 and wanted:
                raise RevocationNotPermitted(
                    f"revokeOnDelete needs the operator's patch on providertokens, which "
                    f"its ClusterRole lacks ({GRANT}); nothing is minted that could not be "
                    "revoked"
                ) from None
            logger.warning(
                "finalizer write failed %s/%s status=%s", view.namespace, view.name, error.status
            )
            if wanted:
                answer = "did not answer" if error.status == 0 else f"answered {error.status}"
                raise FinalizerNotWritten(
                    f"revokeOnDelete: the finalizer {FINALIZER} could not be added (the API "
                    f"server {answer}); nothing is minted until it is"
                ) from None
            # Only an unset revokeOnDelete's finalizer: tried again at the next look, and
            # it revokes nothing meanwhile (on_delete).
        return True

    async def on_delete(
        self, view: ProviderTokenView, provider: Provider | None
    ) -> datetime | None:
        """Revoke, then let the object go; returns when to look again (None: done).
        ``provider`` None: one this operator does not know (a downgrade); let go."""
        if FINALIZER not in view.finalizers:
            return None  # somebody else's finalizer holds it: nothing of ours to do
        now = self._clock()
        if provider is None and view.uid not in self._settled:
            await self._announce(
                view,
                "Warning",
                "RevocationFailed",
                f"tokens not revoked, deletion goes on: provider {view.provider} is not "
                "supported by this operator",
            )
            self._settled.add(view.uid)
        # Left behind when revokeOnDelete was unset (its removal failed then): the spec
        # no longer asks for a revocation, so none is made.
        if (
            provider is not None
            and view.uid not in self._settled
            and wants_finalizer(view, provider)
        ):
            retry = await self._revoke(view, provider, now)
            if retry is not None:
                return retry
            self._settled.add(view.uid)
        return await self._let_go(view.namespace, view.name, view.finalizers, view.resource_version)

    async def release_unreadable(self, body: Mapping[str, Any]) -> datetime | None:
        """A deleting ProviderToken whose spec cannot be read: nothing can be revoked for
        it, but our finalizer must not hold it (nor its namespace) for ever."""
        metadata = body.get("metadata") or {}
        finalizers = tuple(str(f) for f in metadata.get("finalizers") or ())
        if not metadata.get("deletionTimestamp") or FINALIZER not in finalizers:
            return None
        namespace, name = object_key(body)
        uid = str(metadata.get("uid", ""))
        if uid not in self._settled:
            ref = ObjectRef(namespace=namespace, name=name, uid=uid)
            note = "tokens not revoked, deletion goes on: the spec cannot be read"
            await self._events.record(ref, "Warning", "RevocationFailed", note)
            self._settled.add(uid)
        return await self._let_go(
            namespace, name, finalizers, str(metadata.get("resourceVersion", ""))
        )

    async def _let_go(
        self, namespace: str, name: str, finalizers: tuple[str, ...], resource_version: str
    ) -> datetime | None:
        try:
            await self._write(namespace, name, finalizers, False, resource_version)
        except ApiError as error:
            logger.warning(
                "finalizer removal failed %s/%s status=%s", namespace, name, error.status
            )
            # A lost race is over in a moment; a refusal (a trimmed ClusterRole) is not.
            return self._clock() + (_LOOK_AGAIN if error.status == 409 else _REMOVAL_RETRY)
        return None

    def forget(self, uid: str) -> None:
        self._settled.discard(uid)

    async def _revoke(
        self, view: ProviderTokenView, provider: Provider, now: datetime
    ) -> datetime | None:
        deleted_at = view.deleting_since or now
        try:
            if not isinstance(provider, Revocable):
                return None
            creds = await self._inputs.credentials(view, provider)
            question = state_question(view, self._digest.of_mapping(creds), self._digest)
            state_body = await self._secrets.labelled(view.namespace, state_secret_name(view))
            tokens = provider_state(state_body, view, question).values
            if not tokens and view.status.last_mint_time is None:
                await self._announce(view, "Normal", "Revoked", "nothing to revoke: no mint")
                return None
            if not tokens:
                # Minted, but its state Secret went first (a namespace's deletion, or a
                # foreground one), or holds another spec's tokens (a failed mint after a
                # change, which already took the old ones out of the cluster).
                why = "was deleted first" if state_body is None else "holds none of this spec"
                await self._announce(
                    view,
                    "Warning",
                    "RevocationFailed",
                    f"tokens not revoked, deletion goes on: state Secret "
                    f"{state_secret_name(view)} {why}",
                )
                return None
            request = await self._inputs.request(view, provider, creds, self._http, now)
            endpoint, revoked = await provider.revoke(request, tokens)
        except MintError as error:
            passing = not (error.permanent or error.awaits_user)
            if passing and now < deleted_at + GIVE_UP_AFTER:
                return min(now + _RETRY, deleted_at + GIVE_UP_AFTER)
            reason = "RevocationAbandoned" if passing else "RevocationFailed"
            given_up = f" after {int((now - deleted_at).total_seconds())}s" if passing else ""
            await self._announce(
                view,
                "Warning",
                reason,
                f"tokens not revoked{given_up}, deletion goes on: {error.message}",
            )
            return None
        host = urlsplit(endpoint).netloc
        if not revoked:
            note = f"tokens not revoked: {host} revokes neither kind (unsupported_token_type)"
            await self._announce(view, "Warning", "RevocationFailed", note)
            return None
        kinds = " and the ".join(kind.replace("_", " ") for kind in revoked)
        await self._announce(view, "Normal", "Revoked", f"revoked the {kinds} at {host}")
        return None

    async def _set(self, view: ProviderTokenView, present: bool) -> None:
        await self._write(
            view.namespace, view.name, view.finalizers, present, view.resource_version
        )

    async def _write(
        self,
        namespace: str,
        name: str,
        finalizers: tuple[str, ...],
        present: bool,
        resource_version: str,
    ) -> None:
        kept = [f for f in finalizers if f != FINALIZER] + ([FINALIZER] if present else [])
        patched = await self._kube.patch_finalizers(
            names.GROUP, names.VERSION, names.PLURAL, namespace, name, kept, resource_version
        )
        self._on_patched(patched)

    async def _announce(self, view: ProviderTokenView, kind: str, reason: str, note: str) -> None:
        ref = ObjectRef(namespace=view.namespace, name=view.name, uid=view.uid)
        await self._events.record(ref, kind, reason, note)
