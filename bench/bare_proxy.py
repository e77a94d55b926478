"""Bare aiohttp pass-through proxy: the Python ceiling for failover-proxy.

It does the least an aiohttp reverse proxy can do and still be correct for the
benchmark: aiohttp's low-level ``web.Server`` (no router, no middlewares, no access
log), one ``ClientSession`` with a pooled ``TCPConnector(limit=100)``, no cookie jar,
no decompression. It forwards method, path, query, headers (minus hop-by-hop) and body,
reads the whole upstream body and returns it. There is no routing, failover, breaker,
cache or header policy, so whatever failover-proxy spends on top of this is the cost of
its features; ``run.py`` reports failover-proxy's req/s as a ratio of this one.

Run: ``python bench/bare_proxy.py --port 18082 --upstream http://127.0.0.1:18001``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import aiohttp
import evloop
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

# RFC 9110 section 7.6.1, plus the framing headers aiohttp recomputes itself and Host,
# which the client sets to the upstream's (as nginx's default proxy_set_header does).
_DROP = frozenset(
    name.lower()
    for name in (
        "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
        "Proxy-Authorization", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
        "Content-Length", "Host",
    )
)  # fmt: skip


def _forwardable(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in _DROP)


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def make_handler(session: aiohttp.ClientSession, upstream: str) -> Handler:
    async def handle(request: web.BaseRequest) -> web.Response:
        body = await request.read() if request.body_exists else None
        try:
            async with session.request(
                request.method,
                upstream + request.path_qs,
                headers=_forwardable(request.headers),
                data=body,
                allow_redirects=False,
            ) as resp:
                payload = await resp.read()
                return web.Response(
                    status=resp.status, headers=_forwardable(resp.headers), body=payload
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return web.Response(status=502, text=f"bare proxy: {exc!r}\n")

    return handle


async def serve(host: str, port: int, upstream: str, limit: int) -> None:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
    )
    runner = web.ServerRunner(web.Server(make_handler(session, upstream), access_log=None))
    try:
        await runner.setup()
        await web.TCPSite(runner, host, port, backlog=1024).start()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:18001")
    parser.add_argument("--limit", type=int, default=100, help="upstream connection pool size")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        evloop.run(serve(args.host, args.port, args.upstream.rstrip("/"), args.limit))


if __name__ == "__main__":
    main()
