"""Fallback upstream for ``buffer.py``: answers every request 200 and logs each one.

``buffer.py`` prefers nginx (``return 200`` and an access log) as the upstream that
takes the proxied and replayed writes. Without nginx this stands in: it reads the
whole body, answers ``200 {"ok":true}``, and appends one line per request to
``--log`` in the same format as the nginx upstream's access log::

    <unix time, ms resolution> <method> <body bytes> <Idempotency-Key or ->

so ``buffer.py`` counts and checks the deliveries the same way for both.

Run: ``python bench/post_sink.py --port 18001 --log /tmp/posts.log``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import TextIO

import evloop
from aiohttp import web

OK_BODY = b'{"ok":true}\n'


def handler(log: TextIO) -> web.Server:
    async def handle(request: web.BaseRequest) -> web.Response:
        body = await request.read()
        key = request.headers.get("Idempotency-Key") or "-"
        log.write(f"{time.time():.3f} {request.method} {len(body)} {key}\n")
        return web.Response(body=OK_BODY, content_type="application/json")

    return web.Server(handle, access_log=None)


async def serve(host: str, port: int, log_path: str) -> None:
    with open(log_path, "a", buffering=1) as log:  # line-buffered: readable as it grows
        runner = web.ServerRunner(handler(log))
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
    parser.add_argument("--log", required=True, help="one line per request is appended here")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        evloop.run(serve(args.host, args.port, args.log))


if __name__ == "__main__":
    main()
