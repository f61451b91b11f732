"""The API's fixed names: group, kind, labels and annotations tokensync reads or writes."""

from __future__ import annotations

GROUP = "tokensync.dev"
VERSION = "v1alpha1"
PLURAL = "providertokens"
KIND = "ProviderToken"
API_VERSION = f"{GROUP}/{VERSION}"

# On every Secret the operator watches. The Secret watch selects on this key alone, so
# the operator never lists or watches Secrets it has no business with.
ROLE_LABEL = "tokensync.dev/role"
ROLE_TOKEN = "token"
ROLE_CREDENTIALS = "credentials"
ROLE_STATE = "state"
SECRET_WATCH_SELECTOR = ROLE_LABEL

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "tokensync"
OWNER_LABEL = "tokensync.dev/providertoken"

RENEW_ANNOTATION = "tokensync.dev/renew"
EXPIRES_ANNOTATION = "tokensync.dev/expires-at"
MINTED_ANNOTATION = "tokensync.dev/minted-at"
PROVIDER_ANNOTATION = "tokensync.dev/provider"
CREDENTIALS_DIGEST_ANNOTATION = "tokensync.dev/credentials-digest"
# On the state Secret: the provider block its refresh token was issued for.
SPEC_DIGEST_ANNOTATION = "tokensync.dev/provider-spec-digest"
TOKEN_DIGEST_ANNOTATION = "tokensync.dev/token-digest"

READY = "Ready"
