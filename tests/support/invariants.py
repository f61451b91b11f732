"""What a workload mounting the target Secrets would have seen during a fault.

``SecretWatch`` reads every token Secret of one namespace every 100 ms in the background,
the way a kubelet refreshes a mounted Secret, and keeps each sample. ``verdict`` then
checks the samples against what the fake provider issued: never an expired token, never
a value the provider did not issue, never a Secret that lost its token once it had one.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from kubernetes import client, config

from fakes.base import FakeProvider, Issued
from support.objects import Cluster

TOKEN_SELECTOR = "tokensync.dev/role=token"


@dataclass(frozen=True)
class Sample:
    at: float
    values: Mapping[str, str] | None  # Secret name -> token; None: the API did not answer


@dataclass
class Verdict:
    samples: int = 0
    unanswered: int = 0
    expired: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.expired or self.unknown or self.lost)


class SecretWatch:
    def __init__(
        self, cluster: Cluster, namespace: str, key: str = "token", interval_s: float = 0.1
    ) -> None:
        configuration = client.Configuration()
        config.load_kube_config(
            config_file=str(cluster.plane.admin_kubeconfig), client_configuration=configuration
        )
        # One read per tick: an API server that is down is a sample, not a retry storm.
        configuration.retries = False
        self._api = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self._api)
        self.namespace = namespace
        self.key = key
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SecretWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._api.close()

    def _read(self) -> dict[str, str] | None:
        try:
            listing = self.core.list_namespaced_secret(
                self.namespace, label_selector=TOKEN_SELECTOR, _request_timeout=2
            )
        except Exception:  # the API server is down: nobody can read the Secret now
            return None
        values = {}
        for secret in listing.items:
            data = secret.data or {}
            if self.key in data:
                values[secret.metadata.name] = base64.b64decode(data[self.key]).decode()
        return values

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(Sample(time.time(), self._read()))
            self._stop.wait(self.interval_s)

    def distinct(self, name: str) -> list[str]:
        seen: list[str] = []
        for sample in self.samples:
            value = (sample.values or {}).get(name)
            if value is not None and (not seen or seen[-1] != value):
                seen.append(value)
        return seen

    def verdict(self, issued: Mapping[str, Issued]) -> Verdict:
        verdict = Verdict()
        had_token: set[str] = set()
        for sample in self.samples:
            verdict.samples += 1
            if sample.values is None:
                verdict.unanswered += 1
                continue
            for name in had_token - set(sample.values):
                verdict.lost.append(f"{name} at {sample.at:.1f}")
            for name, value in sample.values.items():
                had_token.add(name)
                token = issued.get(value)
                if token is None:
                    verdict.unknown.append(name)
                elif token.expires_at is not None and token.expires_at <= sample.at:
                    late = sample.at - token.expires_at
                    verdict.expired.append(f"{name} expired {late:.1f}s before {sample.at:.1f}")
        return verdict


def status_is_true(
    cluster: Cluster, server: FakeProvider, namespace: str, name: str, target: str
) -> bool:
    """Ready, the Secret holds a token the provider issued, and the status gives its expiry."""
    condition = cluster.ready(namespace, name)
    value = cluster.secret_value(namespace, target)
    if not condition or condition["status"] != "True" or value is None:
        return False
    with server.lock:
        issued = {i.value: i for i in server.issued}
    status = (cluster.token(namespace, name) or {}).get("status") or {}
    expires = datetime.fromisoformat(status["expiresAt"].replace("Z", "+00:00")).timestamp()
    return value in issued and abs(expires - (issued[value].expires_at or 0)) < 2
