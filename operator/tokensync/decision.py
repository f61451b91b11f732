"""Why a token is minted: one pure function over what the reconciler gathered.

``decide`` looks at the ProviderToken, its target Secret, the credentials' digest and
what this process holds, and says mint, rewrite, wait or refuse, with the cause. The
reasons a token cannot be served before any request is sent live here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from tokensync.model import ProviderTokenView
from tokensync.providers.base import MintError, Token
from tokensync.secret_bodies import TargetState

# A held token this close to expiry is not worth writing back; mint instead.
_MIN_HELD_LIFETIME = timedelta(seconds=2)


class Cause(StrEnum):
    INITIAL = "Initial"
    SPEC_CHANGED = "SpecChanged"
    TEMPLATE_CHANGED = "TemplateChanged"
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
class Wait:
    until: datetime | None


@dataclass(frozen=True)
class Refuse:
    error: MintError


Decision = Mint | Rewrite | Wait | Refuse


class TargetConflict(MintError):
    reason = "TargetConflict"
    permanent = True


class TargetTypeImmutable(MintError):
    """Our Secret has another type than spec.target.type; only deleting it changes that
    (the operator has no delete right on Secrets, docs/security.md)."""

    reason = "TargetTypeImmutable"
    awaits_user = True


def type_immutable(secret: str, actual: str, wanted: str) -> TargetTypeImmutable:
    return TargetTypeImmutable(
        f"Secret {secret} has type {actual} and spec.target.type is {wanted}; a Secret's "
        f"type cannot change: delete Secret {secret} and tokensync writes it again with "
        "the new type"
    )


class InvalidTemplate(MintError):
    reason = "InvalidTemplate"
    permanent = True


class CredentialsNotFound(MintError):
    reason = "CredentialsNotFound"
    awaits_user = True


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
    """The one place that says why a token is minted. Pure: same inputs, same answer.

    ``held`` is the token this process minted, given only while the spec still asks for
    that token (``ProviderTokenView.mint_question``).
    """
    status = view.status
    if target is not None and target.owner_uid != view.uid:
        owner = "another ProviderToken" if target.owner_uid else "nothing tokensync manages"
        return Refuse(
            TargetConflict(
                f"Secret {view.target_secret} already exists and belongs to {owner}; "
                "choose another spec.target.name or delete that Secret"
            )
        )
    if target is not None and target.secret_type != view.target_type:
        # Known before anything is minted: a token that could not be written is not asked for.
        return Refuse(type_immutable(view.target_secret, target.secret_type, view.target_type))
    if pending and _held_usable(held, None, now):
        return Rewrite(Cause.WRITE_RETRY)
    if status.observed_generation is None:
        return Mint(Cause.INITIAL)
    if view.renew_request is not None and view.renew_request != status.last_renew_request:
        return Mint(Cause.RENEW_REQUESTED)
    known_digest = attempted_digest or (target.credentials_digest if target else None)
    credentials_changed = known_digest is not None and known_digest != credentials_digest
    if status.observed_generation != view.generation:
        # ``held`` is only given for the spec it was minted for: what changed is how the
        # token is written (the target's type, key or templates), not the token. Unless
        # the credentials changed too (a template naming another credentials key).
        if _held_usable(held, None, now) and not credentials_changed:
            return Rewrite(Cause.TEMPLATE_CHANGED)
        return Mint(Cause.CREDENTIALS_CHANGED if credentials_changed else Cause.SPEC_CHANGED)
    if credentials_changed:
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
