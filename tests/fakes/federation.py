"""A Kubernetes cluster as an identity provider sees it: ServiceAccount tokens verified
against the JWKS its issuer's discovery document names, as Keycloak and Entra ID do."""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass
from typing import Any

import httpx
import jwt


@dataclass(frozen=True)
class FederatedIdentity:
    """A workload identity the fake trusts: tokens ``issuer`` signed for ``subject``.

    ``issuer`` is the cluster's service-account issuer; its discovery document and JWKS
    are fetched over TLS verified with ``ca_file``. A token must carry ``audience`` in its
    ``aud`` and ``subject`` (``system:serviceaccount:NS:NAME``) as its ``sub``.
    """

    issuer: str
    ca_file: str
    subject: str
    audience: str


class FederationRefused(Exception):
    """Why a ServiceAccount token was not accepted; never quotes the token."""


class IssuerKeys:
    """The issuers' JWKS, cached per issuer (fetched again once for an unknown key id),
    and how often they were fetched (discovery document and JWKS each time)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jwks: dict[str, jwt.PyJWKSet] = {}
        self.fetches = 0

    def verify(self, token: str, identity: FederatedIdentity, *, now: float) -> dict[str, Any]:
        """The claims of ``token`` if ``identity``'s issuer signed it for ``identity``.

        Verified as an identity provider does: the signing key from the JWKS the issuer's
        discovery document names (cached; fetched again once for an unknown key id), then
        iss, aud, sub and exp.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise FederationRefused("not a JWT") from None
        if header.get("alg") != "RS256":
            raise FederationRefused(f"algorithm {header.get('alg')!r} is not RS256")
        key = self._signing_key(identity, header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=identity.audience,
                issuer=identity.issuer,
                # exp is checked below, by the fake's own (offsettable) clock.
                options={"require": ["exp", "iss", "aud", "sub"], "verify_exp": False},
            )
        except jwt.InvalidSignatureError:
            raise FederationRefused("bad signature") from None
        except jwt.InvalidAudienceError:
            raise FederationRefused(f"aud does not name {identity.audience}") from None
        except jwt.InvalidIssuerError:
            raise FederationRefused(f"iss is not {identity.issuer}") from None
        except jwt.PyJWTError as error:
            raise FederationRefused(type(error).__name__) from None
        if claims["sub"] != identity.subject:
            raise FederationRefused(f"sub is not {identity.subject}")
        if float(claims["exp"]) <= now:
            raise FederationRefused("expired")
        return claims

    def _signing_key(self, identity: FederatedIdentity, kid: Any) -> jwt.PyJWK:
        with self._lock:
            cached = self._jwks.get(identity.issuer)
        key = _find_key(cached, kid)
        if key is None:
            # A key the cache does not know: the issuer may have rotated. Once per request.
            key = _find_key(self._fetch_jwks(identity), kid)
        if key is None:
            raise FederationRefused("signed with a key the issuer does not publish")
        return key

    def _fetch_jwks(self, identity: FederatedIdentity) -> jwt.PyJWKSet:
        context = ssl.create_default_context(cafile=identity.ca_file)
        try:
            with httpx.Client(verify=context, timeout=5.0, trust_env=False) as http:
                answer = http.get(identity.issuer.rstrip("/") + "/.well-known/openid-configuration")
                answer.raise_for_status()
                document = answer.json()
                if document.get("issuer") != identity.issuer:
                    raise FederationRefused("the discovery document names another issuer")
                keys = http.get(str(document["jwks_uri"]))
                keys.raise_for_status()
                keyset = jwt.PyJWKSet.from_dict(keys.json())
        except (httpx.HTTPError, ValueError, KeyError, jwt.PyJWTError) as error:
            raise FederationRefused(f"the issuer's JWKS: {type(error).__name__}") from None
        with self._lock:
            self.fetches += 1
            self._jwks[identity.issuer] = keyset
        return keyset


def _find_key(keyset: jwt.PyJWKSet | None, kid: Any) -> jwt.PyJWK | None:
    if keyset is None:
        return None
    return next((key for key in keyset.keys if key.key_id == kid), None)
