"""When to look at which namespace, and one look carried out.

A namespace is looked at shortly after a token in it changed (marks within the window
coalesce into one look), when a deferred restart falls due, and every ``resync`` (the net
under a crash between a Secret write and its restart: the records on the workloads, not
this process, say what is owed). Only the leader looks; a standby makes no call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tokensync import rollout_policy as policy
from tokensync.clock import Clock
from tokensync.events import EventRecorder
from tokensync.kube import ApiError, Conflict, NotFound
from tokensync.rollout_policy import Action, Pacer, Plan
from tokensync.rollouts.gather import Gathered, RolloutApi, gather, opted_in, owner_of
from tokensync.rollouts.notices import Notices
from tokensync.secret_cache import SecretCache
from tokensync.token_cache import TokenCache
from tokensync.workqueue import WorkQueue

logger = logging.getLogger("tokensync.rollouts")

# The key of the periodic look for namespaces with ProviderTokens (no namespace is "").
_DISCOVER = ""
_DISCOVERY = timedelta(seconds=5)


@dataclass(frozen=True)
class Timing:
    # Marks within this window after a token change coalesce into one look.
    window: timedelta = timedelta(seconds=2)
    # Every namespace with ProviderTokens is looked at this often (plus up to a tenth).
    resync: timedelta = timedelta(minutes=10)
    # After a failed list or patch (unreachable, 5xx, a webhook's refusal).
    retry: timedelta = timedelta(seconds=30)
    # A namespace that answered 403 is not asked again for this long.
    refused: timedelta = timedelta(minutes=5)
    # The workload changed between the list and the patch (409): look again nearly at once.
    conflict: timedelta = timedelta(seconds=2)
    # A Secret whose ProviderToken the watch has not shown yet (just started).
    owner_unseen: timedelta = timedelta(seconds=5)


@dataclass
class _Done:
    restarted: dict[str, list[str]] = field(default_factory=dict)  # Secret -> workloads
    count: int = 0
    recorded: int = 0
    retry_at: datetime | None = None

    def retry(self, at: datetime) -> None:
        self.retry_at = at if self.retry_at is None else min(self.retry_at, at)


class RolloutSweeper:
    def __init__(
        self,
        kube: RolloutApi,
        *,
        secrets: SecretCache,
        tokens: TokenCache,
        events: EventRecorder,
        clock: Clock,
        jitter: Callable[[], float],
        timing: Timing | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        self._kube, self._secrets, self._tokens = kube, secrets, tokens
        self._clock, self._jitter = clock, jitter
        self._timing = timing or Timing()
        self._pacer = pacer or Pacer()
        self._notices = Notices(events)
        # One namespace at a time (the pacer's state is shared); the queue's timer holds
        # each namespace's next look, ``_next`` the same so that a mark only ever brings
        # a look forward: a stream of rotations never starves a namespace.
        self._queue: WorkQueue[str] = WorkQueue(self._look, workers=1, clock=clock)
        self._next: dict[str, datetime] = {}
        # Secrets whose token changed since their namespace was last looked at: what a
        # look is "for" (its Events), kept while the namespace refuses or is unreachable.
        self._changed: dict[str, set[str]] = {}
        self._known: set[str] = set()
        self._refused_until: dict[str, datetime] = {}
        # What was refused there (verb, status), for telling a ProviderToken that comes later.
        self._refused_how: dict[str, tuple[str, str]] = {}
        self._leading = True

    def token_changed(self, namespace: str, secret: str) -> None:
        """A different token is in ``secret`` (the reconciler calls this): look soon."""
        self._changed.setdefault(namespace, set()).add(secret)
        self._mark(namespace, self._clock() + self._timing.window)

    def start(self) -> None:
        self._queue.start()
        self._queue.enqueue(_DISCOVER)

    async def stop(self) -> None:
        await self._queue.stop()

    def running(self) -> bool:
        return self._queue.running()

    def pause(self) -> None:
        """Standby: no calls at all; a look under way stops before its next write."""
        self._leading = False
        self._queue.pause()

    def resume(self) -> None:
        """Leading (again): look at every namespace, as after a start."""
        self._leading = True
        self._known.clear()
        self._queue.resume()
        self._queue.enqueue(_DISCOVER)

    def _mark(self, namespace: str, at: datetime) -> None:
        held = self._next.get(namespace)
        if held is None or at < held:
            self._next[namespace] = at
            self._queue.schedule(namespace, at)

    async def _look(self, namespace: str) -> None:
        self._next.pop(namespace, None)
        if namespace == _DISCOVER:
            self._discover()
            return
        try:
            await self.sweep(namespace)
        except Exception as error:  # a namespace is never dropped, whatever broke
            logger.error("rollouts: look at %s failed: %s", namespace, type(error).__name__)
            self._mark(namespace, self._clock() + self._timing.retry)

    def _discover(self) -> None:
        """Each namespace with ProviderTokens not known yet is looked at at once: after a
        start, a crash between a Secret write and its restart is found here."""
        now = self._clock()
        present = {namespace for namespace, _ in self._tokens}
        for namespace in present - self._known:
            self._mark(namespace, now)
        for namespace in self._known - present - set(self._changed):
            self._next.pop(namespace, None)
            self._queue.forget(namespace)
        self._known = present
        self._mark(_DISCOVER, now + _DISCOVERY)

    async def sweep(self, namespace: str) -> None:
        """Look at one namespace's opted-in workloads and do what the policy says."""
        now = self._clock()
        changed = self._changed.pop(namespace, set())
        refused = self._refused_until.get(namespace)
        if refused is not None and refused > now:
            # Not asked again; but a ProviderToken whose token came after the refusal is
            # told now, not when the refusal is looked at again.
            verb, status = self._refused_how[namespace]
            owners = await self._owners(namespace, changed)
            await self._notices.refused(namespace, verb, status, owners, refused - now)
            self._keep(namespace, changed, refused)
            return
        try:
            workloads = await opted_in(self._kube, namespace)
        except ApiError as error:
            await self._api_error(namespace, changed, error, "list", now)
            return
        self._refused_until.pop(namespace, None)
        self._refused_how.pop(namespace, None)
        gathered = await gather(self._kube, self._secrets, self._tokens, namespace, workloads)
        decided = policy.plan(
            namespace, workloads, gathered.secrets, self._pacer, now, self._jitter
        )
        self._pacer = decided.pacer
        done = await self._carry_out(namespace, decided, gathered, changed, now)
        if not self._leading:
            # Leadership lost under way: the next leader looks at every namespace.
            self._changed.setdefault(namespace, set()).update(changed)
            return
        await self._notices.announce(done.restarted, gathered.owners)
        resync = now + self._timing.resync * (1 + 0.1 * self._jitter())
        unseen = now + self._timing.owner_unseen if gathered.unseen else None
        looks = (resync, decided.next_look, done.retry_at, unseen)
        self._mark(namespace, min(t for t in looks if t is not None))
        counts = (done.count, done.recorded)
        self._notices.swept(namespace, decided, changed, counts, done.retry_at is not None)

    async def _carry_out(
        self, namespace: str, decided: Plan, gathered: Gathered, changed: set[str], now: datetime
    ) -> _Done:
        """One merge patch per workload: restarts first, then records."""
        done = _Done()
        for verdict in [*decided.of(Action.RESTART), *decided.of(Action.RECORD)]:
            if not self._leading:
                break
            workload = verdict.workload
            patch = policy.restart_patch(verdict, now)
            try:
                await self._kube.patch_workload(
                    policy.PLURAL[workload.kind], namespace, workload.name, patch
                )
            except NotFound:
                continue  # deleted since the list: nothing to restart
            except Conflict:
                done.retry(now + self._timing.conflict)
                continue
            except ApiError as error:
                # RBAC says "cannot patch"; a 403 from an admission webhook is a failure.
                if error.status == 403 and "cannot patch" in error.message:
                    await self._api_error(namespace, changed, error, "patch", now)
                    done.retry(self._refused_until[namespace])
                    break
                retry = self._timing.retry
                await self._notices.failed(namespace, verdict, gathered.owners, error.status, retry)
                done.retry(now + retry)
                continue
            if verdict.action is Action.RECORD:
                done.recorded += 1
                continue
            done.count += 1
            self._notices.restarted(namespace, verdict)
            for secret in verdict.changed:
                done.restarted.setdefault(secret, []).append(workload.ref)
        return done

    async def _api_error(
        self, namespace: str, changed: set[str], error: ApiError, verb: str, now: datetime
    ) -> None:
        if error.status != 403:
            # Unreachable, overloaded: the marks wait for the next look.
            logger.warning(
                "rollouts: %s of workloads in %s failed (status %s); looking again in %s",
                verb,
                namespace,
                error.status,
                policy.span(self._timing.retry),
            )
            self._keep(namespace, changed, now + self._timing.retry)
            return
        until = now + self._timing.refused
        status = f"{error.status} {error.reason}".strip()
        self._refused_until[namespace] = until
        self._refused_how[namespace] = (verb, status)
        self._keep(namespace, changed, until)
        owners = await self._owners(namespace, changed)
        await self._notices.refused(namespace, verb, status, owners, self._timing.refused)

    async def _owners(
        self, namespace: str, secrets: set[str]
    ) -> dict[str, Mapping[str, Any] | None]:
        return {
            secret: owner_of(
                self._tokens, namespace, await self._secrets.labelled(namespace, secret) or {}
            )
            for secret in secrets
        }

    def _keep(self, namespace: str, changed: set[str], until: datetime) -> None:
        if changed:
            self._changed.setdefault(namespace, set()).update(changed)
        self._mark(namespace, until)
