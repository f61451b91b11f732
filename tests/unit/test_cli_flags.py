"""Bad flag and environment values: one line naming the value and its source, exit 2."""

from __future__ import annotations

import pytest

from tokensync import cli


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["--workers", "0"], {}, "argument --workers: expected 1 to 1000, got 0"),
        (["--workers", "many"], {}, "argument --workers: expected a whole number, got 'many'"),
        ([], {"TOKENSYNC_WORKERS": "many"}, "(from TOKENSYNC_WORKERS='many')"),
        (["--workers", "0"], {"TOKENSYNC_WORKERS": "8"}, "got 0; see"),  # the flag, not env
        (["--health-port", "70000"], {}, "argument --health-port: expected 0 to 65535"),
        ([], {"TOKENSYNC_METRICS_PORT": "-1"}, "(from TOKENSYNC_METRICS_PORT='-1')"),
        (["--log-level", "LOUD"], {}, "argument --log-level: invalid choice: 'LOUD'"),
        (["--log-format", "xml"], {}, "argument --log-format: invalid choice: 'xml'"),
        ([], {"TOKENSYNC_LOG_LEVEL": "verbose"}, "TOKENSYNC_LOG_LEVEL='VERBOSE': expected one"),
        ([], {"TOKENSYNC_LOG_FORMAT": "xml"}, "TOKENSYNC_LOG_FORMAT='xml': expected text or"),
        (["--provider-timeout", "0"], {}, "argument --provider-timeout: expected 0 < seconds"),
        ([], {"TOKENSYNC_PROVIDER_TIMEOUT": "soon"}, "(from TOKENSYNC_PROVIDER_TIMEOUT='soon')"),
        (["--namespace", "Team_A"], {}, "'Team_A' is not a namespace name"),
        ([], {"TOKENSYNC_NAMESPACES": "ok,Not-OK"}, "'Not-OK' is not a namespace name"),
        (["--operator-namespace", "tokensync.system"], {}, "'tokensync.system' is not a"),
        (["--metrics-port", "9000", "--health-port", "9000"], {}, "are both 9000"),
        (["--allowed-hosts", "https://idp.example.com/"], {}, "is not host or host:port"),
        (["--ca-file", "/nonexistent/ca.crt"], {}, "--ca-file /nonexistent/ca.crt: No such file"),
        (["--ca-file", __file__], {}, "not a PEM bundle of CA certificates"),
        (["--no-such-flag"], {}, "unrecognized arguments: --no-such-flag"),
    ],
)
def test_a_bad_value_is_one_line_and_exit_2(
    argv: list[str],
    env: dict[str, str],
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("tokensync"), err
    assert ": error: " in err and expected in err, err


def test_good_values_pass_and_identity_is_always_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENSYNC_WORKERS", "8")
    args = cli.build_parser().parse_args(
        ["run", "--namespace", "team-a", "--allowed-hosts", "idp.example.com,[::1]:8443"]
    )
    assert cli.run_args_problem(args) is None
    config = cli.config_from_args(args)
    assert config.workers == 8 and config.namespaces == ("team-a",)
    assert config.identity  # never left for kopf to guess (getpass fails under uid 65532)
    named = cli.config_from_args(cli.build_parser().parse_args(["run", "--identity", "pod-1"]))
    assert named.identity == "pod-1"
