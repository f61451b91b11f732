"""``tokensync run`` and friends. Every option has an environment variable twin."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tokensync import __version__
from tokensync.config import OperatorConfig
from tokensync.endpoints import EndpointPolicy, normalise_hosts

_TRUE = {"1", "true", "yes", "on"}


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _env_flag(name: str) -> bool:
    return (_env(name) or "").strip().lower() in _TRUE


def _env_int(name: str, default: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"error: {name} must be an integer, got {raw!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokensync", description="Keeps SaaS API tokens fresh in Kubernetes Secrets."
    )
    parser.add_argument("--version", action="version", version=f"tokensync {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the operator against the current kubeconfig")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "--all-namespaces",
        action="store_true",
        help="watch ProviderTokens in every namespace (default)",
    )
    scope.add_argument(
        "--namespace",
        action="append",
        default=None,
        metavar="NS",
        help="watch only this namespace; repeatable (env TOKENSYNC_NAMESPACES, comma-separated)",
    )
    _endpoint_options(run)
    run.add_argument("--metrics-port", type=int, default=_env_int("TOKENSYNC_METRICS_PORT", 8080))
    run.add_argument("--health-port", type=int, default=_env_int("TOKENSYNC_HEALTH_PORT", 8081))
    run.add_argument(
        "--workers",
        type=int,
        default=_env_int("TOKENSYNC_WORKERS", 32),
        help="ProviderTokens minted and written at once (status writes follow outside the pool)",
    )
    run.add_argument(
        "--operator-namespace",
        default=_env("TOKENSYNC_OPERATOR_NAMESPACE", _env("POD_NAMESPACE", "tokensync-system")),
        help="namespace of the operator's own Secret (the digest key)",
    )
    run.add_argument(
        "--leader-election",
        action="store_true",
        default=_env_flag("TOKENSYNC_LEADER_ELECTION"),
        help="several replicas: only the holder of the Lease tokensync-leader (in the "
        "operator namespace) writes; the others stand by, watching",
    )
    run.add_argument(
        "--identity",
        default=_env("TOKENSYNC_IDENTITY", ""),
        help="this replica's name in leader election (default: hostname and a random part)",
    )
    run.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=_env("TOKENSYNC_LOG_FORMAT", "text"),
    )
    run.add_argument("--log-level", default=_env("TOKENSYNC_LOG_LEVEL", "INFO"))
    mint = commands.add_parser(
        "mint", help="mint once from a manifest and a credentials file (no cluster needed)"
    )
    mint.add_argument("-f", "--filename", type=Path, required=True, help="ProviderToken YAML")
    mint.add_argument(
        "--credentials",
        type=Path,
        required=True,
        help="a Secret manifest, a YAML/JSON mapping or KEY=VALUE lines",
    )
    mint.add_argument(
        "--show-token", action="store_true", help="print the token too (it is a secret)"
    )
    _endpoint_options(mint)
    return parser


def _endpoint_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allowed-hosts",
        default=_env("TOKENSYNC_ALLOWED_HOSTS", ""),
        metavar="HOST[,HOST...]",
        help="extra endpoint hosts (host or host:port) ProviderTokens may use",
    )
    parser.add_argument(
        "--allow-insecure-http",
        action="store_true",
        default=_env_flag("TOKENSYNC_ALLOW_INSECURE_HTTP"),
        help="permit plain http:// endpoints (tests and development only)",
    )
    parser.add_argument(
        "--allow-private-networks",
        action="store_true",
        default=_env_flag("TOKENSYNC_ALLOW_PRIVATE_NETWORKS"),
        help="permit endpoints that resolve to private, loopback or link-local addresses "
        "(an IP written in --allowed-hosts is permitted without this)",
    )
    parser.add_argument(
        "--ca-file",
        default=_env("TOKENSYNC_CA_FILE"),
        metavar="PATH",
        help="extra CA bundle for provider TLS",
    )
    parser.add_argument(
        "--provider-timeout",
        type=_positive_seconds,
        default=_positive_seconds(_env("TOKENSYNC_PROVIDER_TIMEOUT", "10")),
        metavar="SECONDS",
        help="the most a provider may take for its whole answer (default 10)",
    )


def _positive_seconds(raw: str | None) -> float:
    try:
        value = float(raw or "")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {raw!r}") from None
    if not 0 < value <= 300:
        raise argparse.ArgumentTypeError(f"expected 0 < seconds <= 300, got {raw!r}")
    return value


def _endpoints(args: argparse.Namespace) -> EndpointPolicy:
    return EndpointPolicy(
        allowed_hosts=normalise_hosts([args.allowed_hosts]),
        allow_insecure_http=args.allow_insecure_http,
        allow_private_networks=args.allow_private_networks,
    )


def config_from_args(args: argparse.Namespace) -> OperatorConfig:
    namespaces: tuple[str, ...] = ()
    if args.namespace:
        namespaces = tuple(args.namespace)
    elif not args.all_namespaces:
        namespaces = tuple(n for n in (_env("TOKENSYNC_NAMESPACES") or "").split(",") if n)
    return OperatorConfig(
        namespaces=namespaces,
        endpoints=_endpoints(args),
        ca_file=args.ca_file,
        provider_timeout_s=args.provider_timeout,
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        workers=max(1, args.workers),
        operator_namespace=args.operator_namespace,
        leader_election=args.leader_election,
        identity=args.identity,
        log_format=args.log_format,
        log_level=args.log_level.upper(),
    )


def _run(config: OperatorConfig) -> int:
    import kopf
    import prometheus_client

    from tokensync import handlers  # noqa: F401 - registers the kopf handlers
    from tokensync.logs import configure_logging

    configure_logging(config.log_format, config.log_level)
    if config.metrics_port:
        prometheus_client.start_http_server(config.metrics_port)
    kopf.run(
        clusterwide=config.clusterwide,
        namespaces=config.namespaces,
        standalone=True,
        memo=kopf.Memo(config=config),
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return _run(config_from_args(args))
    if args.command == "mint":
        from tokensync import oneshot

        config = OperatorConfig(
            endpoints=_endpoints(args),
            ca_file=args.ca_file,
            provider_timeout_s=args.provider_timeout,
        )
        return oneshot.run(args.filename, args.credentials, config, args.show_token)
    return 2


if __name__ == "__main__":
    sys.exit(main())
