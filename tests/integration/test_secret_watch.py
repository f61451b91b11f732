"""The labelled-Secret watch against the real kube-apiserver, as the operator's account
(deploy/rbac): what it lists and watches, and what each change arrives as. A 410 and
the relist after it come with an API server restart (test_control_plane_faults)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from kubernetes import config as k8s_config
from kubernetes.client import Configuration

from support.objects import Cluster
from support.waiting import async_wait_for
from tokensync import names
from tokensync.kube import KubeApi
from tokensync.model import object_key
from tokensync.secret_cache import SecretCache
from tokensync.secret_watch import SecretWatch


@pytest.fixture
async def kube(operator_kubeconfig_path: Path) -> AsyncIterator[KubeApi]:
    configuration = Configuration()
    k8s_config.load_kube_config(
        config_file=str(operator_kubeconfig_path), client_configuration=configuration
    )
    api = KubeApi(configuration)
    try:
        yield api
    finally:
        await api.close()


def labelled(name: str, value: str = names.ROLE_TOKEN) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {names.ROLE_LABEL: value}},
        "stringData": {"token": f"value-{uuid.uuid4().hex}"},
    }


@pytest.mark.parametrize("scope", ["namespace", "cluster"])
async def test_the_watch_follows_the_labelled_secrets_and_nothing_else(
    cluster: Cluster, kube: KubeApi, scope: str
) -> None:
    namespace = cluster.namespace("watch")
    core = cluster.core

    async def admin(call: Any, *args: Any) -> None:
        # The admin client is synchronous: off the loop the watch runs on.
        await asyncio.to_thread(call, *args)

    await admin(core.create_namespaced_secret, namespace, labelled("before"))
    await admin(core.create_namespaced_secret, namespace, {"metadata": {"name": "plain"}})
    cache = SecretCache(kube)
    watch = SecretWatch(kube, cache, namespaces=(namespace,) if scope == "namespace" else ())
    await watch.prime()
    held = set(cache.keys(namespace))
    assert held == {(namespace, "before")}, "primed with the labelled Secret only"

    seen: list[tuple[str | None, str]] = []

    def deliver(kind: str | None, body: Mapping[str, Any]) -> None:
        key = object_key(body)
        if key[0] == namespace:  # cluster-wide, other tests' Secrets pass by too
            seen.append((kind, key[1]))
            cache.observe(kind, body)

    watch.start(deliver)
    try:
        await admin(core.create_namespaced_secret, namespace, labelled("during"))
        await admin(core.patch_namespaced_secret, "before", namespace, {"stringData": {"k": "v"}})
        await admin(core.delete_namespaced_secret, "before", namespace)
        # Losing the label takes it out of the selection: DELETED, as far as the watch goes.
        await admin(
            core.patch_namespaced_secret,
            "during",
            namespace,
            {"metadata": {"labels": {names.ROLE_LABEL: None}}},
        )
        # Gaining it brings it in.
        await admin(
            core.patch_namespaced_secret,
            "plain",
            namespace,
            {"metadata": {"labels": {names.ROLE_LABEL: names.ROLE_CREDENTIALS}}},
        )

        async def five_events() -> bool:
            return len(seen) >= 5

        await async_wait_for(five_events, timeout_s=15, what="five events")
        assert watch.running()
    finally:
        await watch.stop()
    assert seen == [
        ("ADDED", "during"),
        ("MODIFIED", "before"),
        ("DELETED", "before"),
        ("DELETED", "during"),
        ("ADDED", "plain"),
    ]
    assert set(cache.keys(namespace)) == {(namespace, "plain")}


async def watched(kube: KubeApi, namespace: str, version: str) -> list[dict[str, Any]]:
    """What one watch of 3 s gets."""
    async with contextlib.aclosing(
        kube.watch_secrets(names.SECRET_WATCH_SELECTOR, namespace, version, timeout_s=3)
    ) as events:
        return [event async for event in events]


async def test_a_quiet_watch_ends_at_its_timeout_with_bookmarks_at_most(
    cluster: Cluster, kube: KubeApi
) -> None:
    namespace = cluster.namespace("watch")
    listing = await kube.list_secrets(names.SECRET_WATCH_SELECTOR, namespace)
    # Changes elsewhere move the resourceVersion on; the selection here stays quiet.
    await asyncio.to_thread(cluster.namespace, "elsewhere")
    began = time.monotonic()
    quiet = await watched(kube, namespace, listing.resource_version)
    # Ended by the API server at timeoutSeconds (3 s here), not by an error or the client.
    assert 2.5 <= time.monotonic() - began < 10
    assert {event["type"] for event in quiet} <= {"BOOKMARK"}, quiet
    for bookmark in quiet:
        version = int(bookmark["object"]["metadata"]["resourceVersion"])
        assert version >= int(listing.resource_version)


async def test_a_secret_deleted_between_list_and_watch_is_reported_deleted(
    cluster: Cluster, kube: KubeApi
) -> None:
    namespace = cluster.namespace("watch")
    for name in ("kept", "deleted"):
        await asyncio.to_thread(cluster.core.create_namespaced_secret, namespace, labelled(name))
    cache = SecretCache(kube)
    watch = SecretWatch(kube, cache, namespaces=(namespace,))
    await watch.prime()
    # Deleted after the LIST, before the watch starts from its resourceVersion.
    await asyncio.to_thread(cluster.core.delete_namespaced_secret, "deleted", namespace)
    seen: list[tuple[str | None, str]] = []

    def deliver(kind: str | None, body: Mapping[str, Any]) -> None:
        seen.append((kind, object_key(body)[1]))
        cache.observe(kind, body)

    watch.start(deliver)
    try:

        async def deletion_reported() -> bool:
            return ("DELETED", "deleted") in seen

        await async_wait_for(deletion_reported, timeout_s=15, what="the deletion to be reported")
        assert watch.running()
    finally:
        await watch.stop()
    assert set(cache.keys(namespace)) == {(namespace, "kept")}
    assert seen == [("DELETED", "deleted")]
