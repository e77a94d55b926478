"""The client side: one ``ClientSession`` per upstream, set up the way a proxy needs.

What the proxy must not add or change: no cookie jar (a shared jar would hand one user's
cookies to the next), no redirect following, no decompression, no environment
proxies, no automatic ``User-Agent``/``Accept``/``Accept-Encoding``/``Content-Type``.
The target URL is built from the upstream's base and the already-normalised path
and query, ``encoded=True``, so the bytes that matched are the bytes that are sent.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterable, Awaitable

import aiohttp
from yarl import URL

from proxy.chain.headers import HeaderList
from proxy.config.runtime import UpstreamSettings

_SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
MAX_UPSTREAM_HEADER_FIELD = 16 * 1024
_NEVER_ROUND = 1e9
_MAX_KEPT_TIMEOUTS = 1024


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
        connector = aiohttp.TCPConnector(
            limit=settings.max_connections,
            limit_per_host=0,
            ssl=_ssl_context(settings),
            ttl_dns_cache=10,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            max_field_size=MAX_UPSTREAM_HEADER_FIELD,
            max_line_size=MAX_UPSTREAM_HEADER_FIELD,
        )
        # aiohttp silently resends an idempotent request once when the connection drops;
        # every try must be one the failover plan decided on and Proxy-Status reports.
        # No public switch exists (aiohttp's own test client flips the same attribute).
        self.session._retry_connection = False
        self._timeouts: dict[int, aiohttp.ClientTimeout] = {}

    def timeout_for(self, remaining: float) -> aiohttp.ClientTimeout:
        """This upstream's per-try timeouts, and ``total``: what is left of the deadline.

        aiohttp's total timeout covers the whole exchange, body included (as Envoy's route
        timeout does), and costs one timer; ``ceil_threshold`` keeps it exact rather than
        rounded up to whole seconds. Timeouts are kept by whole milliseconds left (rounded
        down, never past the deadline): most first tries start with the same budget, so
        the per-request path rarely builds one (about 1% of a request's instructions).
        """
        millis = max(1, int(remaining * 1000))  # total=0 would mean "no timeout"
        timeout = self._timeouts.get(millis)
        if timeout is None:
            if len(self._timeouts) >= _MAX_KEPT_TIMEOUTS:
                self._timeouts.clear()
            timeout = self._timeouts[millis] = aiohttp.ClientTimeout(
                total=millis / 1000,
                connect=self.settings.connect_timeout,
                sock_connect=self.settings.connect_timeout,
                sock_read=self.settings.read_timeout,
                ceil_threshold=_NEVER_ROUND,
            )
        return timeout

    def url(self, path: str, query: str) -> URL:
        target = self._prefix + path
        if query:
            target += "?" + query
        return URL(target, encoded=True)

    def send(
        self,
        method: str,
        url: URL,
        headers: HeaderList,
        data: bytes | AsyncIterable[bytes] | None,
        timeout: aiohttp.ClientTimeout,
    ) -> Awaitable[aiohttp.ClientResponse]:
        """The request, to be awaited (not a coroutine of ours: one frame less per try)."""
        return self.session.request(
            method,
            url,
            headers=headers,
            data=data,
            allow_redirects=False,
            compress=None,
            proxy=None,
            timeout=timeout,
        )

    async def close(self) -> None:
        await self.session.close()
