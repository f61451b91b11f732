"""Prometheus metrics. Label values are object names and closed sets, never free text.

``namespace`` and ``name`` are Kubernetes object names; ``provider`` is a registered
provider name; ``result``, ``reason`` and ``status_class`` come from fixed sets. No
secret, no URL and no message ever becomes a label.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import NamedTuple

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

TOKEN_LABELS = ("namespace", "name", "provider")

# The per-token gauges: (name, help, field of _TokenSeries). Absent when the field is None.
_TOKEN_GAUGES = (
    (
        "tokensync_token_expiration_timestamp_seconds",
        "When the token in the target Secret expires (Unix time); absent for tokens that never do.",
        "expires_at",
    ),
    (
        "tokensync_token_renewal_timestamp_seconds",
        "When the next mint is due (Unix time): the renewal, or the next retry after a failure.",
        "renewal_at",
    ),
    (
        "tokensync_token_last_mint_timestamp_seconds",
        "When the token now in the target Secret was minted (Unix time).",
        "minted_at",
    ),
    (
        "tokensync_token_ready",
        "1 when the ProviderToken's Ready condition is True, else 0.",
        "ready",
    ),
)


class _TokenSeries(NamedTuple):
    provider: str
    ready: float
    expires_at: float | None
    renewal_at: float | None
    minted_at: float | None


class _TokenGauges(Collector):
    """The per-token gauges, built at scrape time from one small tuple per token.

    Labelled prometheus_client Gauges cost four child objects, each with its own lock,
    per ProviderToken (about 5 KiB of the operator's memory per token) and a label lookup
    on every status change; a scrape reads this instead (docs/decisions/0012)."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str], _TokenSeries] = {}

    def collect(self) -> Iterator[Metric]:
        # The scrape runs on prometheus_client's thread: a copy is taken under the GIL.
        held = list(self.series.items())
        for name, documentation, field in _TOKEN_GAUGES:
            family = GaugeMetricFamily(name, documentation, labels=TOKEN_LABELS)
            for (namespace, token), series in held:
                value = getattr(series, field)
                if value is not None:
                    family.add_metric((namespace, token, series.provider), value)
            yield family


_TOKENS = _TokenGauges()
REGISTRY.register(_TOKENS)
MINTS = Counter(
    "tokensync_mint",
    "Mint attempts by provider, result (success or failure) and reason.",
    ("provider", "result", "reason"),
)
MINT_DURATION = Histogram(
    "tokensync_mint_duration_seconds",
    "Time to mint a token (provider round trips included).",
    ("provider",),
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PROVIDER_REQUESTS = Counter(
    "tokensync_provider_requests",
    "HTTP requests to providers by provider and status class (2xx ... 5xx, or error).",
    ("provider", "status_class"),
)
WATCHING = Gauge(
    "tokensync_operator_ready",
    "1 while the operator is started and reaches the API server (its /readyz).",
)
LEADING = Gauge(
    "tokensync_operator_leading",
    "1 while this replica does the work: it holds the Lease, or runs without election.",
)
QUEUE_DEPTH = Gauge(
    "tokensync_scheduled_tokens",
    "ProviderTokens with a renewal or retry scheduled.",
)

_provider: contextvars.ContextVar[str] = contextvars.ContextVar("provider", default="unknown")


@contextmanager
def provider_context(name: str) -> Iterator[None]:
    """Requests made inside are counted for provider ``name``."""
    token = _provider.set(name)
    try:
        yield
    finally:
        _provider.reset(token)


def provider_request(status: int | None) -> None:
    status_class = f"{status // 100}xx" if status is not None else "error"
    PROVIDER_REQUESTS.labels(_provider.get(), status_class).inc()


def token_state(
    namespace: str,
    name: str,
    provider: str,
    *,
    ready: bool,
    expires_at: datetime | None,
    renewal_at: datetime | None,
    minted_at: datetime | None = None,
) -> None:
    """The per-token gauges, equal to what the status says."""
    _TOKENS.series[(namespace, name)] = _TokenSeries(
        provider,
        1.0 if ready else 0.0,
        _timestamp(expires_at),
        _timestamp(renewal_at),
        _timestamp(minted_at),
    )


def forget_token(namespace: str, name: str) -> None:
    """A deleted ProviderToken leaves no series behind."""
    _TOKENS.series.pop((namespace, name), None)


def _timestamp(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()
