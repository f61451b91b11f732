"""What tokensync puts into Secrets and reads back out of them. Pure: no API calls.

The target Secret (the token, raw or rendered by its template, and the digests that tell
an edit from our own write), the provider-state Secret (a refresh token, marked with the
question it answers), and the credentials a provider needs from the credentials Secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tokensync import names
from tokensync.digest import DigestKey
from tokensync.model import (
    ProviderTokenView,
    controller_uid,
    decode_secret_data,
    format_time,
    parse_time,
)
from tokensync.providers.base import CredentialsIncomplete, Token
from tokensync.templating import Rendered, RenderInput, render


def credentials(secret: Mapping[str, Any], required: tuple[str, ...]) -> dict[str, str]:
    """The credentials a provider needs from a Secret; names missing keys, never values."""
    data = decode_secret_data(secret)
    missing = [key for key in required if not data.get(key)]
    if missing:
        raise CredentialsIncomplete(
            f"credentials Secret lacks key(s): {', '.join(missing)} (or they are empty)"
        )
    return {key: data[key] for key in required}


@dataclass(frozen=True)
class TargetState:
    """What the target Secret currently holds, as far as tokensync cares."""

    owner_uid: str | None
    managed: bool
    token_intact: bool
    credentials_digest: str | None
    expires_at: datetime | None
    secret_type: str = "Opaque"

    def valid_for(self, now: datetime) -> timedelta | None:
        """How long the workload keeps a usable token from this Secret: zero once it
        has expired or was edited, ``None`` for a token that never expires."""
        if not self.token_intact:
            return timedelta(0)
        if self.expires_at is None:
            return None
        return max(self.expires_at - now, timedelta(0))


def target_state(
    secret: Mapping[str, Any], view: ProviderTokenView, digest: DigestKey
) -> TargetState:
    metadata = secret.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    labels = metadata.get("labels") or {}
    return TargetState(
        owner_uid=controller_uid(secret),
        managed=labels.get(names.MANAGED_BY_LABEL) == names.MANAGED_BY
        and labels.get(names.ROLE_LABEL) == names.ROLE_TOKEN,
        token_intact=_intact(secret, annotations, view, digest),
        credentials_digest=annotations.get(names.CREDENTIALS_DIGEST_ANNOTATION),
        expires_at=parse_time(annotations.get(names.EXPIRES_ANNOTATION)),
        secret_type=str(secret.get("type") or "Opaque"),
    )


def _intact(
    secret: Mapping[str, Any],
    annotations: Mapping[str, str],
    view: ProviderTokenView,
    digest: DigestKey,
) -> bool:
    """Every key is as tokensync wrote it: the data digest covers the type and each
    rendered key. A Secret written before templates existed has only the token's digest
    and one key; it is checked that way, so an upgrade mints nothing."""
    data = decode_secret_data(secret)
    recorded = annotations.get(names.DATA_DIGEST_ANNOTATION)
    if recorded is not None:
        actual = contents_digest(str(secret.get("type") or "Opaque"), data, digest)
        return bool(data) and hmac.compare_digest(actual, recorded)
    value = data.get(view.target_key)
    recorded = annotations.get(names.TOKEN_DIGEST_ANNOTATION)
    return (
        bool(value)
        and recorded is not None
        and hmac.compare_digest(digest.of_text(value or ""), recorded)
    )


def contents_digest(secret_type: str, data: Mapping[str, str], digest: DigestKey) -> str:
    return digest.of_mapping({"type": secret_type, "data": dict(data)})


def contents(view: ProviderTokenView, token: Token, credentials: Mapping[str, str]) -> Rendered:
    """What goes into the target Secret: the raw token under ``target.key``, or what
    ``target.template`` renders from it (``templating.TemplateError`` when it cannot)."""
    if view.template is None:
        return Rendered(data={view.target_key: token.value}, labels={}, annotations={})
    # The templating package hands a template only the keys it names.
    return render(
        view.template,
        RenderInput(
            token=token.value,
            expires_at=token.expires_at,
            minted_at=token.minted_at,
            token_type=token.token_type,
            scope=token.scope,
            others=token.others,
            credentials=credentials,
        ),
    )


def _labels(view: ProviderTokenView, role: str) -> dict[str, str]:
    labels = {names.MANAGED_BY_LABEL: names.MANAGED_BY, names.ROLE_LABEL: role}
    # Label values are at most 63 characters; a longer name is simply not labelled.
    if len(view.name) <= 63:
        labels[names.OWNER_LABEL] = view.name
    return labels


def _owned_secret(
    view: ProviderTokenView,
    name: str,
    role: str,
    annotations: Mapping[str, str | None],
    values: Mapping[str, str],
    *,
    secret_type: str = "Opaque",
    extra_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A Secret this ProviderToken owns: its labels, its owner reference, ``values``
    base64-encoded (create body and merge patch alike). The operator's own labels win
    over ``extra_labels`` (the CRD and the templating refuse them anyway)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": secret_type,
        "metadata": {
            "name": name,
            "namespace": view.namespace,
            "labels": {**(extra_labels or {}), **_labels(view, role)},
            "annotations": dict(annotations),
            "ownerReferences": _owner_references(view),
        },
        "data": {k: base64.b64encode(v.encode()).decode("ascii") for k, v in values.items()},
    }


def target_secret(
    view: ProviderTokenView,
    token: Token,
    credentials_digest: str,
    digest: DigestKey,
    rendered: Rendered,
) -> dict[str, Any]:
    """The whole target Secret as tokensync wants it, with ``rendered`` (``contents``)."""
    annotations: dict[str, str | None] = {
        **rendered.annotations,
        names.EXPIRES_ANNOTATION: format_time(token.expires_at) or "never",
        names.MINTED_ANNOTATION: format_time(token.minted_at),
        names.PROVIDER_ANNOTATION: view.provider,
        names.CREDENTIALS_DIGEST_ANNOTATION: credentials_digest,
        names.TOKEN_DIGEST_ANNOTATION: digest.of_text(token.value),
        names.DATA_DIGEST_ANNOTATION: contents_digest(view.target_type, rendered.data, digest),
    }
    if rendered.labels or rendered.annotations:
        annotations[names.TEMPLATED_KEYS_ANNOTATION] = json.dumps(
            {"labels": sorted(rendered.labels), "annotations": sorted(rendered.annotations)},
            separators=(",", ":"),
        )
    return _owned_secret(
        view,
        view.target_secret,
        names.ROLE_TOKEN,
        annotations,
        rendered.data,
        secret_type=view.target_type,
        extra_labels=rendered.labels,
    )


def token_digest(secret: Mapping[str, Any] | None) -> str | None:
    """Which token ``secret`` holds, as its recorded digest: a rotation changes it, a
    restore or a new rendering of the same token does not."""
    annotations = ((secret or {}).get("metadata") or {}).get("annotations") or {}
    recorded = annotations.get(names.TOKEN_DIGEST_ANNOTATION)
    return recorded if isinstance(recorded, str) else None


def templated_keys(secret: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """The labels and annotations a template put on ``secret`` (what it recorded)."""
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    try:
        recorded = json.loads(annotations.get(names.TEMPLATED_KEYS_ANNOTATION) or "{}")
        return set(recorded.get("labels") or ()), set(recorded.get("annotations") or ())
    except (ValueError, AttributeError, TypeError):
        return set(), set()


# Provider state (a refresh token) lives in a Secret of its own beside the target: never
# in the target, which workloads read. Same namespace, same owner, same RBAC boundary as
# the credentials that could mint it anyway.
_STATE_SUFFIX = "-tokensync-state"


def state_secret_name(view: ProviderTokenView) -> str:
    name = view.name + _STATE_SUFFIX
    if len(name) <= 253:
        return name
    short = hashlib.sha256(view.name.encode()).hexdigest()[:16]
    return f"{view.name[: 253 - len(_STATE_SUFFIX) - 17]}-{short}{_STATE_SUFFIX}"


@dataclass(frozen=True)
class StateQuestion:
    """What a provider's saved state answers: this provider, spec block and credentials.

    A refresh token belongs to the session the credentials opened at that endpoint, for
    that client. Sent after any of these changed, it would keep the old identity alive
    (or reach an endpoint it was never meant for), so state is only ever used for exactly
    the question that produced it. Digests only: the state Secret says what it belongs
    to without holding another copy of the credentials.
    """

    provider: str
    spec_digest: str
    credentials_digest: str


def state_question(
    view: ProviderTokenView, credentials_digest: str, digest: DigestKey
) -> StateQuestion:
    # The whole provider block: the endpoint (tokenUrl, issuerUrl), the client and every
    # field that shapes the grant. A field that would not have mattered costs one first
    # grant when it changes, never a refresh token sent where it does not belong.
    spec = json.dumps(dict(view.provider_spec), sort_keys=True, separators=(",", ":"))
    return StateQuestion(
        provider=view.provider,
        spec_digest=digest.of_text(f"{view.provider}\n{spec}"),
        credentials_digest=credentials_digest,
    )


@dataclass(frozen=True)
class SavedState:
    """The provider state saved for this ProviderToken, if it answers today's question.

    ``stale``: a state Secret of ours holds state for another question (or from before
    states were tied to one): it must be emptied, not merely ignored.
    """

    values: Mapping[str, str] = field(repr=False)
    stale: bool


def provider_state(
    secret: Mapping[str, Any] | None, view: ProviderTokenView, question: StateQuestion
) -> SavedState:
    if secret is None or controller_uid(secret) != view.uid:
        return SavedState(values={}, stale=False)
    values = decode_secret_data(secret)
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    belongs = (
        annotations.get(names.PROVIDER_ANNOTATION) == question.provider
        and _same(annotations.get(names.SPEC_DIGEST_ANNOTATION), question.spec_digest)
        and _same(annotations.get(names.CREDENTIALS_DIGEST_ANNOTATION), question.credentials_digest)
    )
    if belongs:
        return SavedState(values=values, stale=False)
    return SavedState(values={}, stale=bool(values))


def _same(recorded: str | None, expected: str) -> bool:
    return recorded is not None and hmac.compare_digest(recorded, expected)


def state_secret(
    view: ProviderTokenView, question: StateQuestion, state: Mapping[str, str]
) -> dict[str, Any]:
    """The state Secret for ``question``; empty ``state`` discards what was saved."""
    annotations = {
        names.PROVIDER_ANNOTATION: question.provider,
        names.SPEC_DIGEST_ANNOTATION: question.spec_digest,
        names.CREDENTIALS_DIGEST_ANNOTATION: question.credentials_digest,
    }
    return _owned_secret(view, state_secret_name(view), names.ROLE_STATE, annotations, state)


def _owner_references(view: ProviderTokenView) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "name": view.name,
            "uid": view.uid,
            "controller": True,
        }
    ]
