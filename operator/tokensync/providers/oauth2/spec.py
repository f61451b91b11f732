"""The oauth2 block of spec.provider: its fields, credentials keys and rules, declared once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokensync.providers.base import Proofs, ServiceAccountRef
from tokensync.providers.spec import Credential, Field, Rule, SpecBlock, endpoint_url

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# The client authentications that read a credentials Secret; the other two need none.
SECRET_AUTH = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
SERVICE_ACCOUNT = "service_account"
TLS_CLIENT_AUTH = "tls_client_auth"

# The API server's twin of asks_for_openid.
_ID_TOKEN_NEEDS_OPENID = (
    "!has(self.tokenField) || self.tokenField != 'id_token' || (has(self.scope) && "
    "self.scope != '' ? self.scope : (has(self.extraParams) && 'scope' in self.extraParams ? "
    r"self.extraParams['scope'] : '')).matches('(^|\\s)openid(\\s|$)')"
)
_FROM_SERVICE_ACCOUNT = (
    "has(self.subjectTokenSource) && self.subjectTokenSource == 'serviceAccount'"
)
_REVOKES = "has(self.revokeOnDelete) && self.revokeOnDelete"

# New fields carry no default in the CRD: the API server would write it into every stored
# block, and a block's text is what a token is minted for (a new mint at upgrade).
SPEC = SpecBlock(
    "Any standard OAuth2/OIDC token endpoint.",
    fields=(
        endpoint_url("tokenUrl", "The token endpoint."),
        endpoint_url(
            "issuerUrl",
            "The OpenID Connect issuer, whose discovery document "
            "(/.well-known/openid-configuration) names the token endpoint.",
            hosts="the hosts of both",
        ),
        Field(
            "grantType",
            enum=("client_credentials", "password", "token_exchange"),
            default="client_credentials",
        ),
        Field(
            "clientAuth",
            enum=(*SECRET_AUTH, SERVICE_ACCOUNT, TLS_CLIENT_AUTH),
            default="client_secret_basic",
        ),
        Field(
            "clientId",
            description="client_id sent with clientAuth service_account (when set) and "
            "tls_client_auth (required); the other modes read clientId from the credentials "
            "Secret",
            min_length=1,
            max_length=256,
        ),
        Field(
            "serviceAccountRef",
            kind="object",
            description="A ServiceAccount of this namespace: the operator requests a token "
            "for it (TokenRequest, 10 minutes, never stored) at each mint, as the client "
            "assertion (clientAuth service_account) or the subject token (subjectTokenSource "
            "serviceAccount). Its namespace's owner grants create on serviceaccounts/token "
            "for it: deploy/service-account-tokens/role.yaml",
            properties=(
                Field("name", min_length=1, max_length=253),
                Field(
                    "audience",
                    description="The token's audience, as the identity provider expects it",
                    min_length=1,
                    max_length=1024,
                ),
            ),
            required=("name", "audience"),
        ),
        Field(
            "tlsSecretRef",
            kind="object",
            description="A kubernetes.io/tls Secret of this namespace: its certificate is "
            "presented to the token endpoint (clientAuth tls_client_auth, RFC 8705); read at "
            "each mint",
            properties=(Field("name", min_length=1, max_length=253),),
            required=("name",),
        ),
        Field("scope", max_length=1024),
        Field("audience", max_length=1024),
        Field("extraParams", kind="string-map", max_properties=32, max_length=1024),
        Field("tokenField", enum=("access_token", "id_token"), default="access_token"),
        Field(
            "subjectTokenType",
            description="RFC 8693 subject_token_type (token_exchange); with subjectTokenSource "
            f"serviceAccount the default is {JWT_TOKEN_TYPE}",
            default=ACCESS_TOKEN_TYPE,
            default_in_crd=False,  # it would land in every stored block, and in its digest
            max_length=256,
        ),
        Field(
            "subjectTokenSource",
            description="Where the RFC 8693 subject token comes from: the credentials Secret's "
            "subjectToken, or a token of serviceAccountRef",
            enum=("credentials", "serviceAccount"),
            default="credentials",
            default_in_crd=False,
        ),
        Field("resource", description="RFC 8693 resource (token_exchange)", max_length=2048),
        Field(
            "keyId",
            description="kid header of the private_key_jwt client assertion",
            max_length=256,
        ),
        Field(
            "revokeOnDelete",
            kind="boolean",
            description="When the ProviderToken is deleted, revoke its refresh and access "
            "tokens (RFC 7009) first, for at most 30 seconds; default false",
        ),
        endpoint_url(
            "revocationUrl",
            "The RFC 7009 revocation endpoint for revokeOnDelete; without it, the one the "
            "issuer's discovery names.",
        ),
    ),
    credentials=(
        Credential("clientId", when=("clientAuth", SECRET_AUTH)),
        Credential(
            "clientSecret", when=("clientAuth", ("client_secret_basic", "client_secret_post"))
        ),
        Credential("privateKey", when=("clientAuth", ("private_key_jwt",))),
        Credential("username", when=("grantType", ("password",))),
        Credential("password", when=("grantType", ("password",))),
        Credential(
            "subjectToken",
            note="unless subjectTokenSource serviceAccount",
            when=("grantType", ("token_exchange",)),
            unless=("subjectTokenSource", ("serviceAccount",)),
        ),
    ),
    rules=(
        Rule(
            "has(self.tokenUrl) != has(self.issuerUrl)",
            "oauth2 needs exactly one of tokenUrl or issuerUrl",
        ),
        Rule(
            _ID_TOKEN_NEEDS_OPENID,
            "tokenField id_token needs openid in scope (an OpenID provider issues an id_token "
            "only for the openid scope)",
        ),
        Rule(
            f"has(self.serviceAccountRef) == (self.clientAuth == '{SERVICE_ACCOUNT}' || "
            f"({_FROM_SERVICE_ACCOUNT}))",
            "serviceAccountRef goes with clientAuth service_account or subjectTokenSource "
            "serviceAccount, and each of them needs it",
        ),
        Rule(
            f"!({_FROM_SERVICE_ACCOUNT}) || self.grantType == 'token_exchange'",
            "subjectTokenSource serviceAccount needs grantType token_exchange",
        ),
        Rule(
            f"has(self.tlsSecretRef) == (self.clientAuth == '{TLS_CLIENT_AUTH}')",
            "tlsSecretRef goes with clientAuth tls_client_auth, which needs it",
        ),
        Rule(
            f"has(self.clientId) ? self.clientAuth in ['{SERVICE_ACCOUNT}', '{TLS_CLIENT_AUTH}'] "
            f": self.clientAuth != '{TLS_CLIENT_AUTH}'",
            "clientId in the spec is for clientAuth service_account or tls_client_auth (which "
            "needs it); the other modes read it from the credentials Secret",
        ),
        Rule(
            f"!({_REVOKES}) || has(self.revocationUrl) || has(self.issuerUrl)",
            "revokeOnDelete needs revocationUrl, or issuerUrl whose discovery names the "
            "revocation endpoint",
        ),
    ),
)


def asks_for_openid(spec: Mapping[str, Any]) -> bool:
    # scope wins over extraParams.scope (extraParams never override a named field).
    scope = SPEC.value(spec, "scope") or (SPEC.value(spec, "extraParams") or {}).get("scope")
    return "openid" in str(scope or "").split()


def service_account_source(spec: Mapping[str, Any]) -> bool:
    return bool(SPEC.value(spec, "subjectTokenSource") == "serviceAccount")


def revokes_on_delete(spec: Mapping[str, Any]) -> bool:
    return SPEC.value(spec, "revokeOnDelete") is True


def proofs(spec: Mapping[str, Any]) -> Proofs:
    """What the operator obtains at each mint for this spec, besides the credentials."""
    method = SPEC.value(spec, "clientAuth")
    account = None
    if method == SERVICE_ACCOUNT or service_account_source(spec):
        ref = SPEC.value(spec, "serviceAccountRef") or {}
        account = ServiceAccountRef(str(ref.get("name") or ""), str(ref.get("audience") or ""))
    tls = None
    if method == TLS_CLIENT_AUTH:
        tls = str((SPEC.value(spec, "tlsSecretRef") or {}).get("name") or "")
    return Proofs(service_account=account, tls_secret=tls)
