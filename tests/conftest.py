"""Suite-wide fixtures: one real control plane (etcd, kube-apiserver, controller manager)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from support.cluster import control_plane_in, operator_kubeconfig
from tokensync_dev.devcluster.cluster import ControlPlane


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """Started once per run; a failure to start fails the tests that need it (never a skip)."""
    with control_plane_in(tmp_path_factory.mktemp("control-plane")) as plane:
        yield plane


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane) -> Path:
    return control_plane.admin_kubeconfig


@pytest.fixture(scope="session")
def api_client(kubeconfig: Path) -> Iterator[client.ApiClient]:
    """An admin client for arranging and inspecting; the operator never gets this one."""
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(scope="session")
def operator_kubeconfig_path(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return operator_kubeconfig(control_plane, tmp_path_factory.mktemp("operator") / "kubeconfig")
