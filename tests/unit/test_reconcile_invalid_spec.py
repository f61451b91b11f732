"""A spec the schema let through but tokensync cannot serve is reported once, not in a loop."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tokensync.digest import DigestKey
from tokensync.endpoints import EndpointPolicy, HttpClient
from tokensync.events import EventRecorder
from tokensync.providers.registry import PROVIDERS
from tokensync.reconcile import Reconciler


class RecordingWriter:
    """Stands in for the API server's status endpoint in this unit test only."""

    def __init__(self) -> None:
        self.patches: list[Mapping[str, Any]] = []

    async def patch_status(self, *args: Any) -> dict[str, Any]:
        *_, name, patch = args
        self.patches.append(patch)
        return {"metadata": {"name": name, "generation": 1}, **patch}

    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        return None


def now() -> datetime:
    return datetime(2026, 11, 23, tzinfo=UTC)


async def test_invalid_spec_is_written_once_per_generation() -> None:
    writer = RecordingWriter()
    http = HttpClient(EndpointPolicy())
    written: list[Mapping[str, Any]] = []
    reconciler = Reconciler(
        kube=writer,  # type: ignore[arg-type]
        secrets=None,  # type: ignore[arg-type]
        secret_writes=None,  # type: ignore[arg-type]
        http=http,
        providers=PROVIDERS,
        digest=DigestKey(b"k" * 32),
        events=EventRecorder(writer, clock=now),
        clock=now,
        jitter=lambda: 0.0,
        on_status=written.append,
    )
    body = {
        "metadata": {"namespace": "ns", "name": "bad", "generation": 1},
        "spec": {"provider": {"podero": {}, "basiq": {}}},
    }
    assert await reconciler.reconcile(body) is None
    assert len(writer.patches) == 1
    assert writer.patches[0]["status"]["conditions"][0]["reason"] == "InvalidSpec"
    # The status write comes back through the watch: no second write for it.
    assert await reconciler.reconcile(written[0]) is None
    assert len(writer.patches) == 1
    await http.close()
