"""How an oauth2 client proves who it is to the token and revocation endpoints.

RFC 6749 2.3.1 (a secret: Basic or in the form), RFC 7523 (a signed JWT: our own key with
private_key_jwt, or a Kubernetes ServiceAccount token with service_account), RFC 8705
(tls_client_auth: the certificate on the connection) and none (a public client).
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import quote_plus

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tokensync.providers.base import CredentialsIncomplete, InvalidSpec, MintRequest
from tokensync.providers.oauth2.spec import (
    JWT_BEARER_ASSERTION,
    SERVICE_ACCOUNT,
    SPEC,
    TLS_CLIENT_AUTH,
)

_ASSERTION_LIFETIME_S = 60


def basic_auth(client_id: str, client_secret: str) -> str:
    """RFC 6749 2.3.1: both parts form-urlencoded before the Basic encoding."""
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def client_assertion(
    private_key_pem: str, client_id: str, audience: str, key_id: str | None, now: datetime
) -> str:
    """RFC 7523 client authentication: a short-lived JWS, fresh ``jti`` every time."""
    try:
        key = load_pem_private_key(private_key_pem.encode(), password=None)
    except (ValueError, TypeError):
        raise CredentialsIncomplete("privateKey is not an unencrypted PEM private key") from None
    if isinstance(key, rsa.RSAPrivateKey):
        algorithm = "RS256"
    elif isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        algorithm = "ES256"
    else:
        raise CredentialsIncomplete("privateKey must be an RSA or a P-256 EC key")
    issued_at = int(now.timestamp())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": issued_at,
        "exp": issued_at + _ASSERTION_LIFETIME_S,
        "jti": str(uuid.uuid4()),
    }
    headers = {"kid": key_id} if key_id else None
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def authenticate(
    request: MintRequest, endpoint: str, form: dict[str, str], headers: dict[str, str]
) -> dict[str, Any]:
    """Fill the form and headers for the spec's clientAuth; returns what the connection
    itself must carry (the client certificate of tls_client_auth)."""
    spec, credentials = request.spec, request.credentials
    method = SPEC.value(spec, "clientAuth")
    if method == SERVICE_ACCOUNT:
        if not request.service_account_token:
            raise CredentialsIncomplete("clientAuth service_account needs a ServiceAccount token")
        if SPEC.value(spec, "clientId"):
            form["client_id"] = str(SPEC.value(spec, "clientId"))
        form["client_assertion_type"] = JWT_BEARER_ASSERTION
        form["client_assertion"] = request.service_account_token
        return {}
    if method == TLS_CLIENT_AUTH:
        if request.client_certificate is None:
            raise CredentialsIncomplete("clientAuth tls_client_auth needs a client certificate")
        if not SPEC.value(spec, "clientId"):
            raise InvalidSpec("clientAuth tls_client_auth needs spec.provider.oauth2.clientId")
        form["client_id"] = str(SPEC.value(spec, "clientId"))
        return {"client_certificate": request.client_certificate}
    client_id = credentials["clientId"]
    if method == "client_secret_basic":
        headers["Authorization"] = basic_auth(client_id, credentials["clientSecret"])
    elif method == "client_secret_post":
        form["client_id"] = client_id
        form["client_secret"] = credentials["clientSecret"]
    elif method == "private_key_jwt":
        form["client_id"] = client_id
        form["client_assertion_type"] = JWT_BEARER_ASSERTION
        form["client_assertion"] = client_assertion(
            credentials["privateKey"],
            client_id,
            endpoint,
            SPEC.value(spec, "keyId"),
            request.now,
        )
    else:
        form["client_id"] = client_id
    return {}
