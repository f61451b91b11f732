"""A CA of the test's own, and the server and client certificates mutual TLS tests need.

EC P-256 keys (fast to make); PEM strings throughout, written to files only where a
server or an ``ssl`` context wants a path.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fakes.oauth2_server import FakeOAuth2Server

_VALIDITY = datetime.timedelta(days=7)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, as PEM."""

    cert_pem: str
    key_pem: str = field(repr=False)

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem.encode())

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER certificate, hex: what the fake records per request."""
        return self.cert.fingerprint(hashes.SHA256()).hex()

    @property
    def subject(self) -> str:
        """The subject DN as RFC 4514 text (e.g. ``CN=app``), as tls_client_auth names it."""
        return self.cert.subject.rfc4514_string()

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """``<stem>.crt`` and ``<stem>.key`` (mode 0600) in ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert.write_text(self.cert_pem)
        key.write_text(self.key_pem)
        key.chmod(0o600)
        return cert, key

    def secret_values(self) -> set[str]:
        """What a leak of the key would look like: the PEM, its base64 (as in a Secret's
        data) and each base64 line of its body (a log may escape the newlines)."""
        lines = [line for line in self.key_pem.splitlines() if not line.startswith("-----")]
        encoded = base64.b64encode(self.key_pem.encode()).decode()
        return {self.key_pem, encoded, *lines}


class CertificateAuthority:
    """Signs server and client certificates. (Not ``TestCa``: pytest would collect it.)"""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self.key = key

    @classmethod
    def create(cls, name: str = "tokensync-test-ca") -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def from_files(cls, cert_file: Path, key_file: Path) -> CertificateAuthority:
        """An existing CA, e.g. the one the suite's operator already trusts (--ca-file)."""
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError(f"{key_file}: an EC key is expected")
        return cls(x509.load_pem_x509_certificate(cert_file.read_bytes()), key)

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def write(self, path: Path) -> Path:
        """The CA certificate (for a server's client CA or a client's trust), at ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.cert_pem)
        return path

    def server_cert(self, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> KeyPair:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        return self._issue(
            hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, [x509.SubjectAlternativeName(names)]
        )

    def client_cert(
        self,
        common_name: str,
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> KeyPair:
        """A client certificate whose subject is ``CN=<common_name>``: for ``key`` (a new
        one unless given), valid from ``not_before`` (five minutes ago unless given) until
        ``not_after`` (a week from now unless given)."""
        return self._issue(
            common_name,
            ExtendedKeyUsageOID.CLIENT_AUTH,
            [],
            key=key,
            not_before=not_before,
            not_after=not_after,
        )

    def _issue(
        self,
        common_name: str,
        usage: x509.ObjectIdentifier,
        extra: list[x509.ExtensionType],
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> KeyPair:
        key = key if key is not None else ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        if not_before is None:
            not_before = now - datetime.timedelta(minutes=5)
        if not_after is None:
            not_after = now + _VALIDITY
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        for extension in extra:
            builder = builder.add_extension(extension, critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def tls_secret(name: str, pair: KeyPair, namespace: str | None = None) -> dict[str, Any]:
    """The body of a ``kubernetes.io/tls`` Secret holding ``pair`` (for the API or kubectl)."""
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(pair.cert_pem.encode()).decode(),
            "tls.key": base64.b64encode(pair.key_pem.encode()).decode(),
        },
    }


@dataclass(frozen=True)
class MutualTls:
    """An OAuth2 fake over HTTPS that requires a client certificate (RFC 8705), and the
    CA of the test's own whose certificates it accepts."""

    server: FakeOAuth2Server
    client_ca: CertificateAuthority
