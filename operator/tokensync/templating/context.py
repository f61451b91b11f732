"""What a template sees: the names of its context, built from one RenderInput.

Data templates see the token, the answer's other tokens (never a refresh token: it is
provider state), the credentials keys the spec lists and the token's metadata. Label and
annotation templates see the metadata only: metadata is readable by far more people than
Secret data, so no secret is put where such a template could reach it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from tokensync.templating.spec import RenderInput, TemplateSpec

METADATA_NAMES: Final = frozenset(
    {"expiresAt", "expiresAtUnix", "mintedAt", "mintedAtUnix", "tokenType", "scope"}
)
SECRET_NAMES: Final = frozenset({"token", "tokens", "credentials"})
DATA_NAMES: Final = METADATA_NAMES | SECRET_NAMES


def metadata_context(values: RenderInput) -> dict[str, Any]:
    """The context of label and annotation templates: METADATA_NAMES."""
    expires = values.expires_at
    return {
        "expiresAt": _rfc3339(expires) if expires is not None else "",
        "expiresAtUnix": _unix(expires) if expires is not None else None,
        "mintedAt": _rfc3339(values.minted_at),
        "mintedAtUnix": _unix(values.minted_at),
        "tokenType": values.token_type or "",
        "scope": values.scope or "",
    }


def data_context(
    spec: TemplateSpec, values: RenderInput, metadata: dict[str, Any]
) -> dict[str, Any]:
    """The context of data templates: DATA_NAMES, over the ``metadata`` context."""
    return {
        **metadata,
        "token": values.token,
        "tokens": {k: v for k, v in values.others.items() if not _is_refresh_token(k)},
        "credentials": {
            k: values.credentials[k] for k in spec.credential_keys if k in values.credentials
        },
    }


def _utc(moment: datetime) -> datetime:
    # A naive time is taken as UTC, never as the operator's local time.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _rfc3339(moment: datetime) -> str:
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def _unix(moment: datetime) -> int:
    return int(_utc(moment).timestamp())


def _is_refresh_token(key: str) -> bool:
    return key.lower().replace("_", "").replace("-", "") == "refreshtoken"
