"""Kubernetes' rules for what a template names and writes: Secret keys, label and
annotation keys, label values, and how a key is named in a message."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Final

_CACHE_SIZE: Final = 1024

_RESERVED_PREFIX: Final = "tokensync.dev/"
_RESERVED_KEYS: Final = frozenset({"app.kubernetes.io/managed-by"})

_PLAIN_KEY = re.compile(r"[-._/a-zA-Z0-9]*")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_VALUE_RULE: Final = (
    "at most 63 characters: alphanumerics, '-', '_' or '.', "
    "beginning and ending with an alphanumeric"
)
_QUALIFIED_NAME_RULE: Final = (
    "an optional DNS subdomain prefix and '/', then a name of " + LABEL_VALUE_RULE
)


def location(section: str, key: str) -> str:
    """Where a template is, as messages name it: ``spec.target.template.data["key"]``."""
    # Quoted as JSON only when it must be: this runs for every template of every render.
    quoted = f'"{key}"' if _PLAIN_KEY.fullmatch(key) else json.dumps(key)
    return f"spec.target.template.{section}[{quoted}]"


@lru_cache(maxsize=_CACHE_SIZE)
def key_problem(section: str, key: str) -> str | None:
    """What is wrong with a key, if anything; cached, since thousands of specs share keys."""
    if section == "data":
        if not key:
            return "a Secret key must not be empty"
        if len(key) > 253 or not _SECRET_KEY.fullmatch(key):
            return "a Secret key must be at most 253 alphanumerics, '-', '_' or '.'"
        return None
    kind = "label" if section == "labels" else "annotation"
    if key.startswith(_RESERVED_PREFIX) or key in _RESERVED_KEYS:
        return f"the {kind} key is reserved for the operator"
    prefix, _, name = key.rpartition("/")
    valid = (
        len(name) <= 63
        and _LABEL_NAME.fullmatch(name) is not None
        and (
            not key.count("/")
            or (
                key.count("/") == 1
                and len(prefix) <= 253
                and _DNS_SUBDOMAIN.fullmatch(prefix) is not None
            )
        )
    )
    return None if valid else f"not a valid {kind} key ({_QUALIFIED_NAME_RULE})"


def valid_label_value(value: str) -> bool:
    return not value or (len(value) <= 63 and _LABEL_NAME.fullmatch(value) is not None)
