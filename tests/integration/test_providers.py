"""Each provider end to end: `kubectl apply` on the real API server to the Secret's content."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from fakes.microshare import FakeMicroshare
from support.objects import Cluster, provider_token
from support.operator import OperatorProcess
from support.providers import Fakes
from support.waiting import wait_for


def apply(
    cluster: Cluster,
    namespace: str,
    name: str,
    provider: dict[str, object],
    credentials: dict[str, str],
    *,
    target: str | None = None,
    credentials_name: str | None = None,
) -> str:
    credentials_name = credentials_name or f"{name}-credentials"
    target = target or f"{name}-token"
    cluster.credentials(namespace, credentials_name, credentials)
    cluster.apply(
        provider_token(
            name,
            namespace=namespace,
            provider=provider,
            credentials=credentials_name,
            target=target,
        )
    )
    return target


def test_biotz_renews_with_the_refresh_grant_and_survives_a_restart(
    cluster: Cluster, fakes: Fakes, operator: OperatorProcess
) -> None:
    keycloak = fakes.keycloak
    keycloak.access_lifetime = 6
    device = f"{uuid.uuid4()}@devices.data-ingestion.biotz.io"
    keycloak.add_user(device, "pw-" + uuid.uuid4().hex)
    password = keycloak.state.users[device].password
    namespace = cluster.namespace("biotz")
    target = apply(
        cluster,
        namespace,
        "device",
        {"biotz": {"tokenUrl": keycloak.token_url}},
        {"username": device, "password": password},
    )
    seen: list[str] = []

    def renewed(times: int) -> bool:
        value = cluster.secret_value(namespace, target)
        if value and (not seen or seen[-1] != value):
            seen.append(value)
        return len(seen) >= times

    wait_for(lambda: renewed(4), timeout_s=40, what="three renewals", interval_s=0.1)
    id_tokens = {i.value for i in keycloak.issued_to(device) if i.grant == "id_token"}
    assert set(seen) <= id_tokens  # the id_token is what workloads get
    assert keycloak.grants(device).count("password") == 1
    assert keycloak.grants(device).count("refresh_token") >= 3

    # The refresh token is operator state: in its own Secret, never in the target.
    target_secret = cluster.secret(namespace, target)
    assert set(target_secret.data) == {"token"}
    state = cluster.secret(namespace, "device-tokensync-state")
    assert state.metadata.labels["tokensync.dev/role"] == "state"
    assert state.metadata.owner_references[0].name == "device"

    # It survives a restart: the next renewal still uses the refresh grant.
    operator.kill()
    operator.start()
    before = len(seen)
    wait_for(lambda: renewed(before + 2), timeout_s=40, what="renewals after a restart")
    assert keycloak.grants(device).count("password") == 1

    # A rejected refresh token (session ended) falls back to exactly one password grant.
    keycloak.end_sessions(device)
    before = len(seen)
    wait_for(lambda: renewed(before + 1), timeout_s=30, what="a renewal after the session ended")
    assert keycloak.grants(device).count("password") == 2


def microshare_account(microshare: FakeMicroshare) -> tuple[str, dict[str, str]]:
    user = f"{uuid.uuid4().hex[:8]}@example.com"
    microshare.add_account(user, "pw-" + uuid.uuid4().hex, "key-" + uuid.uuid4().hex)
    account = microshare.accounts[user]
    return user, {"username": user, "password": account.password, "apiKey": account.app_key}


def test_microshare_access_token_lives_48_hours(
    cluster: Cluster, fakes: Fakes, operator: OperatorProcess
) -> None:
    microshare = fakes.microshare
    user, credentials = microshare_account(microshare)
    namespace = cluster.namespace("ms")
    target = apply(
        cluster, namespace, "share", {"microshare": {"tokenUrl": microshare.token_url}}, credentials
    )
    cluster.wait_ready(namespace, "share")
    assert cluster.secret_value(namespace, target) == microshare.issued_to(user)[-1].value
    status = cluster.token(namespace, "share")["status"]
    expires = time.mktime(time.strptime(status["expiresAt"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert abs(expires - (time.time() + 48 * 3600)) < 120


def test_microshare_pipe_token_is_minted_once(
    cluster: Cluster, fakes: Fakes, operator: OperatorProcess
) -> None:
    microshare = fakes.microshare
    user, credentials = microshare_account(microshare)
    namespace = cluster.namespace("pipe")
    target = apply(
        cluster,
        namespace,
        "pipe",
        {"microshare": {"tokenUrl": microshare.token_url, "tokenKind": "pipe"}},
        credentials,
    )
    condition = cluster.wait_ready(namespace, "pipe")
    status = cluster.token(namespace, "pipe")["status"]
    assert "expiresAt" not in status and "renewalTime" not in status
    assert "does not expire" in condition["message"]
    secret = cluster.secret(namespace, target)
    assert secret.metadata.annotations["tokensync.dev/expires-at"] == "never"
    # An unrelated edit of the ProviderToken mints nothing; the spec changing does.
    cluster.patch_token(namespace, "pipe", {"metadata": {"labels": {"team": "a"}}})
    cluster.patch_token(
        namespace, "pipe", {"spec": {"provider": {"microshare": {"scope": "SHARE:WRITE"}}}}
    )
    wait_for(
        lambda: len(microshare.issued_to(user)) == 2,
        timeout_s=15,
        what="a new pipe token after the spec changed",
    )
    generation = cluster.token(namespace, "pipe")["metadata"]["generation"]
    wait_for(
        lambda: cluster.token(namespace, "pipe")["status"]["observedGeneration"] == generation,
        timeout_s=10,
        what="the spec change to be observed",
    )
    assert len(microshare.issued_to(user)) == 2
    assert all(
        r.query.get("grant_type") == "pipe"
        for r in microshare.requests
        if r.query.get("username") == user
    )


def test_podero_sandbox_token(cluster: Cluster, fakes: Fakes, operator: OperatorProcess) -> None:
    podero = fakes.podero
    client_id = "partner-" + uuid.uuid4().hex[:8]
    podero.add_client(client_id, "secret-" + uuid.uuid4().hex)
    namespace = cluster.namespace("podero")
    target = apply(
        cluster,
        namespace,
        "energy",
        {"podero": {"environment": "sandbox", "tokenUrl": podero.token_url}},
        {"clientId": client_id, "clientSecret": podero.clients[client_id]},
    )
    cluster.wait_ready(namespace, "energy")
    assert cluster.secret_value(namespace, target) == podero.issued_to(client_id)[-1].value


def test_basiq_tokens_sharing_one_key_share_one_mint(
    cluster: Cluster, fakes: Fakes, operator: OperatorProcess
) -> None:
    """Basiq allows 1,500 /token calls per 5 minutes; 1,000 ProviderTokens use one."""
    basiq = fakes.basiq
    name = "partner-" + uuid.uuid4().hex[:8]
    key = basiq.add_key(name)
    namespace = cluster.namespace("basiq")
    cluster.credentials(namespace, "basiq-key", {"apiKey": key})
    count = 1000
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(
            pool.map(
                lambda index: cluster.custom.create_namespaced_custom_object(
                    "tokensync.dev",
                    "v1alpha1",
                    namespace,
                    "providertokens",
                    provider_token(
                        f"app-{index}",
                        provider={"basiq": {"tokenUrl": basiq.token_url}},
                        credentials="basiq-key",
                        target=f"app-{index}-token",
                    ),
                ),
                range(count),
            )
        )

    def all_ready() -> bool:
        items = cluster.custom.list_namespaced_custom_object(
            "tokensync.dev", "v1alpha1", namespace, "providertokens"
        )["items"]
        return (
            sum(
                any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in (i.get("status") or {}).get("conditions", [])
                )
                for i in items
            )
            == count
        )

    wait_for(
        all_ready, timeout_s=300, what=f"{count} Basiq ProviderTokens to be Ready", interval_s=1
    )
    calls = [r for r in basiq.requests if r.headers.get("authorization") == f"Basic {key}"]
    assert len(calls) == 1, f"{len(calls)} /token calls for {count} ProviderTokens"
    values = {cluster.secret_value(namespace, f"app-{i}-token") for i in (0, count // 2, count - 1)}
    assert values == {basiq.issued_to(name)[0].value}


def test_basiq_client_access_without_user_is_refused_by_the_api(cluster: Cluster) -> None:
    namespace = cluster.namespace("basiq")
    output = cluster.apply_refused(
        provider_token(
            "client",
            namespace=namespace,
            provider={"basiq": {"scope": "CLIENT_ACCESS"}},
            credentials="k",
            target="t",
        )
    )
    assert "basiq.userId is required when scope is CLIENT_ACCESS" in output


def test_basiq_bad_key_is_reported(
    cluster: Cluster, fakes: Fakes, operator: OperatorProcess
) -> None:
    namespace = cluster.namespace("basiq")
    apply(
        cluster,
        namespace,
        "wrong",
        {"basiq": {"tokenUrl": fakes.basiq.token_url}},
        {"apiKey": "bm90OmEta2V5"},
    )
    condition = cluster.wait_ready(namespace, "wrong", status="False")
    assert condition["reason"] == "InvalidCredentials"
    assert "check your API key" in condition["message"]
    assert "bm90OmEta2V5" not in condition["message"]


def test_official_endpoint_override_needs_the_allowlist(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    namespace = cluster.namespace("allow")
    apply(
        cluster,
        namespace,
        "regional",
        {"podero": {"tokenUrl": "https://podero.internal.example/oauth2/token/"}},
        {"clientId": "x", "clientSecret": "y"},
    )
    condition = cluster.wait_ready(namespace, "regional", status="False")
    assert condition["reason"] == "EndpointNotAllowed"
    assert "podero.internal.example:443" in condition["message"]
