from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tokensync_dev.devcluster import build
from tokensync_dev.devcluster.versions import staging_version

GO_MOD = """module k8s.io/kubernetes

go 1.25.0

require (
\tk8s.io/api v0.0.0
\tk8s.io/apiserver v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/apiserver => ./staging/src/k8s.io/apiserver
\tgithub.com/example/fork => github.com/example/fork v1.2.3
)

replace k8s.io/kms => ./staging/src/k8s.io/kms
"""


def test_staging_modules_are_read_from_go_mod_not_hard_coded() -> None:
    assert build.staging_modules(GO_MOD) == ["k8s.io/api", "k8s.io/apiserver", "k8s.io/kms"]


def test_wrapper_replaces_each_staging_module_with_its_published_twin() -> None:
    text = build.kube_wrapper_go_mod("v1.35.8", ["k8s.io/apiserver", "k8s.io/api"])
    assert "require k8s.io/kubernetes v1.35.8" in text
    assert "\tk8s.io/api => k8s.io/api v0.35.8" in text
    assert "\tk8s.io/apiserver => k8s.io/apiserver v0.35.8" in text
    for command in ("kube-apiserver", "kube-controller-manager", "kubectl"):
        assert f"\tk8s.io/kubernetes/cmd/{command}" in text


@pytest.mark.parametrize(
    ("kubernetes", "twin"), [("v1.35.8", "v0.35.8"), ("v1.36.0-rc.1", "v0.36.0-rc.1")]
)
def test_staging_version(kubernetes: str, twin: str) -> None:
    assert staging_version(kubernetes) == twin


def test_staging_version_rejects_non_1x() -> None:
    with pytest.raises(ValueError, match=r"not a Kubernetes 1\.x"):
        staging_version("v2.0.0")


def test_version_is_stamped_into_the_binaries() -> None:
    flags = build._version_ldflags("v1.35.8")
    assert "-X k8s.io/component-base/version.gitVersion=v1.35.8" in flags
    assert "-X k8s.io/component-base/version.gitMinor=35" in flags


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_kubebuilder_assets_win_over_the_cache_and_the_cache_fills_gaps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENSYNC_CACHE_DIR", str(tmp_path / "cache"))
    assets = tmp_path / "assets"
    for name in ("etcd", "kube-apiserver", "kubectl"):
        _executable(assets / name)
    # envtest assets carry no controller manager: that one must come from our cache.
    cached_kcm = _executable(build.kube_bin_dir() / "kube-controller-manager")
    found = build.locate({**os.environ, "KUBEBUILDER_ASSETS": str(assets)})
    assert found["etcd"] == assets / "etcd"
    assert found["kube-apiserver"] == assets / "kube-apiserver"
    assert found["kube-controller-manager"] == cached_kcm


def test_cache_is_keyed_by_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENSYNC_CACHE_DIR", str(tmp_path))
    assert build.kube_bin_dir("v1.35.8") == tmp_path / "bin" / "v1.35.8"
    assert build.etcd_bin_dir("v3.6.16") == tmp_path / "bin" / "etcd-v3.6.16"
