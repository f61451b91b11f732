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
# HMAC of the token itself: what a rotation changes (rollouts compare it), and what a
# restore of the same token keeps.
TOKEN_DIGEST_ANNOTATION = "tokensync.dev/token-digest"
# HMAC of everything written into the target Secret (its type and every rendered key):
# what drift detection compares.
DATA_DIGEST_ANNOTATION = "tokensync.dev/data-digest"
# The label and annotation keys spec.target.template put on the target Secret (JSON), so
# that a key dropped from the template is removed and nobody else's is.
TEMPLATED_KEYS_ANNOTATION = "tokensync.dev/templated-keys"

# Rollout on rotation (opt-in by the workload's owner, operator flag --rollouts).
# On a Deployment, StatefulSet or DaemonSet: the label (value "true") lets the operator
# select opted-in workloads server-side; the annotation of the same key names the target
# Secrets (comma-separated) whose rotation restarts it.
ROLLOUT_LABEL = "tokensync.dev/restart-on-rotation"
ROLLOUT_LABEL_VALUE = "true"
ROLLOUT_ANNOTATION = "tokensync.dev/restart-on-rotation"
# On the workload's pod template: set at each restart, as `kubectl rollout restart` sets
# kubectl.kubernetes.io/restartedAt; changing it is what rolls the pods.
RESTARTED_AT_ANNOTATION = "tokensync.dev/restartedAt"
# On the workload's own metadata (not the pod template): for each Secret, which token
# (a prefix of its token digest) the workload was last restarted for.
RESTARTED_FOR_ANNOTATION = "tokensync.dev/restarted-for"

# On a ProviderToken with spec.provider.oauth2.revokeOnDelete: held until its tokens are
# revoked at the provider (or that was given up on, 30 seconds after the deletion).
REVOKE_FINALIZER = "tokensync.dev/revoke-on-delete"

READY = "Ready"
