"""``tokensync run`` and friends. Every option has an environment variable twin."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from tokensync import __version__
from tokensync.config import OperatorConfig, default_identity
from tokensync.endpoints import EndpointPolicy, normalise_hosts

_TRUE = {"1", "true", "yes", "on"}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LOG_FORMATS = ("text", "json")
# A namespace name (RFC 1123 label), as the API server checks it.
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# An --allowed-hosts entry: host, host:port, [v6] or [v6]:port; never a URL.
_HOST_ENTRY = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")
# Which environment variable feeds an option, to name it when its value is wrong.
_ENV_OF: dict[str, str] = {}


class OneLineParser(argparse.ArgumentParser):
    """A usage mistake is one line (what is wrong, and where it came from) and exit 2."""

    _given: Sequence[str] = ()

    def parse_known_args(  # type: ignore[override]  # same call, remembered
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        option = message.removeprefix("argument ").split(":", 1)[0].split("/")[0]
        variable = _ENV_OF.get(option)
        on_command_line = any(a == option or a.startswith(f"{option}=") for a in self._given)
        if variable and os.environ.get(variable) and not on_command_line:
            message += f" (from {variable}={os.environ[variable]!r})"
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _env_flag(name: str) -> bool:
    return (_env(name) or "").strip().lower() in _TRUE


def _from_env(option: str, variable: str, default: str) -> str:
    """The raw default of an option; argparse converts it with the option's type, so a
    wrong value in the environment is reported like a wrong flag."""
    _ENV_OF[option] = variable
    return _env(variable, default) or default


def _whole(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {low} to {high}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
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
    run.add_argument(
        "--metrics-port",
        type=_whole(0, 65535),
        default=_from_env("--metrics-port", "TOKENSYNC_METRICS_PORT", "8080"),
        help="Prometheus endpoint, 0: off (default 8080)",
    )
    run.add_argument(
        "--health-port",
        type=_whole(0, 65535),
        default=_from_env("--health-port", "TOKENSYNC_HEALTH_PORT", "8081"),
        help="/healthz and /readyz, 0: off (default 8081)",
    )
    run.add_argument(
        "--workers",
        type=_whole(1, 1000),
        default=_from_env("--workers", "TOKENSYNC_WORKERS", "32"),
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
        "--rollouts",
        action="store_true",
        default=_env_flag("TOKENSYNC_ROLLOUTS"),
        help="restart Deployments, StatefulSets and DaemonSets labelled "
        "tokensync.dev/restart-on-rotation=true when a Secret their annotation of that name "
        "lists gets a new token (each namespace grants it with deploy/rollouts/role.yaml)",
    )
    run.add_argument(
        "--log-format",
        choices=_LOG_FORMATS,
        default=_from_env("--log-format", "TOKENSYNC_LOG_FORMAT", "text"),
    )
    run.add_argument(
        "--log-level",
        type=str.upper,
        choices=_LOG_LEVELS,
        default=_from_env("--log-level", "TOKENSYNC_LOG_LEVEL", "INFO"),
    )
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
        default=_from_env("--provider-timeout", "TOKENSYNC_PROVIDER_TIMEOUT", "10"),
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


def run_args_problem(args: argparse.Namespace) -> str | None:
    """What argparse cannot see alone: values that only make sense together or on disk."""
    # argparse converts a default from the environment with `type` but never checks it
    # against `choices`: done here, naming the variable.
    if args.log_level not in _LOG_LEVELS:
        return f"TOKENSYNC_LOG_LEVEL={args.log_level!r}: expected one of {', '.join(_LOG_LEVELS)}"
    if args.log_format not in _LOG_FORMATS:
        return f"TOKENSYNC_LOG_FORMAT={args.log_format!r}: expected text or json"
    namespaces = _namespaces(args)
    for namespace in (*namespaces, args.operator_namespace):
        if not _NAMESPACE.fullmatch(namespace):
            return f"{namespace!r} is not a namespace name (lowercase letters, digits, '-')"
    if args.metrics_port and args.metrics_port == args.health_port:
        return f"--metrics-port and --health-port are both {args.metrics_port}"
    for entry in normalise_hosts([args.allowed_hosts]):
        if not _HOST_ENTRY.fullmatch(entry):
            return f"--allowed-hosts: {entry!r} is not host or host:port (no scheme, no path)"
    if args.ca_file:
        try:
            ssl.create_default_context(cafile=args.ca_file)
        except ssl.SSLError:
            return f"--ca-file {args.ca_file}: not a PEM bundle of CA certificates"
        except OSError as error:
            return f"--ca-file {args.ca_file}: {error.strerror or error}"
    return None


def _namespaces(args: argparse.Namespace) -> tuple[str, ...]:
    if args.namespace:
        return tuple(args.namespace)
    if args.all_namespaces:
        return ()
    return tuple(n.strip() for n in (_env("TOKENSYNC_NAMESPACES") or "").split(",") if n.strip())


def config_from_args(args: argparse.Namespace) -> OperatorConfig:
    namespaces = _namespaces(args)
    return OperatorConfig(
        namespaces=namespaces,
        endpoints=_endpoints(args),
        ca_file=args.ca_file,
        provider_timeout_s=args.provider_timeout,
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        workers=args.workers,
        operator_namespace=args.operator_namespace,
        leader_election=args.leader_election,
        identity=args.identity or default_identity(),
        log_format=args.log_format,
        log_level=args.log_level,
        rollouts=args.rollouts,
    )


def _run(config: OperatorConfig) -> int:
    import prometheus_client
    import uvloop

    from tokensync.handlers import serve  # also registers the kopf handlers
    from tokensync.logs import configure_logging
    from tokensync.preflight import StartupError

    configure_logging(config.log_format, config.log_level)
    try:
        if config.metrics_port:
            try:
                prometheus_client.start_http_server(config.metrics_port)
            except OSError as error:
                raise StartupError(
                    f"cannot serve metrics on port {config.metrics_port} (--metrics-port): "
                    f"{os.strerror(error.errno) if error.errno else error}"
                ) from None
        # uvloop, as kopf's own CLI picks when it is installed: the operator's CPU is
        # mostly the event loop and its transports (docs/decisions/0012).
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(config))
    except StartupError as error:
        # One line and a non-zero exit: the pod crash-loops with the reason in its log.
        print(f"tokensync: error: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        problem = run_args_problem(args)
        if problem:
            parser.exit(2, f"tokensync run: error: {problem}; see tokensync run --help\n")
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
