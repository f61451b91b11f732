"""The target Secret's shape, the keyed digests on it, and reading credentials.

Digests are HMAC-SHA256 under a key only the operator holds: a plain hash of a short
password or API key could be reversed by guessing, an HMAC cannot without the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tokensync import names
from tokensync.model import (
    ProviderTokenView,
    controller_uid,
    decode_secret_data,
    format_time,
    parse_time,
)
from tokensync.providers.base import CredentialsIncomplete, Token

DIGEST_PREFIX = "hmac-sha256:"


class DigestKey:
    """The operator's HMAC key. ``repr`` never shows it."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the digest key must be at least 32 bytes")
        self._key = key

    def __repr__(self) -> str:
        return "DigestKey(***)"

    def of_mapping(self, values: Mapping[str, str]) -> str:
        canonical = json.dumps(dict(values), sort_keys=True, separators=(",", ":"))
        return self.of_text(canonical)

    def of_text(self, text: str) -> str:
        mac = hmac.new(self._key, text.encode("utf-8"), hashlib.sha256).hexdigest()
        return DIGEST_PREFIX + mac


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


def target_state(
    secret: Mapping[str, Any], view: ProviderTokenView, digest: DigestKey
) -> TargetState:
    metadata = secret.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    labels = metadata.get("labels") or {}
    value = decode_secret_data(secret).get(view.target_key)
    recorded = annotations.get(names.TOKEN_DIGEST_ANNOTATION)
    intact = (
        bool(value)
        and recorded is not None
        and hmac.compare_digest(digest.of_text(value or ""), recorded)
    )
    return TargetState(
        owner_uid=controller_uid(secret),
        managed=labels.get(names.MANAGED_BY_LABEL) == names.MANAGED_BY
        and labels.get(names.ROLE_LABEL) == names.ROLE_TOKEN,
        token_intact=intact,
        credentials_digest=annotations.get(names.CREDENTIALS_DIGEST_ANNOTATION),
        expires_at=parse_time(annotations.get(names.EXPIRES_ANNOTATION)),
    )


def _labels(view: ProviderTokenView, role: str) -> dict[str, str]:
    labels = {names.MANAGED_BY_LABEL: names.MANAGED_BY, names.ROLE_LABEL: role}
    # Label values are at most 63 characters; a longer name is simply not labelled.
    if len(view.name) <= 63:
        labels[names.OWNER_LABEL] = view.name
    return labels


def target_secret(
    view: ProviderTokenView, token: Token, credentials_digest: str, digest: DigestKey
) -> dict[str, Any]:
    """The whole target Secret as tokensync wants it (create body and merge patch alike)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": view.target_secret,
            "namespace": view.namespace,
            "labels": _labels(view, names.ROLE_TOKEN),
            "annotations": {
                names.EXPIRES_ANNOTATION: format_time(token.expires_at) or "never",
                names.MINTED_ANNOTATION: format_time(token.minted_at),
                names.PROVIDER_ANNOTATION: view.provider,
                names.CREDENTIALS_DIGEST_ANNOTATION: credentials_digest,
                names.TOKEN_DIGEST_ANNOTATION: digest.of_text(token.value),
            },
            "ownerReferences": _owner_references(view),
        },
        "data": {view.target_key: base64.b64encode(token.value.encode()).decode("ascii")},
    }


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


def provider_state(secret: Mapping[str, Any] | None, view: ProviderTokenView) -> dict[str, str]:
    """The state saved for this ProviderToken; empty unless it is really ours."""
    if secret is None or controller_uid(secret) != view.uid:
        return {}
    return decode_secret_data(secret)


def state_secret(view: ProviderTokenView, state: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": state_secret_name(view),
            "namespace": view.namespace,
            "labels": _labels(view, names.ROLE_STATE),
            "ownerReferences": _owner_references(view),
        },
        "data": {k: base64.b64encode(v.encode()).decode("ascii") for k, v in state.items()},
    }


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
