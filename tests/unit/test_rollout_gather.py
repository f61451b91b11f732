"""What one look gathers for rollouts: each named Secret's token with its ProviderToken's
spec.rollout.minInterval, read from the caches."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tokensync import names
from tokensync.model import DEFAULT_ROLLOUT_MIN_INTERVAL, SpecInvalid, rollout_min_interval
from tokensync.rollout_policy import DIGEST_PREFIX, Workload
from tokensync.rollouts.gather import gather
from tokensync.secret_cache import SecretCache
from tokensync.token_cache import TokenCache

NS = "team"
TOKEN_ID = "0123456789abcdef"


def provider_token(rollout: dict[str, Any] | None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": NS, "name": "api", "uid": "u1", "resourceVersion": "5"},
        "spec": {
            "provider": {"oauth2": {"tokenUrl": "https://idp.example/token"}},
            "target": {"name": "api-token"},
            **({"rollout": rollout} if rollout is not None else {}),
            **spec,
        },
    }


def target_secret() -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": NS,
            "name": "api-token",
            "resourceVersion": "7",
            "labels": {names.ROLE_LABEL: names.ROLE_TOKEN},
            "annotations": {names.TOKEN_DIGEST_ANNOTATION: DIGEST_PREFIX + TOKEN_ID * 4},
            "ownerReferences": [
                {"kind": names.KIND, "name": "api", "uid": "u1", "controller": True}
            ],
        },
        "data": {"token": "dg=="},
    }


class NoApi:
    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        raise AssertionError("the workload's record names this token: nothing to read")


@pytest.mark.parametrize(
    ("rollout", "interval"),
    [
        (None, DEFAULT_ROLLOUT_MIN_INTERVAL),
        ({"minInterval": "10m"}, timedelta(minutes=10)),
        # Zero is a value: restart at every rotation (it once fell back to the default).
        ({"minInterval": "0s"}, timedelta(0)),
    ],
)
async def test_the_interval_is_the_provider_tokens_own(
    rollout: dict[str, Any] | None, interval: timedelta
) -> None:
    secrets, tokens = SecretCache(NoApi()), TokenCache()  # type: ignore[arg-type]
    secrets.observe("ADDED", target_secret())
    tokens.observe(provider_token(rollout))
    workload = Workload("Deployment", "web", ("api-token",), record={"api-token": TOKEN_ID})
    gathered = await gather(NoApi(), secrets, tokens, NS, [workload])  # type: ignore[arg-type]
    assert gathered.secrets["api-token"].min_interval == interval
    assert rollout_min_interval(provider_token(rollout)["spec"]) == interval


async def test_a_mistake_elsewhere_in_the_spec_does_not_stop_rollouts() -> None:
    secrets, tokens = SecretCache(NoApi()), TokenCache()  # type: ignore[arg-type]
    secrets.observe("ADDED", target_secret())
    tokens.observe(provider_token({"minInterval": "2m"}, refresh={"renewBefore": "soon"}))
    workload = Workload("Deployment", "web", ("api-token",), record={"api-token": TOKEN_ID})
    gathered = await gather(NoApi(), secrets, tokens, NS, [workload])  # type: ignore[arg-type]
    assert gathered.secrets["api-token"].min_interval == timedelta(minutes=2)
    with pytest.raises(SpecInvalid):
        rollout_min_interval({"rollout": {"minInterval": "soon"}})
