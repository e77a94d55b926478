"""The main listener, set up for a proxy: the data path's own HTTP/1.1 server
(:mod:`proxy.http.listener`) with the configured limits, and the start-up check that the
parsers are the strict ones.

llhttp (through ``httptools``, a compiled binding) parses both sides of the data path
in strict mode; aiohttp, which still serves the admin listener and the health checks,
must be recent enough and on its C parser too (docs/configuration.md, "Limits and bad
input").
"""

from __future__ import annotations

import asyncio

import aiohttp
import httptools
from aiohttp import web_protocol

from proxy.config.schema import Limits
from proxy.http.handler import ProxyHandler
from proxy.http.listener import Listener, ListenerLimits

MIN_AIOHTTP = (3, 13, 3)


class StartupError(RuntimeError):
    pass


def require_strict_parser() -> None:
    """Refuse to serve on a pure-Python parser or an aiohttp older than the pin."""
    version = tuple(int(part) for part in aiohttp.__version__.split(".")[:3] if part.isdigit())
    if version < MIN_AIOHTTP:
        wanted = ".".join(map(str, MIN_AIOHTTP))
        raise StartupError(f"aiohttp {aiohttp.__version__} is too old; {wanted} or newer needed")
    parser = web_protocol.HttpRequestParser  # type: ignore[attr-defined]
    if parser.__module__ != "aiohttp._http_parser":
        raise StartupError(
            "aiohttp is using its pure-Python HTTP parser (AIOHTTP_NO_EXTENSIONS set, or no "
            "compiled wheel for this platform); failover-proxy needs the strict C parser"
        )
    if not httptools.HttpRequestParser.__module__.startswith("httptools.parser"):
        raise StartupError("httptools is not the compiled llhttp binding")


def build_listener(
    handler: ProxyHandler, limits: Limits, loop: asyncio.AbstractEventLoop
) -> Listener:
    """The data path's listener with the configured limits. After an early answer (413,
    408) the rest of the body is read and dropped for up to ``client_body_timeout``, so
    the client reads the answer instead of a reset."""
    listener_limits = ListenerLimits(
        max_request_line=limits.max_request_line,
        max_header_size=limits.max_header_size,
        max_headers=limits.max_headers,
        header_timeout=limits.client_header_timeout,
        linger=limits.client_body_timeout,
    )
    return Listener(handler, handler.refusal, listener_limits, loop)
