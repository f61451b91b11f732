"""Why a request got no answer, in words an operator on call can act on.

Shared by the API server client (kube.py) and the provider client (endpoints.py): a
refused connection, a name that does not resolve, an untrusted certificate, a host that
never completes a connection and a server that never answers send the reader to
different places. Only the kind of failure and the OS's or resolver's fixed reason text,
never a URL, a host name, an address or anything sent: a provider URL may carry a
password, and the resolver's own errors name the host.
"""

from __future__ import annotations

import os
import socket
import ssl

import aiohttp

RESOLVED_TOO_LATE = "its host name did not resolve in time"
CONNECT_TIMED_OUT = "no connection in time (connect timed out)"
READ_TIMED_OUT = "no answer in time (read timed out)"
BODY_TIMED_OUT = "no complete answer in time (timed out reading the body)"
STILL_WAITING = "not sent: earlier requests to this endpoint are still waiting for an answer"


class RefusedAddress(OSError):
    """A name resolved, at connect time, to an address the endpoint policy refuses."""


def _resolution(error: OSError | None) -> str:
    if isinstance(error, RefusedAddress):
        # The name was checked before sending; it changed since (DNS rebinding).
        return "its host name now resolves to a refused (private or loopback) address"
    # getaddrinfo's fixed text: "Name or service not known" (no such name: a typo, a
    # deleted record) is not "Temporary failure in name resolution" (DNS unreachable).
    if isinstance(error, socket.gaierror) and error.strerror:
        return f"its host name does not resolve ({error.strerror})"
    return "its host name does not resolve"


def describe(error: BaseException | None) -> str:
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return "its TLS certificate is not trusted (check the CA bundle)"
    if isinstance(error, aiohttp.ClientSSLError):
        return "the TLS handshake failed"
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return _resolution(error.os_error)
    if isinstance(error, socket.gaierror):
        return _resolution(error)
    if isinstance(error, aiohttp.ClientConnectorError):
        code = error.os_error.errno if error.os_error else None
        return f"connection failed ({os.strerror(code) if code else 'no route'})"
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return CONNECT_TIMED_OUT
    if isinstance(error, aiohttp.SocketTimeoutError):
        return READ_TIMED_OUT
    if isinstance(error, TimeoutError | aiohttp.ServerTimeoutError) or error is None:
        return "no answer in time (timed out)"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    alert = _tls_alert(error)
    if alert is not None:
        return alert
    return type(error).__name__


def _tls_alert(error: BaseException) -> str | None:
    """A handshake the server ended (under TLS 1.3 after it began, so aiohttp reports an
    OSError): mostly a client certificate it does not accept (RFC 8705). OpenSSL's reason
    is a fixed code (TLSV13_ALERT_CERTIFICATE_REQUIRED, TLSV1_ALERT_UNKNOWN_CA, ...)."""
    seen: BaseException | None = error
    for _ in range(8):  # a cause chain is short; never follow a cycle
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            reason = str(getattr(seen, "reason", "") or "")
            if "ALERT" in reason:
                return (
                    f"the server ended the TLS handshake ({reason}): a client certificate "
                    "it does not accept?"
                )
            return "the TLS handshake failed"
        seen = seen.__cause__ or seen.__context__
    return None
