"""What a mint reads besides its spec (issue 18): the credentials Secret when one is needed,
a ServiceAccount token from the TokenRequest API, a client certificate from a TLS Secret.
Each refusal names what is missing and how to fix it, never a value."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from support.tls import CertificateAuthority, KeyPair
from tokensync.client_certificates import ClientCertificate
from tokensync.decision import CredentialsNotFound, CredentialsUnreadable
from tokensync.kube import ApiError
from tokensync.mint_inputs import (
    KUBERNETES_AUDIENCES,
    SERVICE_ACCOUNT_TOKEN_SECONDS,
    ClientCertificateNotFound,
    CredentialsRefMissing,
    InvalidClientCertificate,
    MintInputs,
    ServiceAccountNotFound,
    ServiceAccountTokenNotPermitted,
    ServiceAccountTokenUnavailable,
    token_audiences,
)
from tokensync.model import ProviderTokenView, parse_provider_token
from tokensync.providers.base import InvalidSpec, MintError, Proofs, ServiceAccountRef
from tokensync.providers.registry import PROVIDERS

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
OAUTH2 = PROVIDERS.get("oauth2")
SA_TOKEN = "eyJhbGciOiJSUzI1NiJ9.sa-token-payload.sa-token-signature"
AUDIENCE = "https://idp.example"


# --- fakes of the two protocols MintInputs reads through ----------------------------------


@dataclass
class Secrets:
    """A SecretReader: Secrets by name, or an ApiError to answer with."""

    items: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    failure: ApiError | None = None
    reads: list[tuple[str, str]] = field(default_factory=list)
    labelled: list[str] = field(default_factory=list)

    async def read(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        self.reads.append((namespace, name))
        if self.failure is not None:
            raise self.failure
        return self.items.get(name)

    async def label_credentials(self, secret: Mapping[str, Any]) -> Mapping[str, Any]:
        self.labelled.append(secret["metadata"]["name"])
        return secret


@dataclass
class Tokens:
    """A TokenRequester: hands out SA_TOKEN, or answers with the given status."""

    status: int | None = None
    calls: list[tuple[str, str, str, int]] = field(default_factory=list)

    async def create_service_account_token(
        self, namespace: str, name: str, audience: str, seconds: int
    ) -> str:
        self.calls.append((namespace, name, audience, seconds))
        if self.status is not None:
            raise ApiError(self.status, "Failure", "answer")
        return SA_TOKEN


def secret(name: str, data: Mapping[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns"},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def view(
    oauth2: Mapping[str, Any], credentials_ref: str | None = None, **spec: Any
) -> ProviderTokenView:
    body: dict[str, Any] = {
        "metadata": {"namespace": "ns", "name": "pt", "uid": "uid-1", "generation": 1},
        "spec": {"provider": {"oauth2": dict(oauth2)}, "target": {"name": "out"}, **spec},
    }
    if credentials_ref is not None:
        body["spec"]["credentialsRef"] = {"name": credentials_ref}
    return parse_provider_token(body)


TOKEN_URL = "https://idp.example/token"
SERVICE_ACCOUNT_MODE = {
    "tokenUrl": TOKEN_URL,
    "clientAuth": "service_account",
    "serviceAccountRef": {"name": "idp-client", "audience": AUDIENCE},
}
TLS_MODE = {
    "tokenUrl": TOKEN_URL,
    "clientAuth": "tls_client_auth",
    "clientId": "app",
    "tlsSecretRef": {"name": "client-tls"},
}


# --- credentials ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "oauth2",
    [
        SERVICE_ACCOUNT_MODE,
        TLS_MODE,
        {
            **SERVICE_ACCOUNT_MODE,
            "grantType": "token_exchange",
            "subjectTokenSource": "serviceAccount",
        },
    ],
)
async def test_a_spec_needing_no_key_reads_no_secret(oauth2: dict[str, Any]) -> None:
    secrets = Secrets()
    assert await MintInputs(secrets, Tokens()).credentials(view(oauth2), OAUTH2) == {}
    assert secrets.reads == [] and secrets.labelled == []


@pytest.mark.parametrize(
    ("oauth2", "template", "keys"),
    [
        ({"tokenUrl": TOKEN_URL}, None, "clientId, clientSecret"),
        (
            {**SERVICE_ACCOUNT_MODE, "grantType": "token_exchange"},
            None,
            "subjectToken",
        ),
        (
            {**SERVICE_ACCOUNT_MODE, "grantType": "password"},
            None,
            "username, password",
        ),
        # The template's keys are read the same way, so they need the Secret too.
        (
            SERVICE_ACCOUNT_MODE,
            {"data": {"user": "{{ credentials.login }}"}, "credentialKeys": ["login"]},
            "login",
        ),
    ],
)
async def test_keys_without_a_credentials_ref_are_named(
    oauth2: dict[str, Any], template: dict[str, Any] | None, keys: str
) -> None:
    secrets = Secrets()
    target = {"name": "out", "template": template} if template else {"name": "out"}
    pt = view(oauth2, target=target)
    with pytest.raises(CredentialsRefMissing) as caught:
        await MintInputs(secrets, Tokens()).credentials(pt, OAUTH2)
    assert caught.value.permanent
    assert "spec.credentialsRef" in caught.value.message
    assert caught.value.message.endswith(keys)
    assert secrets.reads == []


async def test_a_credentials_ref_is_read_and_labelled_for_the_needed_keys_only() -> None:
    creds = {"clientId": "app", "clientSecret": "s3cret", "unused": "x"}
    secrets = Secrets(items={"creds": secret("creds", creds)})
    got = await MintInputs(secrets, Tokens()).credentials(
        view({"tokenUrl": TOKEN_URL}, "creds"), OAUTH2
    )
    assert got == {"clientId": "app", "clientSecret": "s3cret"}
    assert secrets.reads == [("ns", "creds")] and secrets.labelled == ["creds"]


async def test_a_credentials_ref_to_nothing_is_credentials_not_found() -> None:
    with pytest.raises(
        CredentialsNotFound, match="credentials Secret creds not found in namespace ns"
    ):
        await MintInputs(Secrets(), Tokens()).credentials(
            view({"tokenUrl": TOKEN_URL}, "creds"), OAUTH2
        )


@pytest.mark.parametrize(
    ("status", "answer"), [(0, "did not answer"), (500, "answered 500"), (403, "answered 403")]
)
async def test_an_unreadable_credentials_secret_is_transient(status: int, answer: str) -> None:
    secrets = Secrets(failure=ApiError(status, "x", "y"))
    with pytest.raises(CredentialsUnreadable) as caught:
        await MintInputs(secrets, Tokens()).credentials(
            view({"tokenUrl": TOKEN_URL}, "creds"), OAUTH2
        )
    assert (
        caught.value.message
        == f"credentials Secret creds could not be read: the API server {answer}"
    )
    assert not caught.value.permanent


# --- ServiceAccount tokens ------------------------------------------------------------------


def needs_account(name: str = "idp-client", audience: str = AUDIENCE) -> Proofs:
    return Proofs(service_account=ServiceAccountRef(name, audience))


async def test_a_service_account_token_is_requested_for_ten_minutes_and_one_audience() -> None:
    tokens = Tokens()
    obtained = await MintInputs(Secrets(), tokens).proofs(
        view(SERVICE_ACCOUNT_MODE), needs_account(), NOW
    )
    assert obtained.service_account_token == SA_TOKEN
    assert obtained.client_certificate is None
    assert tokens.calls == [("ns", "idp-client", AUDIENCE, 600)]
    assert SERVICE_ACCOUNT_TOKEN_SECONDS == 600


async def test_each_mint_requests_a_fresh_token() -> None:
    tokens = Tokens()
    inputs = MintInputs(Secrets(), tokens)
    for _ in range(3):
        await inputs.proofs(view(SERVICE_ACCOUNT_MODE), needs_account(), NOW)
    assert len(tokens.calls) == 3


async def test_nothing_is_obtained_for_a_spec_that_needs_nothing() -> None:
    secrets, tokens = Secrets(), Tokens()
    obtained = await MintInputs(secrets, tokens).proofs(
        view({"tokenUrl": TOKEN_URL}), Proofs(), NOW
    )
    assert obtained.service_account_token is None and obtained.client_certificate is None
    assert tokens.calls == [] and secrets.reads == []


async def test_a_refused_token_request_names_the_account_the_verb_and_the_grant() -> None:
    with pytest.raises(ServiceAccountTokenNotPermitted) as caught:
        await MintInputs(Secrets(), Tokens(status=403)).proofs(
            view(SERVICE_ACCOUNT_MODE), needs_account(), NOW
        )
    message = caught.value.message
    for needed in (
        "idp-client",
        "serviceaccounts/token",
        "create",
        "deploy/service-account-tokens/role.yaml",
        "namespace ns",
    ):
        assert needed in message, needed
    assert caught.value.reason == "ServiceAccountTokenNotPermitted"
    assert caught.value.awaits_user and not caught.value.permanent


async def test_a_missing_service_account_is_named() -> None:
    with pytest.raises(ServiceAccountNotFound) as caught:
        await MintInputs(Secrets(), Tokens(status=404)).proofs(
            view(SERVICE_ACCOUNT_MODE), needs_account(), NOW
        )
    assert caught.value.message == "ServiceAccount idp-client not found in namespace ns"
    assert caught.value.awaits_user


@pytest.mark.parametrize(
    ("status", "answer"), [(0, "did not answer"), (500, "answered 500"), (429, "answered 429")]
)
async def test_an_api_server_that_hands_out_no_token_is_transient(status: int, answer: str) -> None:
    with pytest.raises(ServiceAccountTokenUnavailable) as caught:
        await MintInputs(Secrets(), Tokens(status=status)).proofs(
            view(SERVICE_ACCOUNT_MODE), needs_account(), NOW
        )
    assert (
        caught.value.message == f"no token for ServiceAccount idp-client: the API server {answer}"
    )
    assert not caught.value.permanent and not caught.value.awaits_user


def bearer(aud: object) -> str:
    claims = {
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": "system:serviceaccount:tokensync-system:tokensync",
    }
    if aud is not None:
        claims["aud"] = aud
    return "Bearer " + jwt.encode(claims, "k" * 32, algorithm="HS256")


OWN_TOKEN_AUDIENCES = token_audiences(bearer(["https://oidc.eks.example/id/ABC", "sts.example"]))


@pytest.mark.parametrize(
    "audience",
    [*sorted(KUBERNETES_AUDIENCES), "https://oidc.eks.example/id/ABC", "sts.example"],
)
@pytest.mark.parametrize("forbidden", [OWN_TOKEN_AUDIENCES, frozenset()], ids=["own", "none"])
async def test_a_token_for_the_kubernetes_api_itself_is_never_requested(
    audience: str, forbidden: frozenset[str]
) -> None:
    tokens = Tokens()
    inputs = MintInputs(Secrets(), tokens, forbidden)
    if audience not in KUBERNETES_AUDIENCES and not forbidden:
        # Only the operator's own token says these are the API server's.
        await inputs.proofs(view(SERVICE_ACCOUNT_MODE), needs_account(audience=audience), NOW)
        assert len(tokens.calls) == 1
        return
    with pytest.raises(InvalidSpec) as caught:
        await inputs.proofs(view(SERVICE_ACCOUNT_MODE), needs_account(audience=audience), NOW)
    assert audience in caught.value.message and "Kubernetes API" in caught.value.message
    assert caught.value.permanent
    assert tokens.calls == []


@pytest.mark.parametrize(("name", "audience"), [("", AUDIENCE), ("idp-client", ""), ("", "")])
async def test_a_service_account_ref_without_name_or_audience_is_invalid(
    name: str, audience: str
) -> None:
    tokens = Tokens()
    with pytest.raises(InvalidSpec, match="serviceAccountRef needs name and audience"):
        await MintInputs(Secrets(), tokens).proofs(
            view(SERVICE_ACCOUNT_MODE), needs_account(name, audience), NOW
        )
    assert tokens.calls == []


@pytest.mark.parametrize(
    ("authorization", "audiences"),
    [
        (bearer("https://kubernetes.default.svc"), {"https://kubernetes.default.svc"}),
        (bearer(["a", "b"]), {"a", "b"}),
        (bearer(["a", 3, None, {"x": 1}]), {"a"}),
        (bearer(7), set()),
        (bearer(None), set()),
        (bearer({"a": "b"}), set()),
        (bearer("a").replace("Bearer", "bearer"), {"a"}),
        (bearer("a").replace("Bearer ", "Basic "), set()),
        ("Bearer opaque-token-not-a-jwt", set()),
        ("Bearer a.b.c", set()),
        ("Bearer !!!.@@@.###", set()),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.WzEsMl0.c2ln", set()),  # the payload is a list
        ("Bearer", set()),
        ("", set()),
        (None, set()),
    ],
)
def test_the_audiences_of_the_operators_own_token(
    authorization: str | None, audiences: set[str]
) -> None:
    assert token_audiences(authorization) == frozenset(audiences)


def test_an_expired_own_token_still_says_its_audiences() -> None:
    claims = {"aud": ["https://api.example"], "exp": 1}
    token = jwt.encode(claims, "k" * 32, algorithm="HS256")
    assert token_audiences(f"Bearer {token}") == {"https://api.example"}


# --- client certificates --------------------------------------------------------------------


CA = CertificateAuthority.create("test-ca")


def _pair(not_after: datetime, key: ec.EllipticCurvePrivateKey | None = None) -> KeyPair:
    """A pair ``CA`` signed for ``CN=app``, valid for the 30 days up to ``not_after`` (not
    the wall clock's: the mints here happen at ``NOW``)."""
    return CA.client_cert(
        "app", key=key, not_before=not_after - timedelta(days=30), not_after=not_after
    )


KEY = ec.generate_private_key(ec.SECP256R1())
PAIR = _pair(NOW + timedelta(days=1), KEY)
KEY_PEM = PAIR.key_pem
CERT_PEM = PAIR.cert_pem
OTHER_KEY_PEM = _pair(NOW + timedelta(days=1)).key_pem
EXPIRED_PEM = _pair(NOW - timedelta(seconds=1), KEY).cert_pem


def pem_texts(*pems: str) -> list[str]:
    """What a leak would look like: each base64 line of each PEM body."""
    return [
        line for pem in pems for line in pem.splitlines() if line and not line.startswith("-----")
    ]


def needs_tls(name: str = "client-tls") -> Proofs:
    return Proofs(tls_secret=name)


async def obtain_certificate(
    data: Mapping[str, str] | None, now: datetime = NOW
) -> ClientCertificate | None:
    items = {} if data is None else {"client-tls": secret("client-tls", data)}
    secrets = Secrets(items=items)
    obtained = await MintInputs(secrets, Tokens()).proofs(view(TLS_MODE), needs_tls(), now)
    assert secrets.reads == [("ns", "client-tls")]
    return obtained.client_certificate


async def test_a_good_pair_is_the_client_certificate() -> None:
    got = await obtain_certificate({"tls.crt": CERT_PEM, "tls.key": KEY_PEM, "ca.crt": "x"})
    assert got == ClientCertificate(certificate=CERT_PEM, private_key=KEY_PEM)
    assert KEY_PEM not in repr(got) and CERT_PEM not in repr(got)


async def test_a_chain_is_accepted_leaf_first() -> None:
    chain = CERT_PEM + CA.cert_pem
    assert PAIR.cert.issuer == CA.cert.subject  # the leaf, then the CA that signed it
    got = await obtain_certificate({"tls.crt": chain, "tls.key": KEY_PEM})
    assert got is not None and got.certificate == chain


async def test_a_certificate_is_good_until_the_moment_it_expires() -> None:
    data = {"tls.crt": CERT_PEM, "tls.key": KEY_PEM}
    assert await obtain_certificate(data, NOW + timedelta(days=1) - timedelta(seconds=1))
    with pytest.raises(InvalidClientCertificate, match="expired at"):
        await obtain_certificate(data, NOW + timedelta(days=1))


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (
            None,
            ClientCertificateNotFound,
            "client certificate Secret client-tls not found in namespace ns",
        ),
        ({}, InvalidClientCertificate, "lacks tls.crt or tls.key"),
        ({"tls.crt": CERT_PEM}, InvalidClientCertificate, "lacks tls.crt or tls.key"),
        ({"tls.key": KEY_PEM}, InvalidClientCertificate, "lacks tls.crt or tls.key"),
        ({"tls.crt": "", "tls.key": KEY_PEM}, InvalidClientCertificate, "lacks tls.crt or tls.key"),
        (
            {"tls.crt": "not a certificate", "tls.key": KEY_PEM},
            InvalidClientCertificate,
            "is not PEM",
        ),
        ({"tls.crt": CERT_PEM, "tls.key": "not a key"}, InvalidClientCertificate, "is not PEM"),
        ({"tls.crt": KEY_PEM, "tls.key": CERT_PEM}, InvalidClientCertificate, "is not PEM"),
        (
            {
                "tls.crt": CERT_PEM,
                "tls.key": KEY.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.BestAvailableEncryption(b"pw"),
                ).decode(),
            },
            InvalidClientCertificate,
            "is not PEM",
        ),
        (
            {"tls.crt": CERT_PEM, "tls.key": OTHER_KEY_PEM},
            InvalidClientCertificate,
            "tls.key is not the key of tls.crt",
        ),
        (
            {"tls.crt": EXPIRED_PEM, "tls.key": KEY_PEM},
            InvalidClientCertificate,
            "expired at 2026-11-23T11:59:59Z",
        ),
    ],
    ids=[
        "missing Secret",
        "no keys",
        "no key",
        "no certificate",
        "empty certificate",
        "certificate not PEM",
        "key not PEM",
        "swapped",
        "encrypted key",
        "key of another certificate",
        "expired",
    ],
)
async def test_a_bad_client_certificate_is_named_never_shown(
    data: Mapping[str, str] | None, error: type[MintError], message: str
) -> None:
    with pytest.raises(error) as caught:
        await obtain_certificate(data)
    assert message in caught.value.message
    assert "client-tls" in caught.value.message
    assert caught.value.awaits_user and not caught.value.permanent
    shown = f"{caught.value.message} {caught.value!s} {caught.value!r}"
    # No chained parser error either (a traceback would print it).
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__
    for text in pem_texts(CERT_PEM, KEY_PEM, OTHER_KEY_PEM, EXPIRED_PEM):
        assert text not in shown


