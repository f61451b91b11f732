"""What a mint needs besides the spec: the credentials Secret's keys, and the proofs the
operator obtains for it at each mint (a ServiceAccount token, a client certificate).

Every read here names what is missing and how to fix it, never a value: the reasons are
``Ready=False`` reasons a person acts on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import jwt
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from tokensync.client_certificates import ClientCertificate
from tokensync.decision import CredentialsNotFound, CredentialsUnreadable
from tokensync.endpoints import HttpClient
from tokensync.kube import ApiError
from tokensync.model import ProviderTokenView, decode_secret_data
from tokensync.providers.base import InvalidSpec, MintError, MintRequest, Proofs, Provider
from tokensync.secret_bodies import credentials

# TokenRequest's shortest life (the API server refuses less): the token is used once, at
# once, and never kept.
SERVICE_ACCOUNT_TOKEN_SECONDS = 600
SERVICE_ACCOUNT_GRANT = "deploy/service-account-tokens/role.yaml"
# The Kubernetes API's own audiences in every cluster; the operator adds its own token's.
KUBERNETES_AUDIENCES = frozenset(
    {
        "https://kubernetes.default.svc",
        "https://kubernetes.default.svc.cluster.local",
        "kubernetes.default.svc",
        "kubernetes",
    }
)


def token_audiences(authorization: str | None) -> frozenset[str]:
    """The audiences of the operator's own bearer token: those the API server accepts."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or token.count(".") != 2:
        return frozenset()
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return frozenset()
    audience = claims.get("aud")
    listed = [audience] if isinstance(audience, str) else audience
    if not isinstance(listed, list):
        return frozenset()
    return frozenset(a for a in listed if isinstance(a, str))


class CredentialsRefMissing(MintError):
    """The spec needs credentials keys but names no credentials Secret (a manifest the
    API server never checked, or a CRD older than the operator)."""

    reason = "CredentialsRefMissing"
    permanent = True


class ServiceAccountTokenNotPermitted(MintError):
    """The namespace's owner has not granted create on serviceaccounts/token for it."""

    reason = "ServiceAccountTokenNotPermitted"
    awaits_user = True


class ServiceAccountNotFound(MintError):
    reason = "ServiceAccountNotFound"
    awaits_user = True


class ServiceAccountTokenUnavailable(MintError):
    """The API server did not hand out a token (unreachable, failing): transient."""

    reason = "ServiceAccountTokenUnavailable"


class ClientCertificateNotFound(MintError):
    reason = "ClientCertificateNotFound"
    awaits_user = True


class InvalidClientCertificate(MintError):
    reason = "InvalidClientCertificate"
    awaits_user = True


