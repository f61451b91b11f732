"""What one look at a namespace reads: its opted-in workloads (listed by label selector,
the only way this operator ever lists workloads), and the named Secrets' tokens from the
Secret cache with the ProviderTokens that own them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from tokensync import names
from tokensync import rollout_policy as policy
from tokensync.kube import ApiError
from tokensync.model import (
    DEFAULT_ROLLOUT_MIN_INTERVAL,
    SpecInvalid,
    parse_time,
    rollout_min_interval,
)
from tokensync.rollout_policy import SecretToken, Workload
from tokensync.secret_cache import SecretCache
from tokensync.token_cache import TokenCache


class RolloutApi(Protocol):
    async def list_workloads(
        self, kind_plural: str, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]: ...

    async def patch_workload(
        self, kind_plural: str, namespace: str, name: str, merge_patch: Mapping[str, Any]
    ) -> dict[str, Any]: ...

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...


@dataclass
class Gathered:
    workloads: list[Workload]
    # The named Secrets that hold a tokensync token, and the ProviderTokens owning them.
    secrets: dict[str, SecretToken] = field(default_factory=dict)
    owners: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    # A named Secret's ProviderToken is not in the cache (yet): look again soon.
    unseen: bool = False


async def opted_in(kube: RolloutApi, namespace: str) -> list[Workload]:
    """Three LISTs with the opt-in label selector; raises ``ApiError`` (403: no grant)."""
    return [
        policy.workload_of(kind, body)
        for plural, kind in policy.WORKLOAD_KINDS
        for body in await kube.list_workloads(plural, namespace, policy.SELECTOR)
    ]


def owner_of(
    tokens: TokenCache, namespace: str, secret: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    """The ProviderToken that controls ``secret``, as the token cache holds it."""
    for reference in (secret.get("metadata") or {}).get("ownerReferences") or []:
        if reference.get("controller") and reference.get("kind") == names.KIND:
            body = tokens.get((namespace, str(reference.get("name"))))
            uid = ((body or {}).get("metadata") or {}).get("uid")
            return body if body is not None and uid == reference.get("uid") else None
    return None


async def gather(
    kube: RolloutApi,
    secrets: SecretCache,
    tokens: TokenCache,
    namespace: str,
    workloads: list[Workload],
) -> Gathered:
    gathered = Gathered(workloads)
    for name in dict.fromkeys(n for w in workloads for n in w.secrets):
        body = await secrets.labelled(namespace, name) or {}
        owner = owner_of(tokens, namespace, body)
        try:
            # Only the field rollouts need: another field's mistake is not theirs to skip.
            interval = rollout_min_interval(owner.get("spec") or {}) if owner else None
        except SpecInvalid:
            continue  # its status says why; its Secret is not followed meanwhile
        found = policy.secret_token(
            body, DEFAULT_ROLLOUT_MIN_INTERVAL if interval is None else interval
        )
        if found is not None and owner is not None:
            gathered.owners[name], gathered.secrets[name] = owner, found
        gathered.unseen = gathered.unseen or (found is not None and owner is None)
    await _creation_times(kube, namespace, gathered)
    return gathered


async def _creation_times(kube: RolloutApi, namespace: str, gathered: Gathered) -> None:
    """Only for a workload without a record for a Secret whose token is newer than the
    workload: was it the Secret's first token? One read per Secret, at opt-in only (the
    cache keeps no creation times)."""
    secrets = gathered.secrets
    # Only for a Secret the workload names: one it does not name owes it nothing.
    wanted = {
        name
        for workload in gathered.workloads
        for name in workload.secrets
        if name in secrets and policy.needs_creation_time(workload, secrets[name])
    }
    for name in sorted(wanted):
        try:
            body = await kube.get_secret(namespace, name) or {}
        except ApiError:
            body = {}
        created = parse_time((body.get("metadata") or {}).get("creationTimestamp"))
        if created is None:
            del secrets[name]  # unknown this time: decided at the next look
        else:
            secrets[name] = replace(secrets[name], created_at=created)
