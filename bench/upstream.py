"""Fallback benchmark upstream: aiohttp serving ``/small`` and ``/big``
(and ``/rNNNNN/small`` as ``/small``, for the many-routes targets).

``run.py`` prefers nginx as the upstream because a benchmark of a proxy needs an
upstream that is never the bottleneck. When nginx is not installed this server stands
in for it with the same two bodies (see ``payloads.py``). It uses aiohttp's low-level
``web.Server`` (no router, no middlewares) and uvloop when available, so it stays as
cheap as Python gets; its numbers for "direct" are then a Python ceiling, not nginx's.

Run: ``python bench/upstream.py --port 18001``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re

import evloop
import payloads
from aiohttp import web

_ROUTES = {
    payloads.SMALL_PATH: (payloads.SMALL_BODY, payloads.SMALL_CONTENT_TYPE),
    payloads.BIG_PATH: (payloads.BIG_BODY, payloads.BIG_CONTENT_TYPE),
}


# The many-routes targets' path: /rNNNNN/small is /small.
_UNDER_ROUTE = re.compile(r"^/r[0-9]+(/.*)$")


async def handle(request: web.BaseRequest) -> web.Response:
    under = _UNDER_ROUTE.match(request.path)
    found = _ROUTES.get(under[1] if under else request.path)
    if found is None:
        return web.Response(status=404, text="not found\n")
    body, content_type = found
    return web.Response(body=body, content_type=content_type)


async def serve(host: str, port: int) -> None:
    runner = web.ServerRunner(web.Server(handle, access_log=None))
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        evloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
