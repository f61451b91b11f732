"""Faults of the control plane itself: the API server stopped for 30 s, etcd restarted.

These stop processes, so they run on a control plane of their own with an operator of
their own (deploy/rbac, like the suite's), never on the one the other tests share. A
watcher reads the token Secrets every 100 ms throughout, as a kubelet would.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import config

from fakes.oauth2_server import FakeOAuth2Server
from support.cluster import control_plane_in, operator_kubeconfig
from support.invariants import SecretWatch, status_is_true
from support.objects import Cluster, provider_token
from support.operator import FAULT_PLANE_LOG, OperatorProcess
from support.providers import Fakes
from support.waiting import wait_for
from tokensync_dev.devcluster.cluster import ControlPlane, free_port

API_DOWN_S = 30


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with control_plane_in(tmp_path_factory.mktemp("fault-plane")) as own:
        yield own


@pytest.fixture(scope="module")
def fault_cluster(plane: ControlPlane) -> Iterator[Cluster]:
    api = config.new_client_from_config(config_file=str(plane.admin_kubeconfig))
    try:
        yield Cluster(plane, api)
    finally:
        api.close()


@pytest.fixture(scope="module")
def fault_operator(
    plane: ControlPlane,
    fault_cluster: Cluster,
    fakes: Fakes,
    operator_logs_dir: Path,
    leak_scan_texts: list[tuple[str, str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    kubeconfig = operator_kubeconfig(plane, tmp_path_factory.mktemp("fault-op") / "kubeconfig")
    process = OperatorProcess(
        kubeconfig,
        operator_logs_dir / FAULT_PLANE_LOG,
        [
            "--allowed-hosts",
            fakes.oauth2.host,
            "--allow-insecure-http",
            "--metrics-port",
            "0",
            "--health-port",
            str(free_port()),
        ],
    ).start()
    try:
        yield process
    finally:
        process.stop()
        # This control plane is gone before the suite's leak scan: hand it what was said.
        leak_scan_texts.extend(
            (f"fault plane {where}", text) for where, text in fault_cluster.operator_output()
        )


def tokens_for(
    cluster: Cluster, server: FakeOAuth2Server, count: int, expires_in: int
) -> tuple[str, str, list[str]]:
    """``count`` ProviderTokens on one client, all Ready; returns namespace, client, names."""
    namespace = cluster.namespace("fault")
    client_id = f"fault-{uuid.uuid4().hex[:8]}"
    secret = f"fault-secret-{uuid.uuid4().hex}"
    server.add_client(client_id, secret, expires_in=expires_in)
    cluster.credentials(namespace, "creds", {"clientId": client_id, "clientSecret": secret})
    names = [f"pt-{index}" for index in range(count)]
    for name in names:
        cluster.apply(
            provider_token(
                name,
                namespace=namespace,
                provider={"oauth2": {"tokenUrl": server.token_url}},
                credentials="creds",
                target=f"{name}-token",
            )
        )
    for name in names:
        cluster.wait_ready(namespace, name, timeout_s=60)
    return namespace, client_id, names


def status_matches_secret(
    cluster: Cluster, server: FakeOAuth2Server, namespace: str, name: str
) -> bool:
    return status_is_true(cluster, server, namespace, name, f"{name}-token")


def assert_no_unexpected_errors(operator: OperatorProcess) -> None:
    assert operator.running(), "the operator must recover without a restart"
    logs = operator.logs()
    assert "failed unexpectedly" not in logs
    assert "Traceback" not in logs


def test_api_server_stopped_for_30s_during_renewals(
    fault_cluster: Cluster, fault_operator: OperatorProcess, oauth2_server: FakeOAuth2Server
) -> None:
    """75-second tokens renew 34-38 s after their mint; the API server is away from 25 s
    (its graceful stop takes up to 10 s) until 55 s and ready a few seconds later.

    The operator mints on time, cannot write, keeps the new token and writes it once the
    server is back: the Secrets always hold a valid token and nothing is minted twice.
    """
    namespace, client_id, names = tokens_for(fault_cluster, oauth2_server, 6, expires_in=75)
    last_mint = max(i.issued_at for i in oauth2_server.issued_to(client_id))
    with SecretWatch(fault_cluster, namespace) as watch:
        wait_for(lambda: time.time() >= last_mint + 25, timeout_s=40, what="25 s into the tokens")
        stopped_at = time.time()
        fault_cluster.plane.stop_component("kube-apiserver")
        wait_for(
            lambda: time.time() >= stopped_at + API_DOWN_S,
            timeout_s=API_DOWN_S + 5,
            what="the outage to last 30 s",
        )
        renewals_in_outage = [
            i for i in oauth2_server.issued_to(client_id) if i.issued_at > stopped_at
        ]
        fault_cluster.plane.start_component("kube-apiserver")
        back_at = time.time()
        for name in names:
            wait_for(
                lambda name=name: (
                    status_matches_secret(fault_cluster, oauth2_server, namespace, name)
                    and len(watch.distinct(f"{name}-token")) >= 2
                ),
                timeout_s=30,
                what=f"{name} renewed after the API server came back",
            )
        recovered_in = time.time() - back_at

    issued = {i.value: i for i in oauth2_server.issued_to(client_id)}
    verdict = watch.verdict(issued)
    assert verdict.unanswered > 0, "the watcher should have seen the API server gone"
    assert verdict.clean, verdict
    # Every renewal fell due while the server was away and was minted then, once (tokens
    # on the same credentials share a mint); what the Secrets got afterwards is that
    # token, written late, not a second mint.
    minted_in_outage = {i.value for i in renewals_in_outage}
    assert 1 <= len(minted_in_outage) <= len(names), renewals_in_outage
    for name in names:
        assert watch.distinct(f"{name}-token")[1] in minted_in_outage
    assert recovered_in < 15, recovered_in
    print(
        f"API server away {back_at - stopped_at:.1f} s; all Secrets renewed "
        f"{recovered_in:.1f} s after it was ready; {verdict.samples} samples, "
        f"{verdict.unanswered} unanswered, 0 expired"
    )
    # The Secret watch came back too (a restarted API server has a new watch cache: the
    # old resourceVersion is gone, 410, and the watch lists again): drift is still seen.
    target = f"{names[0]}-token"
    held = fault_cluster.secret_value(namespace, target)
    fault_cluster.core.delete_namespaced_secret(target, namespace)
    wait_for(
        lambda: fault_cluster.secret_value(namespace, target) == held,
        timeout_s=15,
        what="the deleted Secret restored after the API server came back",
    )
    assert "Secret watch cluster-wide listed again" in fault_operator.logs()
    assert_no_unexpected_errors(fault_operator)


def test_etcd_restarted(
    fault_cluster: Cluster, fault_operator: OperatorProcess, oauth2_server: FakeOAuth2Server
) -> None:
    namespace, client_id, names = tokens_for(fault_cluster, oauth2_server, 3, expires_in=3600)
    before = len(oauth2_server.issued_to(client_id))
    renewed_from = fault_cluster.secret_value(namespace, f"{names[0]}-token")
    with SecretWatch(fault_cluster, namespace) as watch:
        fault_cluster.plane.stop_component("etcd")
        wait_for(
            lambda: watch.samples and watch.samples[-1].values is None,
            timeout_s=15,
            what="the API server to notice etcd is gone",
        )
        fault_cluster.plane.start_component("etcd")
        wait_for(fault_cluster.plane.api_ready, timeout_s=60, what="the API server ready again")
        # Working again: a change is acted on, and a new ProviderToken is served.
        fault_cluster.patch_token(
            namespace, names[0], {"metadata": {"annotations": {"tokensync.dev/renew": "etcd"}}}
        )
        fault_cluster.apply(
            provider_token(
                "after-restart",
                namespace=namespace,
                provider={"oauth2": {"tokenUrl": oauth2_server.token_url}},
                credentials="creds",
                target="after-restart-token",
            )
        )
        fault_cluster.wait_ready(namespace, "after-restart", timeout_s=60)
        wait_for(
            lambda: fault_cluster.secret_value(namespace, f"{names[0]}-token") != renewed_from,
            timeout_s=30,
            what="the renewal asked for after the restart",
        )
    issued = {i.value: i for i in oauth2_server.issued_to(client_id)}
    verdict = watch.verdict(issued)
    assert verdict.unanswered > 0
    assert verdict.clean, verdict
    # The other tokens were valid throughout: not minted again. The renewal asked for is
    # one mint, which the new ProviderToken on the same credentials may share.
    assert before < len(issued) <= before + 2
    for name in names:
        assert status_matches_secret(fault_cluster, oauth2_server, namespace, name)
    secrets = fault_cluster.core.list_namespaced_secret(
        namespace, label_selector="tokensync.dev/role=token"
    ).items
    assert sorted(s.metadata.name for s in secrets) == sorted(
        [f"{n}-token" for n in names] + ["after-restart-token"]
    )
    assert_no_unexpected_errors(fault_operator)
