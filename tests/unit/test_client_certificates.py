"""Per-certificate TLS contexts and pools: bounded, shared by concurrent requests, and
trusting what the default context trusts without parsing the whole bundle each time."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest

from support.tls import CertificateAuthority
from tokensync import client_certificates
from tokensync.client_certificates import (
    CertificateNotLoaded,
    CertificatePools,
    ClientCertificate,
    trust_context,
)

AUTHORITY = CertificateAuthority.create("tokensync-unit-test-ca")


def pair(name: str) -> ClientCertificate:
    issued = AUTHORITY.client_cert(name)
    return ClientCertificate(issued.cert_pem, issued.key_pem)


class Client:
    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.closed = False

    async def close(self) -> None:
        self.closed = True


def pools(bound: int = 3) -> tuple[CertificatePools, list[Client]]:
    made: list[Client] = []

    def new_client(context: ssl.SSLContext) -> Any:
        made.append(Client(context))
        return made[-1]

    return CertificatePools(new_client, None, bound=bound), made


async def test_one_pool_per_pair_the_least_recently_used_closed_beyond_the_bound() -> None:
    kept, made = pools(bound=2)
    a, b, c = pair("a"), pair("b"), pair("c")
    first = await kept.client_for(a)
    assert await kept.client_for(a) is first and len(made) == 1
    await kept.client_for(b)
    await kept.client_for(a)  # a is now the most recent: b goes first
    await kept.client_for(c)
    assert len(kept) == 2 and made[1].closed and not made[0].closed
    await kept.close()
    assert all(client.closed for client in made)


async def test_concurrent_requests_with_a_new_pair_share_one_pool() -> None:
    kept, made = pools()
    a = pair("a")
    clients = await asyncio.gather(*(kept.client_for(a) for _ in range(8)))
    assert len({id(c) for c in clients}) == 1
    assert len(kept) == 1
    # A context built in a thread each, but one client made (by whichever finished first)
    # and kept: none made to be thrown away, so none left unclosed.
    assert made == [clients[0]]
    assert not made[0].closed


async def test_a_pair_that_does_not_load_names_no_part_of_it() -> None:
    kept, _ = pools()
    good = pair("a")
    mismatched = ClientCertificate(good.certificate, pair("b").private_key)
    with pytest.raises(CertificateNotLoaded) as caught:
        await kept.client_for(mismatched)
    assert "BEGIN" not in str(caught.value) and len(kept) == 0


def test_the_system_store_is_read_lazily_when_it_is_a_hashed_directory() -> None:
    client_certificates._hashed_system_directory.cache_clear()
    if client_certificates._hashed_system_directory() is None:
        pytest.skip("this machine's CA directory is not hashed: the whole bundle is loaded")
    context = trust_context(None)
    # Nothing parsed up front: looked up by subject hash during a handshake.
    assert context.cert_store_stats()["x509_ca"] == 0
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_a_bundle_with_cas_the_directory_lacks_keeps_the_whole_bundle(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """A CA only in SSL_CERT_FILE (a company's, say) must stay trusted: no lazy store."""
    paths = ssl.get_default_verify_paths()
    extra = CertificateAuthority.create("company-ca").cert_pem
    bundle = tmp_path / "bundle.pem"
    system = open(paths.cafile).read() if paths.cafile else ""  # noqa: SIM115
    bundle.write_text(system + extra)
    monkeypatch.setenv(paths.openssl_cafile_env, str(bundle))
    client_certificates._hashed_system_directory.cache_clear()
    try:
        assert client_certificates._hashed_system_directory() is None
        context = trust_context(None)
        loaded = context.get_ca_certs(binary_form=True)
        assert ssl.PEM_cert_to_DER_cert(extra) in loaded
    finally:
        client_certificates._hashed_system_directory.cache_clear()
