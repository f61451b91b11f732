"""The per-token gauges: what a scrape shows follows the last status, and a forgotten
token leaves no series (they are built at scrape time, not held as labelled children)."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import REGISTRY, generate_latest

from tokensync import metrics

AT = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def _samples(name: str) -> dict[tuple[str, str, str], float]:
    found: dict[tuple[str, str, str], float] = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == name and sample.labels.get("namespace") == "gauges-test":
                labels = sample.labels
                found[(labels["namespace"], labels["name"], labels["provider"])] = sample.value
    return found


def test_series_follow_the_status_and_go_with_the_token() -> None:
    metrics.token_state(
        "gauges-test", "a", "oauth2", ready=True, expires_at=AT, renewal_at=AT, minted_at=AT
    )
    assert _samples("tokensync_token_ready") == {("gauges-test", "a", "oauth2"): 1.0}
    assert _samples("tokensync_token_expiration_timestamp_seconds") == {
        ("gauges-test", "a", "oauth2"): AT.timestamp()
    }
    # A failure with no token: ready 0, no expiry series at all, the retry time kept.
    metrics.token_state("gauges-test", "a", "oauth2", ready=False, expires_at=None, renewal_at=AT)
    assert _samples("tokensync_token_ready") == {("gauges-test", "a", "oauth2"): 0.0}
    assert _samples("tokensync_token_expiration_timestamp_seconds") == {}
    assert _samples("tokensync_token_last_mint_timestamp_seconds") == {}
    assert _samples("tokensync_token_renewal_timestamp_seconds") == {
        ("gauges-test", "a", "oauth2"): AT.timestamp()
    }
    # The provider changed: the old provider's series is gone, not left beside the new one.
    metrics.token_state("gauges-test", "a", "podero", ready=True, expires_at=AT, renewal_at=AT)
    assert _samples("tokensync_token_ready") == {("gauges-test", "a", "podero"): 1.0}
    metrics.forget_token("gauges-test", "a")
    for name in ("ready", "expiration_timestamp_seconds", "renewal_timestamp_seconds"):
        assert _samples(f"tokensync_token_{name}") == {}
    # The exposition still documents the families with no series (dashboards rely on HELP).
    assert b"# HELP tokensync_token_ready " in generate_latest(REGISTRY)
