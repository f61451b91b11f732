"""Any standard OAuth2 / OpenID Connect token endpoint: the one provider big enough to be
a package (its spec block, its client authentications, the provider)."""

from tokensync.providers.oauth2.client_auth import basic_auth, client_assertion
from tokensync.providers.oauth2.provider import REVOCABLE_ACCESS_TOKEN, OAuth2
from tokensync.providers.oauth2.spec import (
    ACCESS_TOKEN_TYPE,
    JWT_BEARER_ASSERTION,
    JWT_TOKEN_TYPE,
    SPEC,
    TOKEN_EXCHANGE,
    asks_for_openid,
)

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "JWT_BEARER_ASSERTION",
    "JWT_TOKEN_TYPE",
    "REVOCABLE_ACCESS_TOKEN",
    "SPEC",
    "TOKEN_EXCHANGE",
    "OAuth2",
    "asks_for_openid",
    "basic_auth",
    "client_assertion",
]
