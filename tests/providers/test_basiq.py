"""Basiq at the HTTP level: the key as issued, the version header, scopes, list errors."""

from __future__ import annotations

from collections.abc import Iterator

import jwt
import pytest

from fakes.basiq import FakeBasiq
from providers.conftest import HttpFactory, mint_request
from tokensync.providers import base
from tokensync.providers.basiq import OFFICIAL_TOKEN_URL
from tokensync.providers.registry import PROVIDERS

BASIQ = PROVIDERS.get("basiq")


@pytest.fixture
def basiq() -> Iterator[FakeBasiq]:
    with FakeBasiq() as server:
        yield server


def test_official_endpoint() -> None:
    assert OFFICIAL_TOKEN_URL == "https://au-api.basiq.io/token"


async def test_server_access_on_the_wire(basiq: FakeBasiq, http_for: HttpFactory) -> None:
    key = basiq.add_key("partner")
    token = await BASIQ.mint(
        mint_request(http_for(basiq.host), {"tokenUrl": basiq.token_url}, {"apiKey": key})
    )
    wire = basiq.requests[-1]
    assert (wire.method, wire.path) == ("POST", "/token")
    assert wire.headers["authorization"] == f"Basic {key}"  # as issued, not encoded again
    assert wire.headers["basiq-version"] == "3.0"
    assert wire.content_type == "application/x-www-form-urlencoded"
    assert wire.form == {"scope": "SERVER_ACCESS"}
    assert jwt.decode(token.value, options={"verify_signature": False})["scope"] == "SERVER_ACCESS"


async def test_client_access_is_bound_to_a_user(basiq: FakeBasiq, http_for: HttpFactory) -> None:
    key = basiq.add_key("partner")
    spec = {
        "tokenUrl": basiq.token_url,
        "scope": "CLIENT_ACCESS",
        "userId": "user-42",
        "version": "2.1",
    }
    await BASIQ.mint(mint_request(http_for(basiq.host), spec, {"apiKey": key}))
    wire = basiq.requests[-1]
    assert wire.form == {"scope": "CLIENT_ACCESS", "userId": "user-42"}
    assert wire.headers["basiq-version"] == "2.1"


async def test_documented_errors_map_to_reasons(basiq: FakeBasiq, http_for: HttpFactory) -> None:
    http = http_for(basiq.host)
    spec = {"tokenUrl": basiq.token_url}
    good = basiq.add_key("partner")

    async def reason_for(key: str) -> base.MintError:
        with pytest.raises(base.MintError) as failure:
            await BASIQ.mint(mint_request(http, spec, {"apiKey": key}))
        return failure.value

    wrong = await reason_for("d3Jvbmc6a2V5")
    assert (wrong.reason, wrong.permanent) == ("InvalidCredentials", True)
    assert "check your API key" in wrong.message and "d3Jvbmc6a2V5" not in wrong.message

    basiq.disabled.add(good)
    disabled = await reason_for(good)
    assert (disabled.reason, disabled.permanent) == ("AccountDisabled", True)
    basiq.disabled.clear()

    basiq.outage(
        60,
        status=403,
        body={
            "type": "list",
            "data": [
                {
                    "type": "error",
                    "code": "forbidden-access",
                    "title": "Too many requests",
                    "detail": "Too many /token calls from this address",
                }
            ],
        },
    )
    throttled = await reason_for(good)
    assert (throttled.reason, throttled.permanent) == ("RateLimited", False)
    basiq.outage_until = 0

    basiq.rate_limit = (0, 300.0)
    limited = await reason_for(good)
    assert (limited.reason, limited.permanent) == ("RateLimited", False)

    basiq.rate_limit = None
    basiq.outage(60, status=500, body={"type": "list", "data": []})
    down = await reason_for(good)
    assert (down.reason, down.permanent) == ("ProviderUnavailable", False)


async def test_missing_version_header_is_an_invalid_request(
    basiq: FakeBasiq, http_for: HttpFactory
) -> None:
    key = basiq.add_key("partner")
    answer = await http_for(basiq.host).request(
        "POST",
        basiq.token_url,
        official=False,
        headers={"Authorization": f"Basic {key}"},
        data={"scope": "SERVER_ACCESS"},
    )
    assert answer.status == 400
    from datetime import UTC, datetime

    from tokensync.providers.basiq import classify

    assert classify(answer, datetime.now(UTC), [key]).reason == "InvalidRequest"


@pytest.mark.parametrize("key", ["kéy-ünicode", "key\nInjected: header", "\U000cbdaf\x07"])
async def test_a_key_http_cannot_carry_is_refused_unsent(
    basiq: FakeBasiq, http_for: HttpFactory, key: str
) -> None:
    """Found by the generated ProviderTokens: such a key once crashed the reconcile."""
    with pytest.raises(base.InvalidCredentials, match="cannot be sent") as failure:
        await BASIQ.mint(
            mint_request(http_for(basiq.host), {"tokenUrl": basiq.token_url}, {"apiKey": key})
        )
    assert key.strip() not in failure.value.message
    assert basiq.requests == []
