"""What rollouts say: Events on the ProviderToken whose token caused them, and log lines.
Names only, never a token or its id. Each failure once, not at every attempt."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from tokensync.events import EventRecorder, ObjectRef
from tokensync.model import Key, format_time, object_key
from tokensync.rollout_policy import Action, Plan, Verdict, span

logger = logging.getLogger("tokensync.rollouts")

# What a namespace's owner applies to let the operator restart workloads there.
GRANT = "deploy/rollouts/role.yaml"


def restarted_note(refs: Iterable[str], secret: str) -> str:
    return f"restarted {listing(refs, 20)} for the new token in Secret {secret}"


def not_permitted_note(secret: str, verb: str, namespace: str, again: timedelta) -> str:
    return (
        f"workloads that opted in to restart on rotation of Secret {secret} were not "
        f"restarted: the operator may not {verb} deployments, statefulsets and daemonsets "
        f"in namespace {namespace} (403). To allow it, the namespace's owner applies {GRANT} "
        f"(kubectl apply -n {namespace} -f {GRANT}): a Role with list and patch on apps "
        "deployments, statefulsets and daemonsets, bound to the operator's ServiceAccount; "
        f"the owed restarts follow within {span(again)} of the grant. "
        "The token is in its Secret as usual."
    )


def failed_note(ref: str, secret: str, status: int, retry: timedelta) -> str:
    answer = "did not answer" if status == 0 else f"answered {status}"
    return (
        f"could not restart {ref} for the new token in Secret {secret}: the API server "
        f"{answer}; trying again in {span(retry)}"
    )


def listing(items: Iterable[str], most: int) -> str:
    listed = sorted(items)
    more = len(listed) - most
    return ", ".join(listed[:most]) + (f" and {more} more" if more > 0 else "")


class Notices:
    def __init__(self, events: EventRecorder) -> None:
        self._events = events
        self._warned: set[Key] = set()  # RolloutNotPermitted: once per ProviderToken
        self._failures: dict[tuple[str, str], int] = {}  # RolloutFailed: once per failure

    def restarted(self, namespace: str, verdict: Verdict) -> None:
        workload = verdict.workload
        self._failures.pop((namespace, workload.ref), None)
        logger.info(
            "rollouts: restarted %s %s/%s for the new token in Secret %s",
            workload.kind,
            namespace,
            workload.name,
            ", ".join(verdict.changed),
        )

    async def announce(
        self, restarted: Mapping[str, list[str]], owners: Mapping[str, Mapping[str, Any]]
    ) -> None:
        """One Event per ProviderToken and look, naming every workload restarted."""
        for secret, refs in restarted.items():
            note = restarted_note(refs, secret)
            await self._post(owners.get(secret), "Normal", "RolloutRestarted", note)

    async def refused(
        self,
        namespace: str,
        verb: str,
        status: str,
        owners: Mapping[str, Mapping[str, Any] | None],
        refused_for: timedelta,
    ) -> None:
        """The namespace has not granted the Role. Said (a warning, and an Event on each
        ProviderToken once per process) when a token changed there whose ProviderToken
        sets ``spec.rollout``: it expects restarts. With --rollouts on for a whole cluster,
        most namespaces never asked for any; a Warning on every token there at every
        rotation would be noise, so for them it is a debug line."""
        expecting = {
            secret: owner
            for secret, owner in owners.items()
            if owner is not None
            and "rollout" in (owner.get("spec") or {})
            and object_key(owner) not in self._warned
        }
        logger.log(
            logging.WARNING if expecting else logging.DEBUG,
            "rollouts: %s of workloads in namespace %s refused (%s): the namespace has not "
            "granted %s; looking again in %s",
            verb,
            namespace,
            status,
            GRANT,
            span(refused_for),
        )
        for secret, owner in sorted(expecting.items()):
            self._warned.add(object_key(owner))
            note = not_permitted_note(secret, verb, namespace, refused_for)
            await self._post(owner, "Warning", "RolloutNotPermitted", note)

    async def failed(
        self,
        namespace: str,
        verdict: Verdict,
        owners: Mapping[str, Mapping[str, Any]],
        status: int,
        retry: timedelta,
    ) -> None:
        ref = verdict.workload.ref
        logger.warning("rollouts: patch of %s in %s failed (status %s)", ref, namespace, status)
        if self._failures.get((namespace, ref)) == status:
            return  # said once; said again only when the failure changes
        self._failures[(namespace, ref)] = status
        for secret in verdict.changed:
            note = failed_note(ref, secret, status, retry)
            await self._post(owners.get(secret), "Warning", "RolloutFailed", note)

    @staticmethod
    def swept(
        namespace: str,
        decided: Plan,
        changed: set[str],
        counts: tuple[int, int],
        retrying: bool,
    ) -> None:
        """One line per look: at info when a token named by an opted-in workload changed,
        or anything was done; a namespace where nothing opted in is no news."""
        restarted, recorded = counts
        deferred = len(decided.of(Action.DEFER))
        news = (changed and decided.verdicts) or restarted or recorded or deferred or retrying
        logger.log(
            logging.INFO if news else logging.DEBUG,
            "rollouts: swept %s (%s): %d opted-in workloads, %d restarted, %d recorded, "
            "%d deferred%s%s",
            namespace,
            f"new token in {listing(changed, 5)}" if changed else "scheduled look",
            len(decided.verdicts),
            restarted,
            recorded,
            deferred,
            f" until {format_time(decided.next_look)}" if decided.next_look else "",
            ", some to try again" if retrying else "",
        )

    async def _post(
        self, owner: Mapping[str, Any] | None, kind: str, reason: str, note: str
    ) -> None:
        metadata = (owner or {}).get("metadata") or {}
        if metadata.get("name"):
            ref = ObjectRef(
                metadata.get("namespace", ""), metadata["name"], metadata.get("uid", "")
            )
            await self._events.record(ref, kind, reason, note)
