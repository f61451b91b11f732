"""Why a token is minted: the pure decision, one row per situation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tokensync.decision import Cause, Mint, Refuse, Rewrite, Wait, decide
from tokensync.model import format_time, parse_provider_token
from tokensync.providers.base import Token
from tokensync.secret_bodies import TargetState

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
UID = "uid-1"
DIGEST = "hmac-sha256:current"


def view(
    *,
    generation: int = 2,
    observed: int | None = 2,
    ready: str = "True",
    renewal: datetime | None = NOW + timedelta(minutes=10),
    renew_annotation: str | None = None,
    last_renew: str | None = None,
) -> Any:
    status: dict[str, Any] = {}
    if observed is not None:
        status = {
            "observedGeneration": observed,
            "renewalTime": format_time(renewal),
            "lastRenewRequest": last_renew,
            "conditions": [{"type": "Ready", "status": ready, "reason": "X"}],
        }
    annotations = {"tokensync.dev/renew": renew_annotation} if renew_annotation else {}
    return parse_provider_token(
        {
            "metadata": {
                "namespace": "ns",
                "name": "pt",
                "uid": UID,
                "generation": generation,
                "annotations": annotations,
            },
            "spec": {
                "provider": {"oauth2": {"tokenUrl": "https://idp.example/token"}},
                "credentialsRef": {"name": "creds"},
                "target": {"name": "out"},
            },
            "status": status,
        }
    )


def target(
    *,
    owner: str | None = UID,
    intact: bool = True,
    managed: bool = True,
    digest: str | None = DIGEST,
    expires: datetime | None = NOW + timedelta(minutes=30),
) -> TargetState:
    return TargetState(
        owner_uid=owner,
        managed=managed,
        token_intact=intact,
        credentials_digest=digest,
        expires_at=expires,
    )


HELD = Token(value="v", expires_at=NOW + timedelta(minutes=30), minted_at=NOW)

CASES = [
    ("healthy and not due", view(), target(), None, None, Wait(NOW + timedelta(minutes=10))),
    ("never minted", view(observed=None), None, None, None, Mint(Cause.INITIAL)),
    (
        "due",
        view(renewal=NOW - timedelta(seconds=1)),
        target(),
        None,
        None,
        Mint(Cause.SCHEDULED),
    ),
    ("spec changed", view(generation=3), target(), None, None, Mint(Cause.SPEC_CHANGED)),
    # The reconciler hands over the held token only while the spec asks for that token:
    # then the change was to how it is written (template, type, key).
    (
        "template changed, token in hand",
        view(generation=3),
        target(),
        None,
        HELD,
        Rewrite(Cause.TEMPLATE_CHANGED),
    ),
    (
        "template changed, failing, token in hand",
        view(generation=3, ready="False"),
        target(),
        None,
        HELD,
        Rewrite(Cause.TEMPLATE_CHANGED),
    ),
    (
        # A template naming another credentials key changes the credentials' digest too:
        # one mint, not a rewrite now and a mint at the next look.
        "template changed with the credentials, token in hand",
        view(generation=3),
        target(digest="an-older-digest"),
        None,
        HELD,
        Mint(Cause.CREDENTIALS_CHANGED),
    ),
    (
        "template changed, held token about to expire",
        view(generation=3),
        target(),
        None,
        Token(value="v", expires_at=NOW + timedelta(seconds=1), minted_at=NOW),
        Mint(Cause.SPEC_CHANGED),
    ),
    (
        "renew requested",
        view(renew_annotation="a"),
        target(),
        None,
        None,
        Mint(Cause.RENEW_REQUESTED),
    ),
    (
        "renew request already honoured",
        view(renew_annotation="a", last_renew="a"),
        target(),
        None,
        None,
        Wait(NOW + timedelta(minutes=10)),
    ),
    (
        "credentials changed since the Secret was written",
        view(),
        target(digest="hmac-sha256:old"),
        None,
        None,
        Mint(Cause.CREDENTIALS_CHANGED),
    ),
    (
        "credentials unchanged since the last failed attempt: no hot loop",
        view(ready="False"),
        target(digest="hmac-sha256:old"),
        DIGEST,
        None,
        Wait(NOW + timedelta(minutes=10)),
    ),
    (
        "Secret deleted, valid token held: rewrite it",
        view(),
        None,
        None,
        HELD,
        Rewrite(Cause.SECRET_MISSING),
    ),
    ("Secret deleted, nothing held: mint", view(), None, None, None, Mint(Cause.SECRET_MISSING)),
    (
        "Secret edited: rewrite",
        view(),
        target(intact=False),
        None,
        HELD,
        Rewrite(Cause.SECRET_DRIFTED),
    ),
    (
        "Secret lost its labels: rewrite",
        view(),
        target(managed=False),
        None,
        HELD,
        Rewrite(Cause.SECRET_DRIFTED),
    ),
    (
        "held token about to expire is not written back",
        view(),
        None,
        None,
        Token(value="v", expires_at=NOW + timedelta(seconds=1), minted_at=NOW),
        Mint(Cause.SECRET_MISSING),
    ),
    (
        "failed, retry not yet due",
        view(ready="False"),
        target(),
        None,
        None,
        Wait(NOW + timedelta(minutes=10)),
    ),
    (
        "failed, retry due",
        view(ready="False", renewal=NOW),
        target(),
        None,
        None,
        Mint(Cause.RETRY),
    ),
    (
        "token in the Secret expired",
        view(),
        target(expires=NOW - timedelta(seconds=1)),
        None,
        None,
        Mint(Cause.EXPIRED),
    ),
    ("never expires", view(renewal=None), target(expires=None), None, None, Wait(None)),
]


@pytest.mark.parametrize(
    ("situation", "pt", "secret", "attempted", "held", "expected"),
    CASES,
    ids=[case[0] for case in CASES],
)
def test_decide(
    situation: str,
    pt: Any,
    secret: TargetState | None,
    attempted: str | None,
    held: Token | None,
    expected: object,
) -> None:
    assert decide(pt, secret, DIGEST, attempted, held, NOW) == expected


def test_a_token_whose_write_failed_is_written_again_not_minted_again() -> None:
    assert decide(view(observed=None), None, DIGEST, DIGEST, HELD, NOW, pending=True) == Rewrite(
        Cause.WRITE_RETRY
    )
    assert decide(view(), target(), DIGEST, DIGEST, HELD, NOW, pending=True) == Rewrite(
        Cause.WRITE_RETRY
    )
    expired = Token(value="v", expires_at=NOW, minted_at=NOW - timedelta(hours=1))
    assert decide(view(observed=None), None, DIGEST, DIGEST, expired, NOW, pending=True) == Mint(
        Cause.INITIAL
    )


@pytest.mark.parametrize("owner", ["someone-else", None])
def test_a_secret_owned_by_another_is_refused(owner: str | None) -> None:
    decision = decide(view(), target(owner=owner), DIGEST, None, HELD, NOW)
    assert isinstance(decision, Refuse)
    assert decision.error.reason == "TargetConflict"
    assert "out" in decision.error.message


@pytest.mark.parametrize("held", [HELD, None])
def test_a_target_of_another_type_is_refused_before_any_mint(held: Token | None) -> None:
    secret = TargetState(
        owner_uid=UID,
        managed=True,
        token_intact=True,
        credentials_digest=DIGEST,
        expires_at=NOW + timedelta(minutes=30),
        secret_type="kubernetes.io/basic-auth",
    )
    decision = decide(view(generation=3), secret, DIGEST, None, held, NOW)
    assert isinstance(decision, Refuse)
    assert decision.error.reason == "TargetTypeImmutable"
    assert "delete Secret" in decision.error.message


def test_token_repr_never_shows_the_value() -> None:
    token = Token(value="super-secret-value", expires_at=None, minted_at=NOW)
    assert "super-secret-value" not in repr(token)
    assert "super-secret-value" not in str(token)


def _spec_view(**changes: Any) -> Any:
    spec: dict[str, Any] = {
        "provider": {"oauth2": {"tokenUrl": "https://idp.example/token", "scope": "a"}},
        "credentialsRef": {"name": "creds"},
        "target": {"name": "out", "key": "token"},
    }
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = spec
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return parse_provider_token({"metadata": {"name": "pt", "uid": UID}, "spec": spec})


@pytest.mark.parametrize(
    "change",
    [
        {"target__key": "other"},
        {"target__type": "kubernetes.io/basic-auth"},
        {"target__template": {"data": {"password": "{{ token }}"}}},
        {"rollout": {"minInterval": "5m"}},
    ],
    ids=["key", "type", "template", "rollout"],
)
def test_how_the_token_is_written_is_not_a_question_for_the_provider(
    change: dict[str, Any],
) -> None:
    assert _spec_view(**change).mint_question == _spec_view().mint_question


@pytest.mark.parametrize(
    "change",
    [
        {"provider": {"oauth2": {"tokenUrl": "https://idp.example/token", "scope": "b"}}},
        {"credentialsRef": {"name": "other"}},
        {"target__name": "elsewhere"},
        {"refresh": {"renewBefore": "5m"}},
    ],
    ids=["provider", "credentials", "target-name", "refresh"],
)
def test_what_the_token_is_minted_for_is(change: dict[str, Any]) -> None:
    assert _spec_view(**change).mint_question != _spec_view().mint_question
