"""One ProviderToken brought up to date: gather, decide, mint, write the Secret, then
the status.

``Reconciler.step`` reads what ``decision.decide`` needs and carries out its answer: a
mint and one Secret write (``secret_writes``). Once the token is in its Secret it hands back a
``PendingStatus``, the status write that is left; the controller performs it with
``write_status`` off the worker pool (docs/decisions/0004-scale.md). What the status and
the Events say comes from ``status``; when to try again from ``timing``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from tokensync import names, status
from tokensync.clock import Clock
from tokensync.decision import (
    Cause,
    InvalidTemplate,
    Mint,
    ProviderNotSupported,
    Refuse,
    Rewrite,
    TargetConflict,
    TargetTypeImmutable,
    Wait,
    decide,
)
from tokensync.digest import DigestKey
from tokensync.endpoints import HttpClient
from tokensync.events import EventRecorder, ObjectRef
from tokensync.kube import ApiError
from tokensync.memory import Memory
from tokensync.mint_inputs import MintInputs, SecretReader, TokenRequester
from tokensync.minting import Minting
from tokensync.model import (
    ProviderTokenView,
    SpecInvalid,
    format_time,
    object_key,
    parse_provider_token,
)
from tokensync.providers.base import MintError, Provider, Token
from tokensync.providers.registry import Registry
from tokensync.revocation import FinalizerApi, Revocations, StateSource
from tokensync.secret_bodies import (
    TargetState,
    contents,
    provider_state,
    state_question,
    state_secret_name,
    target_secret,
    target_state,
    token_digest,
)
from tokensync.secret_writes import SecretWrites
from tokensync.templating import TemplateError
from tokensync.templating import check as check_template
from tokensync.timing import renewal_time, retry_delay, urgent

logger = logging.getLogger("tokensync.reconcile")

# The object changed under a write of ours: the watch brings the newer one soon.
_LOOK_AGAIN = timedelta(seconds=1)


class SecretSource(SecretReader, StateSource, Protocol):
    pass


class StatusApi(TokenRequester, FinalizerApi, Protocol):
    async def patch_status(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class PendingStatus:
    """The token is in its Secret; writing the status is what is left (``pending``
    stays true in the token's memory until it is written)."""

    view: ProviderTokenView
    report: status.Report
    renewal: datetime | None
    cause: Cause
    # Seconds the mint took; None when a held token was written again.
    duration: float | None
    memory: Memory = field(repr=False, compare=False)


Outcome = datetime | PendingStatus | None


class Reconciler:
    def __init__(
        self,
        *,
        kube: StatusApi,
        secrets: SecretSource,
        secret_writes: SecretWrites,
        http: HttpClient,
        providers: Registry,
        digest: DigestKey,
        events: EventRecorder,
        clock: Clock,
        jitter: Callable[[], float],
        on_status: Callable[[Mapping[str, Any]], None],
        on_token_changed: Callable[[str, str], None] | None = None,
        forbidden_audiences: frozenset[str] = frozenset(),
    ) -> None:
        self._kube = kube
        self._secrets = secrets
        self._inputs = MintInputs(secrets, kube, forbidden_audiences)
        self._secret_writes = secret_writes
        self._http = http
        self._providers = providers
        self._digest = digest
        self._events = events
        self._clock = clock
        self._jitter = jitter
        # Told about every status this reconciler writes, so the next look sees it.
        self._on_status = on_status
        # Told (namespace, target Secret) once a different token is in a target Secret:
        # the rollouts of workloads that asked for it (``rollouts``).
        self._on_token_changed = on_token_changed
        self._memory: dict[tuple[str, str], Memory] = {}
        self._minting = Minting(self._inputs, http, digest, clock)
        self._revocations = Revocations(
            kube=kube,
            inputs=self._inputs,
            secrets=secrets,
            http=http,
            digest=digest,
            events=events,
            clock=clock,
            on_patched=on_status,
        )

    def forget(self, key: tuple[str, str], uid: str = "") -> None:
        self._memory.pop(key, None)
        self._revocations.forget(uid)

    async def reconcile(self, body: Mapping[str, Any]) -> datetime | None:
        """Bring one ProviderToken up to date; returns when to look at it again."""
        outcome = await self.step(body)
        if isinstance(outcome, PendingStatus):
            return await self.write_status(outcome)
        return outcome

    async def step(self, body: Mapping[str, Any]) -> Outcome:
        """As ``reconcile``, but once a token is in its Secret, the status write that
        follows is handed back for ``write_status``."""
        try:
            view = parse_provider_token(body)
        except SpecInvalid as invalid:
            logger.warning("invalid spec %s/%s", *object_key(body))
            await self._report_invalid(body, str(invalid))
            return await self._revocations.release_unreadable(body)
        memory = self._memory.setdefault(view.key, Memory())
        now = self._clock()
        try:
            provider = self._providers.get(view.provider)
        except KeyError:
            if view.deleting_since is not None:
                return await self._revocations.on_delete(view, None)
            unsupported = ProviderNotSupported(f"provider {view.provider!r} is not supported")
            return await self._fail(view, None, unsupported)
        if view.deleting_since is not None:
            # Going: nothing is minted for it any more; only its revocation, if asked for.
            return await self._revocations.on_delete(view, provider)
        target_body = await self._secrets.labelled(view.namespace, view.target_secret)
        target = target_state(target_body, view, self._digest) if target_body else None
        try:
            if view.template is not None and memory.template_checked != view.generation:
                check_template(view.template)
                memory.template_checked = view.generation
            if not await self._revocations.hold(view, provider):
                return now + _LOOK_AGAIN
            creds = await self._inputs.credentials(view, provider)
        except TemplateError as error:
            # Before any request: a template that cannot render would waste a mint.
            return await self._fail(view, target, InvalidTemplate(error.message))
        except MintError as error:
            return await self._fail(view, target, error)
        digest = self._digest.of_mapping(creds)
        held = memory.held if memory.minted_for == view.mint_question else None
        decision = decide(view, target, digest, memory.attempted_digest, held, now, memory.pending)
        match decision:
            case Wait(until=until):
                return until
            case Refuse(error=refusal):
                return await self._fail(view, target, refusal)
            case Rewrite(cause=cause):
                assert held is not None
                return await self._write(view, held, creds, digest, cause, memory)
            case Mint(cause=cause):
                return await self._mint(view, provider, creds, digest, cause, target, memory)

    async def write_status(self, pending: PendingStatus) -> datetime | None:
        """The status of a token now in its Secret; returns when to look again."""
        view, memory = pending.view, pending.memory
        refused = await self._patch_status(view.namespace, view.name, pending.report.patch)
        if refused is not None:
            now = self._clock()
            return now + memory.write_backoff(refused, view.status.expires_at, now)
        memory.pending = False
        memory.write_failures = 0
        if pending.duration is not None:
            logger.info(
                "minted %s/%s provider=%s cause=%s duration=%.3fs expires=%s next_renewal=%s",
                view.namespace,
                view.name,
                view.provider,
                pending.cause,
                pending.duration,
                format_time(memory.held.expires_at if memory.held else None) or "never",
                format_time(pending.renewal) or "none",
            )
        await self._announce(view, status.mint_event(pending.cause, pending.report.message))
        return pending.renewal

    async def _mint(
        self,
        view: ProviderTokenView,
        provider: Provider,
        creds: dict[str, str],
        digest: str,
        cause: Cause,
        target: TargetState | None,
        memory: Memory,
    ) -> Outcome:
        memory.attempted_digest = digest
        question = state_question(view, digest, self._digest)
        state_body = await self._secrets.labelled(view.namespace, state_secret_name(view))
        saved = provider_state(state_body, view, question)
        if saved.stale:
            # Saved for other credentials, another endpoint or client: it must never be
            # sent again, so it leaves the cluster before anything is sent.
            await self._secret_writes.save_state(view, question, {})
        try:
            minted = await self._minting.mint(view, provider, creds, digest, cause, saved.values)
        except MintError as error:
            return await self._fail(view, target, error, attempted=True)
        token, duration = minted.token, minted.duration
        if token.state is not None and token.state != saved.values:
            await self._secret_writes.save_state(view, question, token.state)
        memory.held = token
        memory.minted_for = view.mint_question
        memory.pending = True
        return await self._write(view, token, creds, digest, cause, memory, duration=duration)

    async def _write(
        self,
        view: ProviderTokenView,
        token: Token,
        creds: Mapping[str, str],
        digest: str,
        cause: Cause,
        memory: Memory,
        duration: float | None = None,
    ) -> Outcome:
        """The token into its Secret; the status write is handed back as pending."""
        before = await self._secrets.labelled(view.namespace, view.target_secret)
        try:
            rendered = contents(view, token, creds)
        except TemplateError as error:
            # The token is held; the Secret keeps its last good contents until the
            # template is fixed (a new generation writes the held token, no new mint).
            kept = target_state(before, view, self._digest) if before else None
            return await self._fail(view, kept, InvalidTemplate(error.message))
        desired = target_secret(view, token, digest, self._digest, rendered)
        try:
            await self._secret_writes.write(view, desired)
        except (TargetConflict, TargetTypeImmutable) as conflict:
            return await self._fail(view, None, conflict)
        except ApiError as error:
            now = self._clock()
            delay = memory.write_backoff(error, view.status.expires_at, now)
            logger.warning(
                "secret write failed %s/%s status=%s; writing the same token again in %ss",
                view.namespace,
                view.name,
                error.status,
                int(delay.total_seconds()),
            )
            return now + delay
        if self._on_token_changed is not None and token_digest(before) != token_digest(desired):
            self._on_token_changed(view.namespace, view.target_secret)
        now = self._clock()
        renewal = renewal_time(token.minted_at, token.expires_at, view.refresh, self._jitter())
        report = status.minted(view, token, renewal, now)
        return PendingStatus(view, report, renewal, cause, duration, memory)

    async def _fail(
        self,
        view: ProviderTokenView,
        target: TargetState | None,
        error: MintError,
        *,
        attempted: bool = False,
    ) -> datetime | None:
        """Report a failure and say when to try again. The Secret is never touched here."""
        now = self._clock()
        if not attempted and status.already_reported(view, error, now):
            return view.status.renewal_time
        serving_until = target.expires_at if target is not None else None
        # Without a Secret the workload has nothing: as urgent as an expired token.
        serving_for = target.valid_for(now) if target is not None else timedelta(0)
        delay = retry_delay(
            now - status.failing_since(view, now),
            serving_for=serving_for,
            permanent=error.permanent,
            awaits_user=error.awaits_user,
            jitter=self._jitter(),
            retry_after=error.retry_after,
        )
        next_try = now + delay
        attempts = view.status.failed_attempts + 1
        chasing = urgent(serving_for, permanent=error.permanent, awaits_user=error.awaits_user)
        report = status.failed(view, error, attempts, next_try, serving_until, now, urgent=chasing)
        if status.repeats(view, error, report):
            return next_try
        if await self._patch_status(view.namespace, view.name, report.patch) is not None:
            # Not reported, but not retried sooner than the failure itself asks for.
            return next_try
        await self._announce(view, status.failure_event(view, error, report.message))
        return next_try

    async def _report_invalid(self, body: Mapping[str, Any], message: str) -> None:
        """A spec the schema let through but tokensync cannot serve, once per generation."""
        report = status.invalid(body, message, self._clock())
        if report is not None:
            await self._patch_status(*object_key(body), report.patch)

    async def _patch_status(
        self, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> ApiError | None:
        """Write the status; returns the API server's refusal, or None when it was written."""
        try:
            patched = await self._kube.patch_status(
                names.GROUP, names.VERSION, names.PLURAL, namespace, name, patch
            )
        except ApiError as error:
            logger.warning("status write failed %s/%s status=%s", namespace, name, error.status)
            return error
        self._on_status(patched)
        return None

    async def _announce(
        self, view: ProviderTokenView, announcement: status.Announcement | None
    ) -> None:
        if announcement is not None:
            ref = ObjectRef(namespace=view.namespace, name=view.name, uid=view.uid)
            await self._events.record(
                ref, announcement.type, announcement.reason, announcement.note
            )
