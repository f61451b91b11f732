"""Client certificates for mutual TLS (RFC 8705 tls_client_auth): the pair, its TLS
context, and one connection pool per pair in use.

A TLS context presents one certificate, and Python's ssl cannot choose one per
connection, so each pair gets a context and a pool of its own, the least recently used
closed beyond a bound. Building one must stay cheap when many pairs take turns (the
keyless benchmark: 500 certificates over 64 pools made a new one at every mint): the
system's trust store is read lazily from its hashed directory instead of parsed whole
for every context, and the work runs off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import ssl
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import aiohttp

# Connection pools kept for client certificates at once.
MAX_POOLS = 64
_HASHED_NAME = re.compile(r"^[0-9a-f]{8}\.[0-9]+$")


class CertificateNotLoaded(Exception):
    """The pair cannot be loaded into a TLS context (the message names no part of it)."""


@dataclass(frozen=True)
class ClientCertificate:
    """A client certificate (PEM, leaf first) and its key."""

    certificate: str = field(repr=False)
    private_key: str = field(repr=False)

    @property
    def fingerprint(self) -> str:
        """Which pair this is: a rotated certificate gets a connection pool of its own."""
        return hashlib.sha256(f"{self.certificate}\0{self.private_key}".encode()).hexdigest()


@cache
def _hashed_system_directory() -> str | None:
    """The system's CA directory, when OpenSSL can look certificates up in it by hash and
    it holds every CA the default context loads from its bundle (so trusting it alone
    trusts the same; checked once). A context then costs 0.2 ms, not 18 ms parsing the
    whole bundle again."""
    paths = ssl.get_default_verify_paths()
    directory = paths.capath
    if directory is None:
        return None
    try:
        names = [name for name in os.listdir(directory) if _HASHED_NAME.match(name)]
        in_directory = set()
        for name in names:
            with open(os.path.join(directory, name), encoding="ascii", errors="replace") as file:
                pem = file.read()
            if "BEGIN CERTIFICATE" in pem:
                in_directory.add(ssl.PEM_cert_to_DER_cert(pem))
    except (OSError, ValueError):
        return None
    bundled = ssl.create_default_context().get_ca_certs(binary_form=True)
    return directory if in_directory and set(bundled) <= in_directory else None


def trust_context(ca_file: str | None) -> ssl.SSLContext:
    """A client context that trusts what ssl.create_default_context() trusts, and
    ``ca_file``."""
    directory = _hashed_system_directory()
    if directory is None:
        context = ssl.create_default_context()
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # hostname checked, cert required
        context.load_verify_locations(capath=directory)
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def load(context: ssl.SSLContext, certificate: ClientCertificate) -> None:
    """Into the context, never onto a disk: ssl reads a certificate only from a file, so
    the pair goes through an anonymous in-memory file (memfd), closed at once."""
    pem = f"{certificate.certificate.strip()}\n{certificate.private_key.strip()}\n".encode()
    if hasattr(os, "memfd_create"):
        descriptor = os.memfd_create("tokensync-client-certificate", os.MFD_CLOEXEC)
        try:
            os.write(descriptor, pem)
            context.load_cert_chain(f"/proc/self/fd/{descriptor}")
        finally:
            os.close(descriptor)
        return
    # Not Linux (a developer's machine): a private temporary file, removed at once.
    with tempfile.NamedTemporaryFile(prefix="tokensync-", suffix=".pem") as file:
        file.write(pem)
        file.flush()
        context.load_cert_chain(file.name)


def _context_for(certificate: ClientCertificate, ca_file: str | None) -> ssl.SSLContext:
    context = trust_context(ca_file)
    try:
        load(context, certificate)
    except (ssl.SSLError, OSError, ValueError):
        # ssl's text names nothing secret, but says nothing useful either.
        raise CertificateNotLoaded("the client certificate and key cannot be loaded") from None
    return context


class CertificatePools:
    def __init__(
        self,
        new_client: Callable[[ssl.SSLContext], aiohttp.ClientSession],
        ca_file: str | None,
        bound: int = MAX_POOLS,
    ) -> None:
        self._new_client = new_client
        self._ca_file = ca_file
        self._bound = bound
        self._clients: OrderedDict[str, aiohttp.ClientSession] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clients)

    async def client_for(self, certificate: ClientCertificate) -> aiohttp.ClientSession:
        key = certificate.fingerprint
        client = self._clients.get(key)
        if client is not None:
            self._clients.move_to_end(key)
            return client
        context = await asyncio.to_thread(_context_for, certificate, self._ca_file)
        client = self._clients.get(key)  # another request built it meanwhile
        if client is None:
            client = self._clients[key] = self._new_client(context)
        self._clients.move_to_end(key)
        while len(self._clients) > self._bound:
            _, oldest = self._clients.popitem(last=False)
            await oldest.close()
        return client

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
