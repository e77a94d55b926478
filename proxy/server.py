"""The listening side: aiohttp's low-level server, tuned for a proxy.

- Refuses to run on aiohttp's pure-Python HTTP parser (DESIGN.md section 13, rule 7):
  only the C (llhttp) parser is strict about request smuggling vectors.
- Answers oversized request lines with 414 and oversized or too many headers with 431
  (aiohttp answers 400 for all of them).
- The low-level ``web.Server`` skips the URL dispatcher: the proxy does its own routing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from aiohttp import http_exceptions, web, web_protocol

from proxy.config import Limits
from proxy.forward import ProxyHandler

log = logging.getLogger("failover_proxy")

MIN_AIOHTTP = (3, 13, 3)


class StartupError(RuntimeError):
    pass


def require_strict_parser() -> None:
    """Refuse to serve on the pure-Python parser or an aiohttp older than the pin."""
    version = tuple(int(part) for part in aiohttp.__version__.split(".")[:3] if part.isdigit())
    if version < MIN_AIOHTTP:
        wanted = ".".join(map(str, MIN_AIOHTTP))
        raise StartupError(f"aiohttp {aiohttp.__version__} is too old; {wanted} or newer needed")
    parser = web_protocol.HttpRequestParser
    if parser.__module__ != "aiohttp._http_parser":
        raise StartupError(
            "aiohttp is using its pure-Python HTTP parser (AIOHTTP_NO_EXTENSIONS set, or no "
            "compiled wheel for this platform); failover-proxy needs the strict C parser"
        )


class _ProxyRequestHandler(web_protocol.RequestHandler):
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, http_exceptions.LineTooLong):
            status = 414 if exc.args[1] == self.max_line_size else 431
        elif isinstance(exc, http_exceptions.BadHttpMessage) and "Too many headers" in str(exc):
            status = 431
        return super().handle_error(request, status, exc, message)


class ProxyServer(web.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _ProxyRequestHandler(self, loop=self._loop, **self._kwargs)


def build_server(handler: ProxyHandler, limits: Limits) -> ProxyServer:
    # aiohttp tells an oversized request line from an oversized header only by the limit
    # it reports, so keep the two apart by a byte when a config sets them equal.
    field_size = limits.max_header_size
    if field_size == limits.max_request_line:
        field_size += 1
    kwargs: dict[str, Any] = {
        "max_line_size": limits.max_request_line,
        "max_field_size": field_size,
        "max_headers": limits.max_headers,
        # aiohttp closes a connection that has not sent a whole request head within
        # keepalive_timeout, idle keep-alive connections included: our header timeout.
        "keepalive_timeout": limits.client_header_timeout,
        "access_log": None,
    }
    return ProxyServer(handler, loop=asyncio.get_running_loop(), **kwargs)
