"""Prometheus metrics. Label values are object names and closed sets, never free text.

``namespace`` and ``name`` are Kubernetes object names; ``provider`` is a registered
provider name; ``result``, ``reason`` and ``status_class`` come from fixed sets. No
secret, no URL and no message ever becomes a label.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime

from prometheus_client import Counter, Gauge, Histogram

TOKEN_LABELS = ("namespace", "name", "provider")

EXPIRATION = Gauge(
    "tokensync_token_expiration_timestamp_seconds",
    "When the token in the target Secret expires (Unix time); absent for tokens that never do.",
    TOKEN_LABELS,
)
RENEWAL = Gauge(
    "tokensync_token_renewal_timestamp_seconds",
    "When the next mint is due (Unix time): the renewal, or the next retry after a failure.",
    TOKEN_LABELS,
)
LAST_MINT = Gauge(
    "tokensync_token_last_mint_timestamp_seconds",
    "When the token now in the target Secret was minted (Unix time).",
    TOKEN_LABELS,
)
READY = Gauge(
    "tokensync_token_ready",
    "1 when the ProviderToken's Ready condition is True, else 0.",
    TOKEN_LABELS,
)
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
_labels_of: dict[tuple[str, str], str] = {}


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
    previous = _labels_of.get((namespace, name))
    if previous is not None and previous != provider:
        forget_token(namespace, name)
    _labels_of[(namespace, name)] = provider
    labels = (namespace, name, provider)
    READY.labels(*labels).set(1 if ready else 0)
    for gauge, moment in ((EXPIRATION, expires_at), (RENEWAL, renewal_at), (LAST_MINT, minted_at)):
        if moment is not None:
            gauge.labels(*labels).set(moment.timestamp())
        else:
            _remove(gauge, labels)


def forget_token(namespace: str, name: str) -> None:
    """A deleted ProviderToken leaves no series behind."""
    provider = _labels_of.pop((namespace, name), None)
    if provider is None:
        return
    for gauge in (EXPIRATION, RENEWAL, LAST_MINT, READY):
        _remove(gauge, (namespace, name, provider))


def _remove(gauge: Gauge, labels: tuple[str, str, str]) -> None:
    with suppress(KeyError):
        gauge.remove(*labels)
