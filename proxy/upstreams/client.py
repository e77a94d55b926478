"""The client side of one upstream: the data path's keep-alive pool
(:mod:`proxy.upstreams.pool`), and an aiohttp ``ClientSession`` for the active health
checks only, set up the way a proxy needs.

What the proxy must not add or change: no cookie jar (a shared jar would hand one user's
cookies to the next), no redirect following, no decompression, no environment
proxies, no automatic ``User-Agent``/``Accept``/``Accept-Encoding``/``Content-Type``.
On the data path the request target is the upstream's base path followed by the
client's target byte for byte as it arrived (routing matched its canonical form, which
only upper-cases escapes and decodes unreserved characters: the same resource), and
the head carries exactly the headers the forwarding rules chose, plus ``Host`` and the
framing; nothing else is added.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterable, Coroutine
from typing import Any

import aiohttp
from yarl import URL

from proxy.chain.headers import HeaderList
from proxy.config.runtime import UpstreamSettings
from proxy.upstreams.pool import Pool
from proxy.upstreams.response import UpstreamResponse, request_head

_SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
MAX_UPSTREAM_HEADER_FIELD = 16 * 1024
_NEVER_ROUND = 1e9
_MAX_KEPT_TIMEOUTS = 1024


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _ssl_context(settings: UpstreamSettings) -> ssl.SSLContext | bool:
    if settings.origin.scheme != "https":
        return True
    if not settings.tls_verify:
        return False
    return ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)


class UpstreamClient:
    """Sends requests to one upstream over its own bounded keep-alive pool."""

    def __init__(self, settings: UpstreamSettings) -> None:
        self.settings = settings
        self._prefix = str(settings.origin) + settings.base_path
        self._base_path = settings.base_path.encode("latin-1")
        context = _ssl_context(settings)
        origin = settings.origin
        secure = origin.scheme == "https"
        port = origin.port or (443 if secure else 80)
        self.host_header = origin.raw_host or ""
        if origin.port is not None and not origin.is_default_port():
            self.host_header += f":{origin.port}"
        tls: ssl.SSLContext | None = None
        if secure:
            tls = context if isinstance(context, ssl.SSLContext) else _unverified()
        self.pool = Pool(
            origin.raw_host or "",
            port,
            max_connections=settings.max_connections,
            connect_timeout=settings.connect_timeout,
            ssl_context=tls,
            server_hostname=origin.raw_host if secure else None,
        )
        self._context = context
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """aiohttp's client, for the active health checks (made on first use)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=2, ssl=self._context, ttl_dns_cache=10)
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                max_field_size=MAX_UPSTREAM_HEADER_FIELD,
                max_line_size=MAX_UPSTREAM_HEADER_FIELD,
            )
        return self._session

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` ran: its pool takes no more requests."""
        return self.pool.closed

    def url(self, path: str, query: str) -> URL:
        target = self._prefix + path
        if query:
            target += "?" + query
        return URL(target, encoded=True)

    def target(self, raw: bytes) -> bytes:
        """The request target upstream: the base path, then the client's as it arrived."""
        return self._base_path + raw if self._base_path else raw

    def send(
        self,
        method: str,
        target: bytes,
        headers: HeaderList,
        data: bytes | AsyncIterable[bytes] | None,
        *,
        may_resend: bool,
        deadline: float | None = None,
        read_timeout: float | None = None,
    ) -> Coroutine[Any, Any, UpstreamResponse]:
        """One request; awaited, its answer's head (the body is read from the answer).
        A plain function handing back the pool's coroutine: one frame fewer for every
        resumption of the request's task."""
        # Host first, as a client sends it (RFC 9112 section 3.2), the client's own
        # (preserve_host) moved there, else the upstream's
        if not self.settings.preserve_host:  # the rules dropped the client's Host
            headers.insert(0, ("Host", self.host_header))
        else:
            at = next((at for at, (name, _) in enumerate(headers) if name == "Host"), -1)
            if at < 0:
                headers.insert(0, ("Host", self.host_header))
            elif at > 0:
                headers.insert(0, headers.pop(at))
        chunked = False
        if isinstance(data, bytes):
            headers.append(("Content-Length", str(len(data))))
        elif data is not None:
            if not any(name == "Content-Length" for name, _ in headers):
                headers.append(("Transfer-Encoding", "chunked"))
                chunked = True
        elif method in _BODY_METHODS:
            headers.append(("Content-Length", "0"))
        head = request_head(method, target, headers)
        return self.pool.exchange(
            method,
            head,
            data,
            read_timeout=self.settings.read_timeout if read_timeout is None else read_timeout,
            may_resend=may_resend,
            chunked=chunked,
            deadline=deadline,
        )

    async def close(self) -> None:
        await self.pool.close()
        if self._session is not None:
            await self._session.close()


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
