"""``tokensync mint``: one mint from a manifest and a credentials file, no cluster needed.

For checking credentials and endpoints before (or without) deploying. Prints the expiry;
the token itself only with ``--show-token``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import yaml

from tokensync.clock import Clock, system_clock
from tokensync.config import OperatorConfig
from tokensync.endpoints import HttpClient
from tokensync.model import SpecInvalid, format_time, parse_provider_token
from tokensync.providers.base import MintError, MintRequest
from tokensync.providers.registry import PROVIDERS
from tokensync.secret_bodies import credentials as required_credentials


class UsageError(Exception):
    pass


def load_provider_token(path: Path) -> dict[str, Any]:
    for document in yaml.safe_load_all(path.read_text()):
        if isinstance(document, dict) and document.get("kind") == "ProviderToken":
            return document
    raise UsageError(f"{path} holds no ProviderToken")


def load_credentials(path: Path) -> dict[str, str]:
    """A Secret manifest (data or stringData), a YAML/JSON mapping, or KEY=VALUE lines."""
    text = path.read_text()
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError:
        documents = []
    for document in documents:
        if isinstance(document, dict) and document.get("kind") == "Secret":
            values = {
                k: base64.b64decode(v).decode() for k, v in (document.get("data") or {}).items()
            }
            values.update({k: str(v) for k, v in (document.get("stringData") or {}).items()})
            return values
        if isinstance(document, dict) and all(isinstance(v, str | int) for v in document.values()):
            return {str(k): str(v) for k, v in document.items()}
    pairs = [
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    ]
    if pairs:
        return {k.strip(): v.strip() for k, v in pairs}
    raise UsageError(f"{path}: no credentials found (a Secret manifest, a mapping or KEY=VALUE)")


def _as_secret(values: Mapping[str, str]) -> dict[str, Any]:
    return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}}


async def mint_once(
    manifest: Path,
    credentials_file: Path,
    config: OperatorConfig,
    *,
    show_token: bool,
    clock: Clock = system_clock,
    out: TextIO = sys.stdout,
) -> int:
    body = load_provider_token(manifest)
    body.setdefault("metadata", {}).setdefault("uid", "local")
    try:
        view = parse_provider_token(body)
    except SpecInvalid as invalid:
        raise UsageError(str(invalid)) from None
    try:
        provider = PROVIDERS.get(view.provider)
    except KeyError:
        raise UsageError(f"provider {view.provider!r} is not supported") from None
    proofs = provider.proofs(view.provider_spec)
    if proofs.service_account is not None or proofs.tls_secret is not None:
        # Both come from the cluster (a TokenRequest, a TLS Secret), which this never uses.
        raise UsageError(
            "tokensync mint cannot use a ServiceAccount token or a client certificate "
            "Secret (it talks to no cluster): check this ProviderToken with the operator"
        )
    http = HttpClient(config.endpoints, ca_file=config.ca_file, timeout_s=config.provider_timeout_s)
    try:
        creds = required_credentials(
            _as_secret(load_credentials(credentials_file)),
            provider.required_credentials(view.provider_spec),
        )
        token = await provider.mint(
            MintRequest(
                spec=view.provider_spec,
                credentials=creds,
                http=http,
                now=clock(),
                fallback_lifetime=view.fallback_lifetime,
            )
        )
    except MintError as error:
        print(f"mint failed: {error.reason}: {error.message}", file=out)
        return 1
    finally:
        await http.close()
    result: dict[str, Any] = {
        "provider": view.provider,
        "mintedAt": format_time(token.minted_at),
        "expiresAt": format_time(token.expires_at),
        "lifetimeSeconds": (
            int((token.expires_at - token.minted_at).total_seconds()) if token.expires_at else None
        ),
    }
    if show_token:
        result["token"] = token.value
    print(json.dumps(result, indent=2), file=out)
    return 0


def run(manifest: Path, credentials_file: Path, config: OperatorConfig, show_token: bool) -> int:
    try:
        return asyncio.run(mint_once(manifest, credentials_file, config, show_token=show_token))
    except (UsageError, OSError, yaml.YAMLError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # never a traceback: its text could quote a credential
        print(f"error: unexpected {type(error).__name__}", file=sys.stderr)
        return 2
