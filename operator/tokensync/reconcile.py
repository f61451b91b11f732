"""What to do for one ProviderToken: a pure decision, then the writes it calls for.

``decide`` looks at the ProviderToken, its target Secret and the credentials' digest and
says mint, rewrite, wait or refuse. ``Reconciler`` gathers those observations, carries
out the decision with one Secret write and one status write per mint, and returns when
the token wants attention next.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from tokensync import metrics, names
from tokensync.endpoints import HttpClient
from tokensync.events import EventRecorder, ObjectRef
from tokensync.kube import ApiError, Conflict, NotFound
from tokensync.model import (
    ProviderTokenView,
    SpecInvalid,
    Status,
    controller_uid,
    format_time,
    parse_provider_token,
)
from tokensync.providers import base as providers
from tokensync.providers.base import InvalidSpec, MintError, MintRequest, Token
from tokensync.schedule import renewal_time, retry_delay
from tokensync.secrets import (
    DigestKey,
    StateQuestion,
    TargetState,
    credentials,
    provider_state,
    state_question,
    state_secret,
    state_secret_name,
    target_secret,
    target_state,
)
from tokensync.sharing import SharedMints

logger = logging.getLogger("tokensync.reconcile")

# A held token this close to expiry is not worth writing back; mint instead.
_MIN_HELD_LIFETIME = timedelta(seconds=2)
# After a failed Secret or status write, try again this soon (the token is in hand).
_WRITE_RETRY = timedelta(seconds=2)
_MIN_WRITE_RETRY = timedelta(seconds=1)
_WRITE_RETRY_CAP = timedelta(minutes=1)
# An API server that does not answer at all (restarting, a network cut) costs nothing to
# ask again: try every few seconds, so the token lands soon after it is back.
_UNREACHABLE_RETRY_CAP = timedelta(seconds=5)


class Cause(StrEnum):
    INITIAL = "Initial"
    SPEC_CHANGED = "SpecChanged"
    RENEW_REQUESTED = "RenewRequested"
    CREDENTIALS_CHANGED = "CredentialsChanged"
    SECRET_MISSING = "SecretMissing"
    SECRET_DRIFTED = "SecretDrifted"
    EXPIRED = "Expired"
    SCHEDULED = "Scheduled"
    RETRY = "Retry"
    WRITE_RETRY = "WriteRetry"


@dataclass(frozen=True)
class Mint:
    cause: Cause


@dataclass(frozen=True)
class Rewrite:
    """Write the token we hold (the Secret was deleted or edited, or writing it failed)."""

    cause: Cause


@dataclass(frozen=True)
class StatusWrite:
    """The token is in its Secret; writing the status is what is left (memory.pending
    stays true until it is written)."""

    write: Callable[[], Awaitable[datetime | None]]


@dataclass(frozen=True)
class Wait:
    until: datetime | None


@dataclass(frozen=True)
class Refuse:
    error: MintError


Decision = Mint | Rewrite | Wait | Refuse


class TargetConflict(MintError):
    reason = "TargetConflict"
    permanent = True


class CredentialsNotFound(MintError):
    reason = "CredentialsNotFound"


class CredentialsUnreadable(MintError):
    """The API server did not hand out the credentials Secret (unreachable, refusing)."""

    reason = "CredentialsUnreadable"


class ProviderNotSupported(MintError):
    reason = "ProviderNotSupported"
    permanent = True


def _held_usable(held: Token | None, renewal: datetime | None, now: datetime) -> bool:
    if held is None:
        return False
    if held.expires_at is not None and held.expires_at - now < _MIN_HELD_LIFETIME:
        return False
    return renewal is None or renewal > now


def decide(
    view: ProviderTokenView,
    target: TargetState | None,
    credentials_digest: str,
    attempted_digest: str | None,
    held: Token | None,
    now: datetime,
    pending: bool = False,
) -> Decision:
    """The one place that says why a token is minted. Pure: same inputs, same answer."""
    status = view.status
    if target is not None and target.owner_uid != view.uid:
        owner = "another ProviderToken" if target.owner_uid else "nothing tokensync manages"
        return Refuse(
            TargetConflict(
                f"Secret {view.target_secret} already exists and belongs to {owner}; "
                "choose another spec.target.name or delete that Secret"
            )
        )
    if pending and _held_usable(held, None, now):
        return Rewrite(Cause.WRITE_RETRY)
    if status.observed_generation is None:
        return Mint(Cause.INITIAL)
    if view.renew_request is not None and view.renew_request != status.last_renew_request:
        return Mint(Cause.RENEW_REQUESTED)
    if status.observed_generation != view.generation:
        return Mint(Cause.SPEC_CHANGED)
    known_digest = attempted_digest or (target.credentials_digest if target else None)
    if known_digest is not None and known_digest != credentials_digest:
        return Mint(Cause.CREDENTIALS_CHANGED)
    renewal = status.renewal_time
    if status.ready != "True":
        if renewal is None or renewal <= now:
            return Mint(Cause.RETRY)
        if target is None and _held_usable(held, None, now):
            return Rewrite(Cause.SECRET_MISSING)
        return Wait(renewal)
    if target is None or not target.token_intact or not target.managed:
        cause = Cause.SECRET_MISSING if target is None else Cause.SECRET_DRIFTED
        return Rewrite(cause) if _held_usable(held, renewal, now) else Mint(cause)
    if target.expires_at is not None and target.expires_at <= now:
        return Mint(Cause.EXPIRED)
    if renewal is not None and renewal <= now:
        return Mint(Cause.SCHEDULED)
    return Wait(renewal)


class SecretSource(Protocol):
    async def labelled(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    async def credentials(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    def remember(self, secret: Mapping[str, Any]) -> None: ...

    def forget(self, namespace: str, name: str) -> None: ...


class Writer(Protocol):
    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def patch_secret(
        self, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]: ...

    async def patch_status(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
    ) -> dict[str, Any]: ...


@dataclass
class Memory:
    """Per-token state that lives only in this process (nothing secret is persisted)."""

    held: Token | None = None
    attempted_digest: str | None = None
    # The held token is not yet in the Secret and the status: write it, do not mint again.
    pending: bool = False
    write_failures: int = 0
    last_write_unreachable: bool = False

    def write_backoff(
        self, error: ApiError, now: datetime, serving_until: datetime | None
    ) -> timedelta:
        """2 s, 4 s, ... up to a minute: a write that keeps failing (a quota, a webhook)
        must not turn into a loop, nor into a new mint each time.

        Every few seconds while the API server does not answer, and the count starts
        again when it answers with a refusal (a server just back may refuse for a moment).
        Never later than half the remaining life of the token the Secret serves now, nor
        of the token held for it.
        """
        unreachable = error.status == 0
        if unreachable != self.last_write_unreachable:
            self.write_failures = 0
            self.last_write_unreachable = unreachable
        self.write_failures += 1
        delay: timedelta = _WRITE_RETRY * 2 ** min(self.write_failures - 1, 5)
        cap = _UNREACHABLE_RETRY_CAP if unreachable else _WRITE_RETRY_CAP
        held_until = self.held.expires_at if self.held is not None else None
        for expiry in (serving_until, held_until):
            if expiry is not None and expiry > now:
                cap = min(cap, max((expiry - now) / 2, _MIN_WRITE_RETRY))
        return delay if delay < cap else cap


def ready_condition(
    view: ProviderTokenView, ready: bool, reason: str, message: str, now: datetime
) -> dict[str, Any]:
    status = "True" if ready else "False"
    unchanged = view.status.ready == status and view.status.last_transition
    return {
        "type": names.READY,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": view.generation,
        "lastTransitionTime": view.status.last_transition if unchanged else format_time(now),
    }


def _ref(view: ProviderTokenView) -> ObjectRef:
    return ObjectRef(namespace=view.namespace, name=view.name, uid=view.uid)


class Reconciler:
    def __init__(
        self,
        *,
        kube: Writer,
        secrets: SecretSource,
        http: HttpClient,
        digest: DigestKey,
        events: EventRecorder,
        clock: Callable[[], datetime],
        jitter: Callable[[], float],
    ) -> None:
        self._kube = kube
        self._secrets = secrets
        self._http = http
        self._digest = digest
        self._events = events
        self._clock = clock
        self._jitter = jitter
        # Told about every status this reconciler writes, so the next look sees it.
        self.on_status: Callable[[Mapping[str, Any]], None] = lambda body: None
        self._memory: dict[tuple[str, str], Memory] = {}
        self._shared = SharedMints()

    def forget(self, key: tuple[str, str]) -> None:
        self._memory.pop(key, None)

    async def reconcile(self, body: Mapping[str, Any]) -> datetime | None:
        """Bring one ProviderToken up to date; returns when to look at it again."""
        outcome = await self.step(body)
        if isinstance(outcome, StatusWrite):
            return await outcome.write()
        return outcome

    async def step(self, body: Mapping[str, Any]) -> datetime | StatusWrite | None:
        """As ``reconcile``, but once a token is in its Secret, the status write that
        follows is handed back to be done off the worker pool."""
        try:
            view = parse_provider_token(body)
        except SpecInvalid as invalid:
            logger.warning("invalid spec %s", _describe(body))
            await self._patch_invalid(body, str(invalid))
            return None
        memory = self._memory.setdefault(view.key, Memory())
        now = self._clock()
        try:
            provider = providers.get(view.provider)
        except KeyError:
            unsupported = ProviderNotSupported(f"provider {view.provider!r} is not supported")
            return await self._fail(view, None, unsupported)
        target_body = await self._secrets.labelled(view.namespace, view.target_secret)
        target = target_state(target_body, view, self._digest) if target_body else None
        try:
            creds = await self._read_credentials(view, provider)
        except MintError as error:
            return await self._fail(view, target, error)
        digest = self._digest.of_mapping(creds)
        decision = decide(
            view, target, digest, memory.attempted_digest, memory.held, now, memory.pending
        )
        match decision:
            case Wait(until=until):
                return until
            case Refuse(error=refusal):
                return await self._fail(view, target, refusal)
            case Rewrite(cause=cause):
                assert memory.held is not None
                return await self._write(view, memory.held, digest, cause, memory)
            case Mint(cause=cause):
                return await self._mint(view, provider, creds, digest, cause, target, memory)

    async def _read_credentials(
        self, view: ProviderTokenView, provider: providers.Provider
    ) -> dict[str, str]:
        try:
            secret = await self._secrets.credentials(view.namespace, view.credentials_secret)
        except ApiError as error:
            answer = "did not answer" if error.status == 0 else f"answered {error.status}"
            raise CredentialsUnreadable(
                f"credentials Secret {view.credentials_secret} could not be read: "
                f"the API server {answer}"
            ) from None
        if secret is None:
            raise CredentialsNotFound(
                f"credentials Secret {view.credentials_secret} not found in namespace "
                f"{view.namespace}"
            )
        return credentials(secret, provider.required_credentials(view.provider_spec))

    async def _mint(
        self,
        view: ProviderTokenView,
        provider: providers.Provider,
        creds: dict[str, str],
        digest: str,
        cause: Cause,
        target: TargetState | None,
        memory: Memory,
    ) -> datetime | StatusWrite | None:
        memory.attempted_digest = digest
        started = time.perf_counter()
        question = state_question(view, digest, self._digest)
        state_body = await self._secrets.labelled(view.namespace, state_secret_name(view))
        saved = provider_state(state_body, view, question)
        if saved.stale:
            # Saved for other credentials, another endpoint or client: it must never be
            # sent again, so it leaves the cluster before anything is sent.
            await self._save_state(view, question, {})
        saved_state = saved.values
        request = MintRequest(
            spec=view.provider_spec,
            credentials=creds,
            http=self._http,
            now=self._clock(),
            fallback_lifetime=view.fallback_lifetime,
            state=saved_state,
        )
        try:
            with metrics.provider_context(view.provider):
                if provider.shareable(view.provider_spec):
                    token = await self._shared.mint(
                        self._share_key(view, digest),
                        view.refresh,
                        request.now,
                        lambda: provider.mint(request),
                        newer_than=view.status.last_mint_time,
                        force=cause is Cause.RENEW_REQUESTED,
                    )
                else:
                    token = await provider.mint(request)
        except MintError as error:
            duration = time.perf_counter() - started
            metrics.MINTS.labels(view.provider, "failure", error.reason).inc()
            metrics.MINT_DURATION.labels(view.provider).observe(duration)
            logger.warning(
                "mint failed %s/%s provider=%s cause=%s reason=%s duration=%.3fs",
                view.namespace,
                view.name,
                view.provider,
                cause,
                error.reason,
                duration,
            )
            return await self._fail(view, target, error, attempted=True)
        metrics.MINTS.labels(view.provider, "success", cause.value).inc()
        metrics.MINT_DURATION.labels(view.provider).observe(time.perf_counter() - started)
        if token.state is not None and token.state != saved_state:
            await self._save_state(view, question, token.state)
        memory.held = token
        memory.pending = True
        return await self._write(
            view, token, digest, cause, memory, duration=time.perf_counter() - started
        )

    async def _write(
        self,
        view: ProviderTokenView,
        token: Token,
        digest: str,
        cause: Cause,
        memory: Memory,
        duration: float | None = None,
    ) -> datetime | StatusWrite | None:
        desired = target_secret(view, token, digest, self._digest)
        try:
            written = await self._write_secret(view, desired)
        except TargetConflict as conflict:
            return await self._fail(view, None, conflict)
        except ApiError as error:
            delay = memory.write_backoff(error, self._clock(), view.status.expires_at)
            logger.warning(
                "secret write failed %s/%s status=%s; writing the same token again in %ss",
                view.namespace,
                view.name,
                error.status,
                int(delay.total_seconds()),
            )
            return self._clock() + delay
        self._secrets.remember(written)
        now = self._clock()
        renewal = renewal_time(token.minted_at, token.expires_at, view.refresh, self._jitter())
        expiry_text = format_time(token.expires_at) or "never"
        message = (
            f"token valid until {expiry_text}; next renewal at {format_time(renewal)}"
            if renewal
            else "token does not expire; minted again only when the spec or credentials change"
        )
        patch = {
            "status": {
                "provider": view.provider,
                "observedGeneration": view.generation,
                "expiresAt": format_time(token.expires_at),
                "renewalTime": format_time(renewal),
                "lastMintTime": format_time(token.minted_at),
                "failedAttempts": 0,
                "lastRenewRequest": view.renew_request,
                "conditions": [ready_condition(view, True, "Minted", message, now)],
            }
        }

        async def write_status() -> datetime | None:
            refused = await self._patch_status(view, patch)
            if refused is not None:
                now = self._clock()
                return now + memory.write_backoff(refused, now, view.status.expires_at)
            memory.pending = False
            memory.write_failures = 0
            if duration is not None:
                logger.info(
                    "minted %s/%s provider=%s cause=%s duration=%.3fs expires=%s next_renewal=%s",
                    view.namespace,
                    view.name,
                    view.provider,
                    cause,
                    duration,
                    expiry_text,
                    format_time(renewal) or "none",
                )
            await self._announce(view, cause, message)
            return renewal

        return StatusWrite(write_status)

    async def _announce(self, view: ProviderTokenView, cause: Cause, message: str) -> None:
        """Events on transitions only: a healthy token renewing on schedule stays quiet."""
        if cause is Cause.SCHEDULED:
            return
        reason = {
            Cause.CREDENTIALS_CHANGED: "CredentialsChanged",
            Cause.SECRET_MISSING: "SecretRestored",
            Cause.SECRET_DRIFTED: "SecretRestored",
        }.get(cause, "Minted")
        note = {
            Cause.INITIAL: "minted the first token",
            Cause.SPEC_CHANGED: "spec changed: minted a new token",
            Cause.RENEW_REQUESTED: "renewal requested through tokensync.dev/renew",
            Cause.CREDENTIALS_CHANGED: "credentials changed: minted a new token",
            Cause.SECRET_MISSING: "target Secret was missing: restored",
            Cause.SECRET_DRIFTED: "target Secret was edited: restored",
            Cause.EXPIRED: "token had expired: minted a new one",
            Cause.RETRY: "recovered: minted a new token",
            Cause.WRITE_RETRY: "wrote the token minted before the API server refused a write",
        }[cause]
        await self._events.record(_ref(view), "Normal", reason, f"{note}; {message}")

    async def _write_secret(
        self, view: ProviderTokenView, desired: dict[str, Any]
    ) -> dict[str, Any]:
        """Create or merge-patch a Secret this ProviderToken owns; never someone else's."""
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
        metadata = {k: v for k, v in desired["metadata"].items() if k not in ("name", "namespace")}
        # Keys we no longer want are removed: null deletes a key in a merge patch.
        stale = {key: None for key in existing.get("data") or {} if key not in desired["data"]}
        patch = {"metadata": metadata, "data": {**stale, **desired["data"]}, "type": "Opaque"}
        try:
            return await self._kube.patch_secret(view.namespace, name, patch)
        except NotFound:
            # The cache still held a Secret that is gone (its DELETED event was missed).
            self._secrets.forget(view.namespace, name)
            return await self._kube.create_secret(view.namespace, desired)

    async def _save_state(
        self, view: ProviderTokenView, question: StateQuestion, state: Mapping[str, str]
    ) -> None:
        """Keep the provider's state (a refresh token) for the next mint, restarts included,
        marked with the question it answers."""
        try:
            written = await self._write_secret(view, state_secret(view, question, state))
        except (ApiError, TargetConflict) as error:
            # Not fatal: the next mint falls back to the provider's first grant.
            logger.warning(
                "provider state of %s/%s not saved: %s",
                view.namespace,
                view.name,
                type(error).__name__,
            )
            return
        self._secrets.remember(written)

    def _share_key(self, view: ProviderTokenView, credentials_digest: str) -> str:
        question = json.dumps(
            [
                view.namespace,
                view.provider,
                view.provider_spec,
                credentials_digest,
                str(view.fallback_lifetime),
            ],
            sort_keys=True,
            default=str,
        )
        return self._digest.of_text(question)

    async def _fail(
        self,
        view: ProviderTokenView,
        target: TargetState | None,
        error: MintError,
        *,
        attempted: bool = False,
    ) -> datetime | None:
        """Report a failure and say when to try again. The Secret is never touched here.

        A failure found before any request (credentials missing, a conflict) that is
        already reported, for the same generation, with its retry still ahead, is not
        written again: our own status write triggers a new look, and that look must not
        write once more.
        """
        now = self._clock()
        status = view.status
        if (
            not attempted
            and status.ready == "False"
            and status.reason == error.reason
            and status.observed_generation == view.generation
            and status.last_renew_request == view.renew_request
            and status.renewal_time is not None
            and status.renewal_time > now
        ):
            return status.renewal_time
        attempts = view.status.failed_attempts + 1
        remaining = target.expires_at - now if target is not None and target.expires_at else None
        delay = retry_delay(
            attempts,
            permanent=error.permanent,
            jitter=self._jitter(),
            retry_after=error.retry_after,
            remaining_lifetime=remaining,
        )
        next_try = now + delay
        kept = (
            f"; the last good token stays in the Secret until {format_time(target.expires_at)}"
            if target is not None and target.expires_at and target.expires_at > now
            else ""
        )
        message = f"{error.message}{kept}; next attempt at {format_time(next_try)}"
        patch = {
            "status": {
                "provider": view.provider,
                "observedGeneration": view.generation,
                "renewalTime": format_time(next_try),
                "failedAttempts": attempts,
                "lastRenewRequest": view.renew_request,
                "conditions": [ready_condition(view, False, error.reason, message, now)],
            }
        }
        transition = view.status.ready != "False" or view.status.reason != error.reason
        if await self._patch_status(view, patch) is not None:
            # Not reported, but not retried sooner than the failure itself asks for.
            return next_try
        if transition:
            event_reason = "MintFailed" if not isinstance(error, TargetConflict) else error.reason
            await self._events.record(
                _ref(view), "Warning", event_reason, f"{error.reason}: {message}"
            )
        return next_try

    async def _patch_status(
        self, view: ProviderTokenView, patch: Mapping[str, Any]
    ) -> ApiError | None:
        """Write the status; returns the API server's refusal, or None when it was written."""
        try:
            patched = await self._kube.patch_status(
                names.GROUP, names.VERSION, names.PLURAL, view.namespace, view.name, patch
            )
        except ApiError as error:
            logger.warning(
                "status write failed %s/%s status=%s", view.namespace, view.name, error.status
            )
            return error
        self.on_status(patched)
        return None

    async def _patch_invalid(self, body: Mapping[str, Any], message: str) -> None:
        """Report a spec the schema let through but tokensync cannot serve, once per
        generation: the status write comes back as an event, which must not write again."""
        metadata = body.get("metadata") or {}
        status = Status.parse(body.get("status") or {})
        if status.reason == InvalidSpec.reason and status.observed_generation == metadata.get(
            "generation"
        ):
            return None
        patch = {
            "status": {
                "observedGeneration": metadata.get("generation"),
                "conditions": [
                    {
                        "type": names.READY,
                        "status": "False",
                        "reason": InvalidSpec.reason,
                        "message": message,
                        "observedGeneration": metadata.get("generation"),
                        "lastTransitionTime": format_time(self._clock()),
                    }
                ],
            }
        }
        try:
            patched = await self._kube.patch_status(
                names.GROUP,
                names.VERSION,
                names.PLURAL,
                metadata.get("namespace", ""),
                metadata.get("name", ""),
                patch,
            )
        except ApiError:
            return None
        self.on_status(patched)
        return None


def _describe(body: Mapping[str, Any]) -> str:
    metadata = body.get("metadata") or {}
    return f"{metadata.get('namespace')}/{metadata.get('name')}"
