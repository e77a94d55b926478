"""What aiohttp and asyncio raise while talking to an upstream, as a failure class of
:mod:`proxy.chain.errors` (the ``map_exceptions`` idea of httpcore). It lives beside the
client that raises them, so the pure core never imports the network library.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

import aiohttp

from proxy.chain.errors import Failure
from proxy.upstreams.response import (
    BadAnswer,
    BodyCut,
    ConnectFailed,
    ConnectionLost,
    ConnectTimedOut,
    DeadlineExceeded,
    ErrorEvent,
    ReadTimedOut,
)

_OURS: tuple[tuple[type[BaseException], Failure], ...] = (
    (ConnectTimedOut, Failure.CONNECT_TIMEOUT),
    (DeadlineExceeded, Failure.DEADLINE_EXCEEDED),
    (ReadTimedOut, Failure.READ_TIMEOUT),
    (BodyCut, Failure.BODY_TRUNCATED),
    (BadAnswer, Failure.PROTOCOL_ERROR),
    (ErrorEvent, Failure.INVALID_RESPONSE),
    (ConnectionLost, Failure.CONNECTION_RESET),
    (socket.gaierror, Failure.DNS_ERROR),
)


def classify_exception(exc: BaseException) -> Failure | None:
    """The failure class of an exception raised while talking to an upstream.

    Returns None for exceptions that are not an upstream's fault (a bug, a cancelled
    task): the caller must re-raise those rather than fail over on them.
    """
    for kind, failure in _OURS:  # the data path's own client (proxy.upstreams.pool)
        if isinstance(exc, kind):
            return failure
    if isinstance(exc, ConnectFailed):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return Failure.CONNECTION_REFUSED
        return Failure.CONNECTION_ERROR
    # Order matters: aiohttp's exception classes inherit from each other.
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return Failure.DNS_ERROR
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return Failure.TLS_ERROR
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return Failure.CONNECTION_REFUSED
        return Failure.CONNECTION_ERROR
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return Failure.CONNECT_TIMEOUT
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return Failure.READ_TIMEOUT
    if isinstance(exc, aiohttp.ClientPayloadError):
        return Failure.BODY_TRUNCATED
    if isinstance(exc, aiohttp.ClientResponseError):
        return Failure.PROTOCOL_ERROR
    if isinstance(exc, aiohttp.ServerDisconnectedError | ConnectionResetError):
        return Failure.CONNECTION_RESET
    if isinstance(exc, aiohttp.ClientConnectionError | OSError):
        return Failure.CONNECTION_RESET
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return Failure.READ_TIMEOUT
    return None
