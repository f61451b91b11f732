"""kopf glue, and nothing else: settings, startup and cleanup, watch events to the controller.

kopf only watches here. It keeps no progress in annotations or status (``on.event``
handlers are stateless) and posts no Events of its own: tokensync posts the few that
mean something.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import kopf

from tokensync import names
from tokensync.config import OperatorConfig
from tokensync.runtime import Runtime


class NoDiffBase(kopf.DiffBaseStorage):
    """No essence to keep: tokensync has no on.create/on.update handlers to diff for.

    kopf builds an object's essence on every watch event, deep-copying the whole body
    (managedFields included); in a burst of new ProviderTokens that copy was a tenth of
    the operator's CPU (docs/decisions/0004-scale.md).
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: OperatorConfig = memo.config
    settings.posting.enabled = False
    settings.persistence.finalizer = "tokensync.dev/unused"  # no handler needs one
    settings.persistence.diffbase_storage = NoDiffBase()
    # Server-side selection: only Secrets tokensync writes or was pointed at are listed
    # and watched, never every Secret in the cluster.
    settings.watching.label_selectors["secrets"] = names.SECRET_WATCH_SELECTOR
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # Every replica watches (standalone kopf); tokensync's own Lease decides who writes.
    settings.peering.standalone = True
    runtime = await Runtime.create(config)
    memo.runtime = runtime
    await runtime.start(config.health_port)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime | None = getattr(memo, "runtime", None)
    if runtime is not None:
        await runtime.close()


@kopf.on.event(names.GROUP, names.VERSION, names.PLURAL)
async def provider_token_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    runtime.controller.observe_token(event.get("type"), event["object"])


@kopf.on.event("", "v1", "secrets")
async def secret_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    runtime.controller.observe_secret(event.get("type"), event["object"])
