from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tokensync_dev.devcluster.build import BuildError
from tokensync_dev.peers import eso

# ``go mod edit -json`` of v0.20.4's go.mod (abridged) and of v1.3.2's.
SINGLE_MODULE = {
    "Module": {"Path": eso.ESO_MODULE},
    "Go": "1.25.1",
    "Replace": [
        {
            "Old": {"Path": "github.com/Masterminds/sprig/v3"},
            "New": {"Path": "github.com/external-secrets/sprig/v3", "Version": "v3.3.0"},
        },
        {
            "Old": {"Path": "example.com/pinned", "Version": "v1.0.0"},
            "New": {"Path": "example.com/fork", "Version": "v1.0.1"},
        },
    ],
}
SPLIT_MODULES = {
    "Module": {"Path": eso.ESO_MODULE},
    "Go": "1.25.6",
    "Replace": [
        {"Old": {"Path": f"{eso.ESO_MODULE}/apis"}, "New": {"Path": "./apis"}},
    ],
}


def test_the_release_replaces_are_carried_into_the_wrapper() -> None:
    assert eso.carried_replaces(SINGLE_MODULE) == [
        "github.com/Masterminds/sprig/v3 => github.com/external-secrets/sprig/v3 v3.3.0",
        "example.com/pinned v1.0.0 => example.com/fork v1.0.1",
    ]
    assert eso.carried_replaces({"Go": "1.25.1"}) == []


def test_a_release_split_into_local_modules_cannot_be_wrapped() -> None:
    with pytest.raises(BuildError, match=r"local path \./apis"):
        eso.carried_replaces(SPLIT_MODULES)


def test_wrapper_pins_the_release_and_builds_the_controller_as_a_tool() -> None:
    text = eso.wrapper_go_mod("v0.20.4", "1.25.1", eso.carried_replaces(SINGLE_MODULE))
    assert text.startswith(f"module {eso.WRAPPER_MODULE}\n\ngo 1.25.1\n")
    assert f"require {eso.ESO_MODULE} v0.20.4\n" in text
    sprig = "github.com/Masterminds/sprig/v3 => github.com/external-secrets/sprig/v3 v3.3.0"
    assert f"replace (\n\t{sprig}\n" in text
    assert text.endswith(f"tool {eso.ESO_MODULE}\n")
    assert "replace" not in eso.wrapper_go_mod("v0.20.4", "1.25.1", [])


@pytest.mark.parametrize(
    ("required", "running", "ok"),
    [
        ("1.25.1", "go1.26.8", True),
        ("1.25.1", "go1.25.1", True),
        ("1.25.6", "go1.25.1", False),
        ("1.26", "go1.25.9", False),
        ("1.24", "go1.24.0\n", True),
    ],
)
def test_toolchain_check(required: str, running: str, ok: bool) -> None:
    assert eso.toolchain_suffices(required, running) is ok


def test_binary_is_cached_by_version_outside_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENSYNC_CACHE_DIR", str(tmp_path))
    expected = tmp_path / "peers" / "external-secrets-v0.20.4" / "external-secrets"
    assert eso.binary_path("v0.20.4") == expected


def test_a_cached_binary_is_not_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENSYNC_CACHE_DIR", str(tmp_path))
    cached = eso.binary_path()
    cached.parent.mkdir(parents=True)
    cached.write_text("#!/bin/sh\n")

    def no_go(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("go was called for a cached binary")

    monkeypatch.setattr(eso, "_run_go", no_go)
    assert eso.build() == cached


def test_crd_paths_leave_out_the_kustomization(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bases = tmp_path / eso.CRD_DIR
    bases.mkdir(parents=True)
    for name in ("kustomization.yaml", "b.yaml", "a.yaml", "notes.txt"):
        (bases / name).write_text("")
    module = eso.Module(version="v0.20.4", dir=tmp_path, go_version="1.25.1", replaces=[])
    monkeypatch.setattr(eso, "download", lambda version: module)
    assert eso.crd_paths() == [bases / "a.yaml", bases / "b.yaml"]
    (bases / "a.yaml").unlink()
    (bases / "b.yaml").unlink()
    with pytest.raises(BuildError, match="no CRDs"):
        eso.crd_paths()


def test_run_args_start_no_leader_election_and_bind_loopback() -> None:
    args = eso.run_args(
        metrics_addr="127.0.0.1:18080", live_addr="127.0.0.1:18082", concurrent=4, extra=["--x"]
    )
    assert "--enable-leader-election=false" in args
    assert "--metrics-addr=127.0.0.1:18080" in args
    assert "--live-addr=127.0.0.1:18082" in args
    assert "--concurrent=4" in args
    assert args[-1] == "--x"
    assert not any(a.startswith("--kubeconfig") for a in args)


def test_generator_posts_client_credentials_with_basic_auth_from_the_secret() -> None:
    generator = eso.webhook_generator("gen", "ns", "http://127.0.0.1:1/token", "creds-secret")
    spec = generator["spec"]
    assert generator["apiVersion"] == "generators.external-secrets.io/v1alpha1"
    assert generator["kind"] == "Webhook"
    assert spec["method"] == "POST"
    assert spec["body"] == "grant_type=client_credentials"
    assert spec["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert spec["headers"]["Authorization"].startswith("Basic {{")
    assert spec["headers"]["Authorization"] == (
        'Basic {{ printf "%s:%s" (urlquery .creds.client_id) (urlquery .creds.client_secret)'
        " | b64enc }}"
    )
    assert spec["secrets"] == [
        {"name": "creds", "secretRef": {"name": "creds-secret", "key": "client_id"}}
    ]
    assert spec["result"] == {"jsonPath": "$"}


def test_external_secret_refers_to_the_generator() -> None:
    es = eso.external_secret("tok-1", "ns", "gen", "4m")
    assert es["apiVersion"] == "external-secrets.io/v1"
    assert es["spec"]["refreshInterval"] == "4m"
    assert es["spec"]["target"] == {"name": "tok-1", "creationPolicy": "Owner"}
    ref = es["spec"]["dataFrom"][0]["sourceRef"]["generatorRef"]
    assert ref == {"apiVersion": eso.GENERATORS_API, "kind": "Webhook", "name": "gen"}
    assert eso.external_secret("a", "ns", "gen", "1m", target="b")["spec"]["target"]["name"] == "b"


def test_credentials_secret_is_labelled_for_the_webhook_provider() -> None:
    secret = eso.credentials_secret("c", "ns", "id", "pw")
    assert secret["metadata"]["labels"] == {"external-secrets.io/type": "webhook"}
    assert secret["stringData"] == {"client_id": "id", "client_secret": "pw"}
