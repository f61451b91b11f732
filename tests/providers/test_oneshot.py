"""`tokensync mint`: one mint from files, without a cluster, never printing the token unasked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fakes.oauth2_server import FakeOAuth2Server

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def idp() -> Iterator[FakeOAuth2Server]:
    with FakeOAuth2Server() as server:
        server.add_client("cli", "cli-secret-value", expires_in=900)
        yield server


def files(tmp_path: Path, idp: FakeOAuth2Server, secret: str) -> tuple[Path, Path]:
    manifest = tmp_path / "pt.yaml"
    manifest.write_text(
        yaml.safe_dump_all(
            [
                {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "c"}},
                {
                    "apiVersion": "tokensync.dev/v1alpha1",
                    "kind": "ProviderToken",
                    "metadata": {"name": "cli"},
                    "spec": {
                        "provider": {"oauth2": {"tokenUrl": idp.token_url}},
                        "credentialsRef": {"name": "c"},
                        "target": {"name": "t"},
                    },
                },
            ]
        )
    )
    credentials = tmp_path / "credentials.env"
    credentials.write_text(f"clientId=cli\nclientSecret={secret}\n")
    return manifest, credentials


def mint(
    manifest: Path, credentials: Path, host: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tokensync",
            "mint",
            "-f",
            str(manifest),
            "--credentials",
            str(credentials),
            "--allowed-hosts",
            host,
            "--allow-insecure-http",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO / "operator")},
    )


def test_prints_the_expiry_and_not_the_token(idp: FakeOAuth2Server, tmp_path: Path) -> None:
    manifest, credentials = files(tmp_path, idp, "cli-secret-value")
    result = mint(manifest, credentials, idp.host)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["provider"] == "oauth2" and printed["lifetimeSeconds"] == 900
    token = idp.issued_to("cli")[-1].value
    assert token not in result.stdout + result.stderr
    assert "cli-secret-value" not in result.stdout + result.stderr


def test_show_token_prints_it(idp: FakeOAuth2Server, tmp_path: Path) -> None:
    manifest, credentials = files(tmp_path, idp, "cli-secret-value")
    result = mint(manifest, credentials, idp.host, "--show-token")
    assert json.loads(result.stdout)["token"] == idp.issued_to("cli")[-1].value


def test_bad_credentials_say_why(idp: FakeOAuth2Server, tmp_path: Path) -> None:
    manifest, credentials = files(tmp_path, idp, "wrong-secret-value")
    result = mint(manifest, credentials, idp.host)
    assert result.returncode == 1
    assert result.stdout.startswith("mint failed: InvalidCredentials")
    assert "wrong-secret-value" not in result.stdout


def test_the_allowlist_applies_here_too(idp: FakeOAuth2Server, tmp_path: Path) -> None:
    manifest, credentials = files(tmp_path, idp, "cli-secret-value")
    result = mint(manifest, credentials, "elsewhere.example")
    assert result.returncode == 1 and "EndpointNotAllowed" in result.stdout
    assert idp.requests == []


@pytest.mark.parametrize(
    "block",
    [
        {"clientAuth": "service_account", "serviceAccountRef": {"name": "a", "audience": "x"}},
        {"clientAuth": "tls_client_auth", "clientId": "cli", "tlsSecretRef": {"name": "tls"}},
    ],
)
def test_a_proof_only_the_cluster_holds_is_a_one_line_usage_error(
    idp: FakeOAuth2Server, tmp_path: Path, block: dict[str, object]
) -> None:
    manifest, credentials = files(tmp_path, idp, "cli-secret-value")
    documents = list(yaml.safe_load_all(manifest.read_text()))
    documents[1]["spec"]["provider"]["oauth2"].update(block)
    manifest.write_text(yaml.safe_dump_all(documents))
    result = mint(manifest, credentials, idp.host)
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert "talks to no cluster" in line
    assert idp.requests == []
