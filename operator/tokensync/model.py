"""Typed, read-only views of a ProviderToken and of the Secrets around it."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from tokensync import names
from tokensync.templating import TemplateError, TemplateSpec
from tokensync.timing import RefreshPolicy, parse_duration

Key = tuple[str, str]  # (namespace, name)

DEFAULT_ROLLOUT_MIN_INTERVAL = timedelta(minutes=1)


def object_key(body: Mapping[str, Any]) -> Key:
    metadata = body.get("metadata") or {}
    return (metadata.get("namespace", ""), metadata.get("name", ""))


class SpecInvalid(Exception):
    """The spec passed the CRD's schema but still cannot be served (message is safe)."""


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    # isoformat is C code; strftime was 2% of the operator's CPU at steady renewal.
    return value.astimezone(UTC).isoformat(timespec="seconds")[:19] + "Z"


_KEPT_FIELDS = ("spec", "status", "data", "type")
_KEPT_METADATA = (
    "name",
    "namespace",
    "uid",
    "generation",
    "resourceVersion",
    "labels",
    "ownerReferences",
    "finalizers",
    "deletionTimestamp",
)


def trimmed(body: Mapping[str, Any]) -> dict[str, Any]:
    """What tokensync reads of an object, and nothing else, for its caches.

    managedFields, kubectl's last-applied copy and other annotations are most of an
    object's size; at 5,000 ProviderTokens and as many Secrets, caching them whole cost
    more memory than everything else together.
    """
    metadata = body.get("metadata") or {}
    kept = {key: metadata[key] for key in _KEPT_METADATA if key in metadata}
    annotations = {
        key: value
        for key, value in (metadata.get("annotations") or {}).items()
        if key.startswith(f"{names.GROUP}/")
    }
    if annotations:
        kept["annotations"] = annotations
    return {
        "metadata": kept,
        **{key: body[key] for key in _KEPT_FIELDS if key in body},
    }


def resource_version(body: Mapping[str, Any]) -> int:
    """etcd revisions are integers; an unparsable one sorts first and never wins."""
    try:
        return int(body.get("metadata", {}).get("resourceVersion", -1))
    except (TypeError, ValueError):
        return -1


@dataclass(frozen=True)
class Status:
    ready: str | None = None
    reason: str | None = None
    message: str | None = None
    last_transition: str | None = None
    observed_generation: int | None = None
    expires_at: datetime | None = None
    renewal_time: datetime | None = None
    last_mint_time: datetime | None = None
    failed_attempts: int = 0
    last_renew_request: str | None = None

    @classmethod
    def parse(cls, status: Mapping[str, Any]) -> Status:
        ready: Mapping[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == names.READY), {}
        )
        generation = status.get("observedGeneration")
        attempts = status.get("failedAttempts")
        return cls(
            ready=ready.get("status"),
            reason=ready.get("reason"),
            message=ready.get("message"),
            last_transition=ready.get("lastTransitionTime"),
            observed_generation=generation if isinstance(generation, int) else None,
            expires_at=parse_time(status.get("expiresAt")),
            renewal_time=parse_time(status.get("renewalTime")),
            last_mint_time=parse_time(status.get("lastMintTime")),
            failed_attempts=attempts if isinstance(attempts, int) and attempts > 0 else 0,
            last_renew_request=status.get("lastRenewRequest"),
        )


@dataclass(frozen=True)
class ProviderTokenView:
    namespace: str
    name: str
    uid: str
    generation: int
    provider: str
    provider_spec: Mapping[str, Any] = field(repr=False)
    credentials_secret: str
    target_secret: str
    target_key: str
    # The Secret's type and, when set, the templates of its keys and metadata.
    target_type: str
    template: TemplateSpec | None
    refresh: RefreshPolicy
    fallback_lifetime: timedelta | None
    renew_request: str | None
    status: Status
    # spec.rollout.minInterval: the least time between two restarts of one workload.
    rollout_min_interval: timedelta = DEFAULT_ROLLOUT_MIN_INTERVAL
    # For the revocation finalizer: what is on the object, and since when it is going.
    finalizers: tuple[str, ...] = ()
    deleting_since: datetime | None = None
    resource_version: str = ""

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @cached_property  # asked twice a step: once is enough for one view
    def mint_question(self) -> tuple[object, ...]:
        """What a token is minted for: a change here needs a new token; a change of
        anything else (the target's key, type and templates, the rollout) only a new
        rendering of the token in hand."""
        return (
            self.provider,
            json.dumps(dict(self.provider_spec), sort_keys=True),
            self.credentials_secret,
            self.target_secret,
            self.refresh,
            self.fallback_lifetime,
        )


def rollout_min_interval(spec: Mapping[str, Any]) -> timedelta:
    """spec.rollout.minInterval, its default when absent (``0s`` is a value, not absent)."""
    written = (spec.get("rollout") or {}).get("minInterval")
    if not written:
        return DEFAULT_ROLLOUT_MIN_INTERVAL
    try:
        return parse_duration(written)
    except ValueError as error:
        raise SpecInvalid(f"spec.rollout.minInterval: {error}") from None


def parse_provider_token(body: Mapping[str, Any]) -> ProviderTokenView:
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    providers = spec.get("provider") or {}
    if len(providers) != 1:
        raise SpecInvalid("spec.provider must name exactly one provider")
    ((provider, provider_spec),) = providers.items()
    refresh = spec.get("refresh") or {}
    try:
        renew_before = (
            parse_duration(refresh["renewBefore"]) if refresh.get("renewBefore") else None
        )
        fallback = (
            parse_duration(refresh["fallbackLifetime"]) if refresh.get("fallbackLifetime") else None
        )
    except ValueError as error:
        raise SpecInvalid(f"spec.refresh: {error}") from None
    min_interval = rollout_min_interval(spec)
    target = spec.get("target") or {}
    try:
        template = TemplateSpec.parse(target.get("template"))
    except TemplateError as error:
        raise SpecInvalid(error.message) from None
    annotations = metadata.get("annotations") or {}
    return ProviderTokenView(
        namespace=metadata.get("namespace", ""),
        name=metadata.get("name", ""),
        uid=metadata.get("uid", ""),
        generation=int(metadata.get("generation", 0)),
        provider=provider,
        provider_spec=provider_spec or {},
        credentials_secret=(spec.get("credentialsRef") or {}).get("name", ""),
        target_secret=target.get("name", ""),
        target_key=target.get("key") or "token",
        target_type=target.get("type") or "Opaque",
        template=template,
        refresh=RefreshPolicy(
            renew_before=renew_before,
            renew_before_percentage=refresh.get("renewBeforePercentage"),
        ),
        fallback_lifetime=fallback,
        renew_request=annotations.get(names.RENEW_ANNOTATION),
        status=Status.parse(body.get("status") or {}),
        rollout_min_interval=min_interval,
        finalizers=tuple(str(f) for f in metadata.get("finalizers") or ()),
        deleting_since=parse_time(metadata.get("deletionTimestamp")),
        resource_version=str(metadata.get("resourceVersion", "")),
    )


def decode_secret_data(secret: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's ``data`` as text; values that are not UTF-8 are left out."""
    decoded: dict[str, str] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            decoded[key] = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, TypeError, ValueError):
            continue
    return decoded


def controller_uid(secret: Mapping[str, Any]) -> str | None:
    for reference in (secret.get("metadata") or {}).get("ownerReferences") or []:
        if reference.get("controller"):
            return str(reference.get("uid"))
    return None