class SecretReader(Protocol):
    async def read(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    async def label_credentials(self, secret: Mapping[str, Any]) -> Mapping[str, Any]: ...


class TokenRequester(Protocol):
    async def create_service_account_token(
        self, namespace: str, name: str, audience: str, seconds: int
    ) -> str: ...


@dataclass(frozen=True)
class Obtained:
    """The proofs of one mint; nothing here is ever stored or logged."""

    service_account_token: str | None = field(default=None, repr=False)
    client_certificate: ClientCertificate | None = field(default=None, repr=False)


class MintInputs:
    def __init__(
        self,
        secrets: SecretReader,
        tokens: TokenRequester,
        forbidden_audiences: frozenset[str] = KUBERNETES_AUDIENCES,
    ) -> None:
        self._secrets = secrets
        self._tokens = tokens
        # A token for the Kubernetes API itself is never requested: it would be a key to
        # the cluster, sent to an identity provider.
        self._forbidden_audiences = forbidden_audiences | KUBERNETES_AUDIENCES

    async def credentials(self, view: ProviderTokenView, provider: Provider) -> dict[str, str]:
        """The provider's keys, and those the template names (read the same way, and
        their digest counts alike: a changed username mints a new token)."""
        wanted = provider.required_credentials(view.provider_spec)
        if view.template is not None:
            wanted += tuple(k for k in view.template.credential_keys if k not in wanted)
        if not view.credentials_secret:
            if wanted:
                raise CredentialsRefMissing(
                    f"spec.credentialsRef is needed for the key(s) {', '.join(wanted)}"
                )
            return {}
        secret = await self._read(view.namespace, view.credentials_secret, "credentials")
        if secret is None:
            raise CredentialsNotFound(
                f"credentials Secret {view.credentials_secret} not found in namespace "
                f"{view.namespace}"
            )
        secret = await self._secrets.label_credentials(secret)
        return credentials(secret, wanted)

    async def proofs(self, view: ProviderTokenView, needs: Proofs, now: datetime) -> Obtained:
        """Obtained afresh at every mint: a rotated certificate or a revoked grant is
        seen at the next one."""
        token = certificate = None
        if needs.service_account is not None:
            token = await self._service_account_token(
                view.namespace, needs.service_account.name, needs.service_account.audience
            )
        if needs.tls_secret is not None:
            certificate = await self._client_certificate(view.namespace, needs.tls_secret, now)
        return Obtained(token, certificate)

    async def request(
        self,
        view: ProviderTokenView,
        provider: Provider,
        creds: Mapping[str, str],
        http: HttpClient,
        now: datetime,
        state: Mapping[str, str] | None = None,
    ) -> MintRequest:
        """What a provider is given for one call (a mint, a revocation): its own keys of
        the credentials, and the proofs obtained for this call only."""
        needed = provider.required_credentials(view.provider_spec)
        obtained = await self.proofs(view, provider.proofs(view.provider_spec), now)
        return MintRequest(
            spec=view.provider_spec,
            credentials={key: creds[key] for key in needed if key in creds},
            http=http,
            now=now,
            fallback_lifetime=view.fallback_lifetime,
            state=state or {},
            service_account_token=obtained.service_account_token,
            client_certificate=obtained.client_certificate,
        )

    async def _read(self, namespace: str, name: str, what: str) -> Mapping[str, Any] | None:
        try:
            return await self._secrets.read(namespace, name)
        except ApiError as error:
            answer = "did not answer" if error.status == 0 else f"answered {error.status}"
            raise CredentialsUnreadable(
                f"{what} Secret {name} could not be read: the API server {answer}"
            ) from None

    async def _service_account_token(self, namespace: str, name: str, audience: str) -> str:
        if not name or not audience:
            raise InvalidSpec("spec.provider.oauth2.serviceAccountRef needs name and audience")
        if audience in self._forbidden_audiences:
            raise InvalidSpec(
                f"serviceAccountRef.audience {audience} is an audience of the Kubernetes API "
                "itself: a token for it is never requested"
            )
        try:
            return await self._tokens.create_service_account_token(
                namespace, name, audience, SERVICE_ACCOUNT_TOKEN_SECONDS
            )
        except ApiError as error:
            if error.status == 403:
                raise ServiceAccountTokenNotPermitted(
                    f"the operator may not create tokens for ServiceAccount {name}: the owner "
                    f"of namespace {namespace} grants create on serviceaccounts/token with "
                    f"resourceNames [{name}] ({SERVICE_ACCOUNT_GRANT})"
                ) from None
            if error.status == 404:
                raise ServiceAccountNotFound(
                    f"ServiceAccount {name} not found in namespace {namespace}"
                ) from None
            answer = "did not answer" if error.status == 0 else f"answered {error.status}"
            raise ServiceAccountTokenUnavailable(
                f"no token for ServiceAccount {name}: the API server {answer}"
            ) from None

    async def _client_certificate(
        self, namespace: str, name: str, now: datetime
    ) -> ClientCertificate:
        if not name:
            # An empty name would read every Secret of the namespace (a list URL).
            raise InvalidSpec("spec.provider.oauth2.tlsSecretRef needs a name")
        secret = await self._read(namespace, name, "client certificate")
        if secret is None:
            raise ClientCertificateNotFound(
                f"client certificate Secret {name} not found in namespace {namespace}"
            )
        data = decode_secret_data(secret)
        pem, key = data.get("tls.crt", ""), data.get("tls.key", "")
        if not pem or not key:
            raise InvalidClientCertificate(
                f"Secret {name} lacks tls.crt or tls.key (a kubernetes.io/tls Secret has both)"
            )
        _check(name, pem, key, now)
        return ClientCertificate(certificate=pem, private_key=key)


def _check(name: str, pem: str, key: str, now: datetime) -> None:
    """Refuse here, with a reason, what the TLS handshake would refuse without one."""
    try:
        leaf = x509.load_pem_x509_certificates(pem.encode())[0]
        private = load_pem_private_key(key.encode(), password=None)
    except (ValueError, TypeError, IndexError, UnsupportedAlgorithm):
        raise InvalidClientCertificate(
            f"Secret {name}: tls.crt or tls.key is not PEM (an unencrypted key)"
        ) from None
    as_der = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if leaf.public_key().public_bytes(*as_der) != private.public_key().public_bytes(*as_der):
        raise InvalidClientCertificate(f"Secret {name}: tls.key is not the key of tls.crt")
    if leaf.not_valid_before_utc > now:
        raise InvalidClientCertificate(
            f"Secret {name}: the client certificate is valid only from "
            f"{leaf.not_valid_before_utc.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        )
    if leaf.not_valid_after_utc <= now:
        raise InvalidClientCertificate(
            f"Secret {name}: the client certificate expired at "
            f"{leaf.not_valid_after_utc.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        )
