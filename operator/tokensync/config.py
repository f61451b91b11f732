"""The operator's own configuration, set by the cluster admin (never by a ProviderToken)."""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass, field

from tokensync.endpoints import EndpointPolicy


def default_identity() -> str:
    """Unique per process: the pod name (the hostname in a pod) and a random suffix.

    Given to kopf explicitly: left to itself, kopf names the operator after
    ``getpass.getuser()``, which raises under a uid with no passwd entry (65532 in the
    image) unless ``POD_ID`` is set.
    """
    return f"{socket.gethostname()}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    endpoints: EndpointPolicy = field(default_factory=EndpointPolicy)
    ca_file: str | None = None
    provider_timeout_s: float = 10.0
    metrics_port: int = 8080
    health_port: int = 8081
    workers: int = 32
    api_in_flight: int = 16
    operator_namespace: str = "tokensync-system"
    digest_key_secret: str = "tokensync-digest-key"
    leader_election: bool = False
    # Who this process is, to kopf and in leader election alike; always set (see below).
    identity: str = field(default_factory=default_identity)
    log_format: str = "text"
    log_level: str = "INFO"
    # Restart opted-in workloads when their token rotates (docs/decisions/0010-rollouts.md).
    # Off: the operator never makes a workload API call.
    rollouts: bool = False

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces
