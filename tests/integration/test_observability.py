"""Metrics, health and logs of the running operator, checked against the real status."""

from __future__ import annotations

import uuid
from datetime import datetime

import httpx
from prometheus_client.parser import text_string_to_metric_families

from fakes.oauth2_server import FakeOAuth2Server
from support.objects import Cluster, provider_token
from support.operator import OperatorProcess
from support.waiting import wait_for


def scrape(operator: OperatorProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(operator.metrics_url, timeout=5).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def token_series(samples: dict, metric: str, namespace: str, name: str) -> float | None:
    for (sample, labels), value in samples.items():
        label = dict(labels)
        if sample == metric and label.get("namespace") == namespace and label.get("name") == name:
            return value
    return None


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_gauges_follow_the_status_and_vanish_with_the_token(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, operator: OperatorProcess
) -> None:
    namespace = cluster.namespace("obs")
    client_id = f"obs-{uuid.uuid4().hex[:8]}"
    oauth2_server.add_client(client_id, "obs-secret-value", expires_in=600)
    cluster.credentials(
        namespace, "creds", {"clientId": client_id, "clientSecret": "obs-secret-value"}
    )
    cluster.apply(
        provider_token(
            "watched",
            namespace=namespace,
            credentials="creds",
            target="out",
            provider={"oauth2": {"tokenUrl": oauth2_server.token_url}},
        )
    )
    cluster.wait_ready(namespace, "watched")
    status = cluster.token(namespace, "watched")["status"]

    def exported() -> bool:
        samples = scrape(operator)
        return (
            token_series(
                samples, "tokensync_token_expiration_timestamp_seconds", namespace, "watched"
            )
            == epoch(status["expiresAt"])
            and token_series(
                samples, "tokensync_token_renewal_timestamp_seconds", namespace, "watched"
            )
            == epoch(status["renewalTime"])
            and token_series(samples, "tokensync_token_ready", namespace, "watched") == 1
        )

    wait_for(exported, timeout_s=10, what="gauges equal to the status fields")
    samples = scrape(operator)
    assert (
        samples[
            (
                "tokensync_mint_total",
                (("provider", "oauth2"), ("reason", "Initial"), ("result", "success")),
            )
        ]
        >= 1
    )
    assert (
        samples[
            ("tokensync_provider_requests_total", (("provider", "oauth2"), ("status_class", "2xx")))
        ]
        >= 1
    )
    assert any(name == "tokensync_mint_duration_seconds_count" for name, _ in samples)
    assert any(name == "process_resident_memory_bytes" for name, _ in samples)

    cluster.delete_token(namespace, "watched")
    wait_for(
        lambda: (
            token_series(scrape(operator), "tokensync_token_ready", namespace, "watched") is None
        ),
        timeout_s=15,
        what="the deleted token's series to disappear",
    )
    samples = scrape(operator)
    for metric in (
        "tokensync_token_expiration_timestamp_seconds",
        "tokensync_token_renewal_timestamp_seconds",
    ):
        assert token_series(samples, metric, namespace, "watched") is None


def test_a_failing_provider_moves_the_failure_counter_and_ready(
    cluster: Cluster, oauth2_server: FakeOAuth2Server, operator: OperatorProcess
) -> None:
    namespace = cluster.namespace("obs")
    client_id = f"obs-{uuid.uuid4().hex[:8]}"
    oauth2_server.add_client(client_id, "right-secret-value")
    cluster.credentials(
        namespace, "creds", {"clientId": client_id, "clientSecret": "wrong-secret-value"}
    )
    key = (
        "tokensync_mint_total",
        (("provider", "oauth2"), ("reason", "InvalidCredentials"), ("result", "failure")),
    )
    before = scrape(operator).get(key, 0.0)
    cluster.apply(
        provider_token(
            "failing",
            namespace=namespace,
            credentials="creds",
            target="out",
            provider={"oauth2": {"tokenUrl": oauth2_server.token_url}},
        )
    )
    wait_for(
        lambda: scrape(operator).get(key, 0.0) >= before + 1, timeout_s=30, what="a failure counted"
    )
    wait_for(
        lambda: token_series(scrape(operator), "tokensync_token_ready", namespace, "failing") == 0,
        timeout_s=10,
        what="ready=0 for the failing token",
    )


def test_health_endpoints(operator: OperatorProcess) -> None:
    wait_for(
        lambda: httpx.get(operator.health_url + "/readyz", timeout=5).status_code == 200,
        timeout_s=30,
        what="readiness",
    )
    assert httpx.get(operator.health_url + "/healthz", timeout=5).text == "ok"
    assert scrape(operator)[("tokensync_operator_ready", ())] == 1
