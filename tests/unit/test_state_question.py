"""Saved provider state is used only for the question that produced it (issue 14, item 1)."""

from __future__ import annotations

from typing import Any

import pytest

from tokensync.digest import DigestKey
from tokensync.model import ProviderTokenView, parse_provider_token
from tokensync.secret_bodies import provider_state, state_question, state_secret

KEY = DigestKey(b"k" * 32)
UID = "uid-1"
CREDS_A = KEY.of_mapping({"username": "a@devices", "password": "pw-a"})
CREDS_B = KEY.of_mapping({"username": "b@devices", "password": "pw-b"})
BIOTZ = {"tokenUrl": "https://auth.example/realms/r/protocol/openid-connect/token"}
SAVED = {"refresh_token": "rt-of-a", "refresh_expires_at": "2026-11-23T12:00:00+00:00"}


def view(provider: dict[str, Any] | None = None, uid: str = UID) -> ProviderTokenView:
    return parse_provider_token(
        {
            "metadata": {"namespace": "ns", "name": "pt", "uid": uid, "generation": 1},
            "spec": {
                "provider": provider or {"biotz": BIOTZ},
                "credentialsRef": {"name": "creds"},
                "target": {"name": "out"},
            },
        }
    )


def saved_for(provider: dict[str, Any] | None = None, creds: str = CREDS_A) -> dict[str, Any]:
    """The state Secret as the operator wrote it for that question (data base64, as served)."""
    owner = view(provider)
    return state_secret(owner, state_question(owner, creds, KEY), SAVED)


@pytest.mark.parametrize(
    ("case", "secret", "now_provider", "now_creds", "values", "stale"),
    [
        ("same question", saved_for(), None, CREDS_A, SAVED, False),
        ("credentials changed", saved_for(), None, CREDS_B, {}, True),
        (
            "tokenUrl changed",
            saved_for(),
            {"biotz": {"tokenUrl": "https://other.example/token"}},
            CREDS_A,
            {},
            True,
        ),
        (
            "clientId changed",
            saved_for(),
            {"biotz": {**BIOTZ, "clientId": "c2"}},
            CREDS_A,
            {},
            True,
        ),
        (
            "tokenField changed",
            saved_for(),
            {"biotz": {**BIOTZ, "tokenField": "access_token"}},
            CREDS_A,
            {},
            True,
        ),
        ("another provider", saved_for(), {"oauth2": BIOTZ}, CREDS_A, {}, True),
        ("no Secret", None, None, CREDS_A, {}, False),
        (
            "written before states had a question",
            {**saved_for(), "metadata": {**saved_for()["metadata"], "annotations": {}}},
            None,
            CREDS_A,
            {},
            True,
        ),
        (
            "another owner's Secret",
            saved_for() | {"metadata": {**saved_for()["metadata"], "ownerReferences": []}},
            None,
            CREDS_A,
            {},
            False,
        ),
        ("emptied for another question", {**saved_for(), "data": {}}, None, CREDS_B, {}, False),
    ],
)
def test_saved_state_answers_one_question(
    case: str,
    secret: dict[str, Any] | None,
    now_provider: dict[str, Any] | None,
    now_creds: str,
    values: dict[str, str],
    stale: bool,
) -> None:
    now = view(now_provider)
    saved = provider_state(secret, now, state_question(now, now_creds, KEY))
    assert dict(saved.values) == values, case
    assert saved.stale is stale, case


def test_the_state_secret_says_what_it_belongs_to_in_digests_only() -> None:
    secret = saved_for()
    annotations = secret["metadata"]["annotations"]
    assert annotations["tokensync.dev/provider"] == "biotz"
    assert annotations["tokensync.dev/credentials-digest"] == CREDS_A
    assert annotations["tokensync.dev/provider-spec-digest"].startswith("hmac-sha256:")
    text = repr(annotations)
    assert "auth.example" not in text and "pw-a" not in text and "rt-of-a" not in text


def test_equal_specs_give_equal_questions_whatever_the_key_order() -> None:
    one = view({"biotz": {"clientId": "c", **BIOTZ}})
    two = view({"biotz": {**BIOTZ, "clientId": "c"}})
    assert state_question(one, CREDS_A, KEY) == state_question(two, CREDS_A, KEY)
