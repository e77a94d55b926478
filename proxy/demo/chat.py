"""The demo's chat route: a token stream (Server-Sent Events) from the demo upstreams,
and a client that opens one every few seconds and reports when its first token came,
from which upstream, and what failed before it.

A primary that is down answers ``200`` with an error event first: a "bad 200" that only
the first event shows, which the proxy treats as a failed try and fails over from
before the client sees a byte. A secondary that is down answers ``503``.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
from aiohttp import web

from proxy.demo.hops import failed_hops

CHAT_PATH = "/api/chat"
CHAT_EVERY = 4  # seconds of the schedule between two chat streams
TOKENS = ("Box", " box", " this", " lap", ".")
TOKEN_GAP = 0.1  # seconds of the schedule between two tokens
ERROR_EVENT = b'event: error\ndata: {"error": {"message": "overloaded"}}\n\n'


async def chat_stream(request: web.Request, name: str, mode: str, gap: float) -> web.StreamResponse:
    """Upstream ``name``'s token stream in its ``mode`` (see the runner's ``Phase``), a
    token every ``gap`` seconds."""
    if mode == "error" and name == "secondary":
        return web.json_response({"error": f"{name} is down"}, status=503)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    if mode in ("error", "bad_stream"):
        await response.write(ERROR_EVENT)
        return response
    for token in TOKENS:
        await asyncio.sleep(gap)
        data = json.dumps({"token": token, "served_by": name})
        await response.write(f"data: {data}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    return response


async def chat_once(session: aiohttp.ClientSession, url: str) -> str:
    """One chat stream, told in a line."""
    started = time.monotonic()
    first: float | None = None
    tokens = 0
    try:
        async with session.get(url, headers={"Accept": "text/event-stream"}) as response:
            source = response.headers.get("X-Failover-Source", "?")
            hops = failed_hops(response.headers.get("Proxy-Status", ""))
            failed = " ".join(f"{upstream}={why}" for upstream, why in hops)
            async for raw in response.content:
                if raw.startswith(b"data: {"):
                    tokens += 1
                    if first is None:
                        first = time.monotonic() - started
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"client error ({type(exc).__name__})"
    after = f"first token after {first * 1000:.0f} ms" if first is not None else "no token"
    text = f"{response.status} from {source}, {after}, {tokens} tokens"
    return text + (f"  failed first: {failed}" if failed else "")


async def drive_chat(
    session: aiohttp.ClientSession, url: str, every: float, lines: list[str]
) -> None:
    """A chat stream every ``every`` seconds, each told in ``lines``."""
    while True:
        lines.append(await chat_once(session, url))
        await asyncio.sleep(every)
