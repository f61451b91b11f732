"""The operator's keyed digests: how a Secret remembers what it was made from.

Digests are HMAC-SHA256 under a key only the operator holds: a plain hash of a short
password or API key could be reversed by guessing, an HMAC cannot without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

DIGEST_PREFIX = "hmac-sha256:"


class DigestKey:
    """The operator's HMAC key. ``repr`` never shows it."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the digest key must be at least 32 bytes")
        self._key = key

    def __repr__(self) -> str:
        return "DigestKey(***)"

    def of_mapping(self, values: Mapping[str, Any]) -> str:
        """Of ``values`` as canonical JSON (sorted keys, no spaces); nested values too."""
        canonical = json.dumps(dict(values), sort_keys=True, separators=(",", ":"))
        return self.of_text(canonical)

    def of_text(self, text: str) -> str:
        mac = hmac.new(self._key, text.encode("utf-8"), hashlib.sha256).hexdigest()
        return DIGEST_PREFIX + mac
