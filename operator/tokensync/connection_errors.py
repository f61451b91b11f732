"""Why a request got no answer, in words an operator on call can act on.

Shared by the API server client (kube.py) and the provider client (endpoints.py): a
refused connection, a name that does not resolve, an untrusted certificate and a server
that never answers send the reader to different places. Only the kind of failure and the
OS's reason, never a URL or anything sent: a provider URL may carry a password.
"""

from __future__ import annotations

import os

import aiohttp


def describe(error: BaseException | None) -> str:
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return "its TLS certificate is not trusted (check the CA bundle)"
    if isinstance(error, aiohttp.ClientSSLError):
        return "the TLS handshake failed"
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return "its host name does not resolve"
    if isinstance(error, aiohttp.ClientConnectorError):
        code = error.os_error.errno if error.os_error else None
        return f"connection failed ({os.strerror(code) if code else 'no route'})"
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return "no connection in time (connect timed out)"
    if isinstance(error, TimeoutError | aiohttp.ServerTimeoutError) or error is None:
        return "no answer in time (timed out)"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    return type(error).__name__
