"""The operator's own configuration, set by the cluster admin (never by a ProviderToken)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tokensync.endpoints import EndpointPolicy


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
    identity: str = ""
    log_format: str = "text"
    log_level: str = "INFO"

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces
