"""What every provider shares: the Token, the Provider protocol, the errors.

A provider turns (its spec block, the credentials) into a Token through one HTTP call
(or two, with discovery). It never touches Kubernetes. Errors carry a ``reason`` for the
``Ready`` condition, whether they are permanent, and a message that never contains a
credential or token value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol, runtime_checkable

from tokensync.client_certificates import ClientCertificate
from tokensync.endpoints import HttpClient
from tokensync.providers.spec import SpecBlock


@dataclass(frozen=True)
class Token:
    """A minted token. ``repr`` hides the value so it cannot slip into a log line.

    ``state`` is what the provider wants back at the next mint (a refresh token and its
    expiry): the operator keeps it in a Secret of its own, never in the target Secret.
    ``None`` means the provider keeps no state.

    ``token_type``, ``scope`` and ``others`` (the answer's other tokens, e.g. the
    access_token beside a Biotz id_token; never a refresh token) are what a
    spec.target.template may use besides the value.
    """

    value: str = field(repr=False)
    expires_at: datetime | None
    minted_at: datetime
    state: Mapping[str, str] | None = field(default=None, repr=False)
    token_type: str | None = None
    scope: str | None = None
    others: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"Token(expires_at={self.expires_at!r}, minted_at={self.minted_at!r})"


@dataclass(frozen=True)
class ServiceAccountRef:
    """A ServiceAccount of the ProviderToken's namespace whose token is the client's proof."""

    name: str
    audience: str


@dataclass(frozen=True)
class Proofs:
    """What a spec needs besides the credentials Secret, obtained by the operator at each
    mint (never stored): a ServiceAccount token, a client certificate."""

    service_account: ServiceAccountRef | None = None
    tls_secret: str | None = None


@dataclass(frozen=True)
class MintRequest:
    """Everything a provider may use for one mint."""

    spec: Mapping[str, Any]
    credentials: Mapping[str, str] = field(repr=False)
    http: HttpClient
    now: datetime
    fallback_lifetime: timedelta | None = None
    state: Mapping[str, str] = field(default_factory=dict, repr=False)
    # What ``Provider.proofs`` asked for: a TokenRequest token (RFC 7523 client assertion
    # or RFC 8693 subject token), a certificate for the TLS connection (RFC 8705).
    service_account_token: str | None = field(default=None, repr=False)
    client_certificate: ClientCertificate | None = field(default=None, repr=False)

    def secrets(self) -> list[str]:
        """Every value this request may send, for redaction from what comes back."""
        values = [*self.credentials.values(), *self.state.values()]
        if self.service_account_token:
            values.append(self.service_account_token)
        return values


class Provider(Protocol):
    """One module per provider implements this; ``registry.PROVIDERS`` lists them.

    A provider subclasses it for ``required_credentials``, derived from its ``spec``.
    """

    name: ClassVar[str]
    spec: ClassVar[SpecBlock]  # its block of spec.provider, declared once

    def required_credentials(self, spec: Mapping[str, Any]) -> tuple[str, ...]:
        """Keys the credentials Secret must hold for this spec."""
        return self.spec.required_credentials(spec)

    def shareable(self, spec: Mapping[str, Any]) -> bool:
        """Whether ProviderTokens with equal spec and credentials may share one token.

        True where the provider asks clients to reuse tokens and the token carries no
        per-holder state (no refresh token).
        """
        ...

    def proofs(self, spec: Mapping[str, Any]) -> Proofs:
        """What the operator must obtain for a mint besides the credentials Secret."""
        return Proofs()

    async def mint(self, request: MintRequest) -> Token: ...


@runtime_checkable
class Revocable(Protocol):
    """A provider that can revoke what it minted (RFC 7009), for spec revokeOnDelete."""

    def revokes_on_delete(self, spec: Mapping[str, Any]) -> bool: ...

    async def revoke(
        self, request: MintRequest, tokens: Mapping[str, str]
    ) -> tuple[str, tuple[str, ...]]:
        """Revoke the tokens of a saved provider state; returns the endpoint and the kinds
        revoked (refresh_token, access_token). Raises MintError."""
        ...


class MintError(Exception):
    """A mint failed. ``message`` is safe to show: no secret is ever put into it."""

    reason: ClassVar[str] = "MintFailed"
    permanent: ClassVar[bool] = False
    # Transient, but only a person ends it (a Secret to create): never asked again every
    # few seconds, even once the token is gone (``timing.retry_delay``).
    awaits_user: ClassVar[bool] = False

    def __init__(self, message: str, *, retry_after: timedelta | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class InvalidCredentials(MintError):
    reason = "InvalidCredentials"
    permanent = True


class UnauthorizedClient(MintError):
    reason = "UnauthorizedClient"
    permanent = True


class InvalidScope(MintError):
    reason = "InvalidScope"
    permanent = True


class UnsupportedGrantType(MintError):
    reason = "UnsupportedGrantType"
    permanent = True


class InvalidRequest(MintError):
    reason = "InvalidRequest"
    permanent = True


class InvalidSpec(MintError):
    """The spec asks for something that cannot work; no request is sent for it."""

    reason = "InvalidSpec"
    permanent = True


class EndpointNotAllowed(MintError):
    """The endpoint's host or scheme is not permitted by the operator's configuration."""

    reason = "EndpointNotAllowed"
    permanent = True


class CredentialsIncomplete(MintError):
    reason = "CredentialsIncomplete"
    permanent = True


class ExpiryUnknown(MintError):
    reason = "ExpiryUnknown"
    permanent = True


class ProviderUnavailable(MintError):
    reason = "ProviderUnavailable"


class RateLimited(MintError):
    reason = "RateLimited"


class InvalidResponse(MintError):
    """The provider answered 2xx with something that is not a usable token."""

    reason = "InvalidResponse"


class TokenExpired(MintError):
    """The provider handed out a token that is already expired (or nearly so)."""

    reason = "TokenExpired"