@pytest.mark.parametrize(("status", "answer"), [(0, "did not answer"), (500, "answered 500")])
async def test_an_unreadable_tls_secret_is_transient(status: int, answer: str) -> None:
    secrets = Secrets(failure=ApiError(status, "x", "y"))
    with pytest.raises(CredentialsUnreadable) as caught:
        await MintInputs(secrets, Tokens()).proofs(view(TLS_MODE), needs_tls(), NOW)
    assert (
        caught.value.message
        == f"client certificate Secret client-tls could not be read: the API server {answer}"
    )


async def test_a_rotated_certificate_is_read_at_the_next_mint() -> None:
    secrets = Secrets(
        items={"client-tls": secret("client-tls", {"tls.crt": CERT_PEM, "tls.key": KEY_PEM})}
    )
    inputs = MintInputs(secrets, Tokens())
    first = await inputs.proofs(view(TLS_MODE), needs_tls(), NOW)
    renewed = _pair(NOW + timedelta(days=2))
    rotated = {"tls.crt": renewed.cert_pem, "tls.key": renewed.key_pem}
    secrets.items["client-tls"] = secret("client-tls", rotated)
    second = await inputs.proofs(view(TLS_MODE), needs_tls(), NOW)
    assert first.client_certificate is not None and second.client_certificate is not None
    assert second.client_certificate.certificate == rotated["tls.crt"]
    assert first.client_certificate.fingerprint != second.client_certificate.fingerprint


async def test_both_proofs_at_once() -> None:
    secrets = Secrets(
        items={"client-tls": secret("client-tls", {"tls.crt": CERT_PEM, "tls.key": KEY_PEM})}
    )
    tokens = Tokens()
    needs = Proofs(
        service_account=ServiceAccountRef("idp-client", AUDIENCE), tls_secret="client-tls"
    )
    obtained = await MintInputs(secrets, tokens).proofs(view(TLS_MODE), needs, NOW)
    assert obtained.service_account_token == SA_TOKEN
    assert obtained.client_certificate == ClientCertificate(CERT_PEM, KEY_PEM)
    assert len(tokens.calls) == 1


async def test_an_empty_tls_secret_name_is_invalid_before_any_read() -> None:
    secrets = Secrets()
    with pytest.raises(InvalidSpec):
        await MintInputs(secrets, Tokens()).proofs(view(TLS_MODE), needs_tls(""), NOW)
    assert secrets.reads == []
