"""The listening side: aiohttp's low-level server, tuned for a proxy.

- Refuses to run on aiohttp's pure-Python HTTP parser (docs/configuration.md, "Limits and
  bad input"): only the C (llhttp) parser is strict about request smuggling vectors.
- Answers oversized request lines with 414 and oversized or too many headers with 431
  (aiohttp answers 400 for all of them).
- The low-level ``web.Server`` skips the URL dispatcher: the proxy does its own routing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from aiohttp import hdrs, http_exceptions, web, web_protocol
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import SERVER_SOFTWARE, RawRequestMessage
from aiohttp.streams import StreamReader

from proxy.chain.payloads import proxy_error
from proxy.config.schema import Limits
from proxy.http.handler import ProxyHandler
from proxy.http.respond import payload_response

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
    parser = web_protocol.HttpRequestParser  # type: ignore[attr-defined]
    if parser.__module__ != "aiohttp._http_parser":
        raise StartupError(
            "aiohttp is using its pure-Python HTTP parser (AIOHTTP_NO_EXTENSIONS set, or no "
            "compiled wheel for this platform); failover-proxy needs the strict C parser"
        )


_REASONS = {
    400: "the request is malformed",
    414: "the request line is too long",
    431: "the request headers are too large or too many",
}


class _ProxyRequestHandler(web_protocol.RequestHandler):
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Malformed requests: the right 4xx, our headers, a debug log line (not a traceback:
        a client's garbage is not the proxy's error). Anything else: aiohttp's 500."""
        if not isinstance(exc, http_exceptions.HttpProcessingError):
            response = super().handle_error(request, status, exc, message)
        else:
            if isinstance(exc, http_exceptions.LineTooLong):
                status = 414 if exc.args[1] == self.max_line_size else 431
            elif "Too many headers" in str(exc):
                status = 431
            else:
                status = 400
            log.debug("refused a malformed request from %s: %s", request.remote, exc)
            response = payload_response(proxy_error(status, _REASONS[status]))
            response.force_close()
        manager = self._manager
        if isinstance(manager, ProxyServer):
            manager.mark(response)
        return response


def without_server_software(response: web.StreamResponse) -> None:
    """Drop the ``Server: Python/3.x aiohttp/3.y`` that aiohttp adds to every answer
    without one: the proxy's answers do not advertise versions. Only aiohttp's value
    goes, known by identity (the one string object it sets), so an upstream's own
    ``Server`` is passed through unchanged, even one with the same text."""
    if response.headers.get(hdrs.SERVER) is SERVER_SOFTWARE:
        del response.headers[hdrs.SERVER]


class _ProxyRequest(web.BaseRequest):
    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        """aiohttp calls this for every answer (ours, relayed, its own 400s) after it
        filled in its default headers and before it writes them."""
        without_server_software(response)


class ProxyServer(web.Server):
    def __init__(self, handler: ProxyHandler, **kwargs: Any) -> None:
        super().__init__(handler, request_factory=self._new_request, **kwargs)
        self.mark = handler.mark_own_answer

    def _new_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: web_protocol.RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        return _ProxyRequest(message, payload, protocol, writer, task, self._loop)

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
        # keepalive_timeout of its start or of the end of the last answer, idle keep-alive
        # connections included: our header deadline. Bytes arriving do not push it back
        # (its timer is armed only then), so a trickling head is cut like a silent one.
        "keepalive_timeout": limits.client_header_timeout,
        # After an early answer (413, 408) aiohttp drains the unread body for this long
        # before closing, so the client reads our answer instead of a reset.
        "lingering_time": limits.client_body_timeout,
        "access_log": None,
    }
    return ProxyServer(handler, **kwargs)
