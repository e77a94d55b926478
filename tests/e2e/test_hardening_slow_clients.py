"""Slow clients are cut at a deadline for the whole request head and the whole body, not
after a silence between two reads: a client that trickles a byte every 0.2 s never falls
silent, and must still lose its connection once ``client_header_timeout`` or
``client_body_timeout`` (1 s here) is spent. Ordinary requests keep their latency while
50 such clients trickle."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import route

TIMEOUT = 1.0
LIMITS = {"client_header_timeout": "1s", "client_body_timeout": "1s"}
TRICKLE_EVERY = 0.2
SLOW_HEAD = b"X-Slow: " + b"a" * 100 + b"\r\n\r\n"  # 20 s at a byte per 0.2 s
SLOW_BODY = b"a" * 100


@dataclass
class Cut:
    answer: bytes  # what the proxy sent before closing
    answered_after: float | None  # seconds from the first byte sent to the answer
    closed_after: float  # seconds from the first byte sent to the close


async def trickle(
    proxy: str, at_once: bytes, slowly: bytes, *, give_up: float = 8.0, before: bytes = b""
) -> Cut:
    """Open a connection, send ``before`` and wait for its answer, then send ``at_once``
    and ``slowly`` a byte every 0.2 s, reading until the proxy closes the connection."""
    host, port = proxy.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    loop = asyncio.get_running_loop()
    if before:
        writer.write(before)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(at_once)
            for byte in slowly:
                await asyncio.sleep(TRICKLE_EVERY)
                writer.write(bytes([byte]))
                await writer.drain()

    started = loop.time()
    sending = asyncio.create_task(send())
    answer = bytearray()
    answered_after = None
    try:
        async with asyncio.timeout(give_up):
            with contextlib.suppress(ConnectionError):
                while chunk := await reader.read(65536):
                    if answered_after is None:
                        answered_after = loop.time() - started
                    answer += chunk
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        writer.close()
    return Cut(bytes(answer), answered_after, loop.time() - started)


async def start(http_upstream, start_proxy, max_replay_body: str = "64KiB"):
    upstream = await http_upstream(lambda r: asyncio.sleep(0, web.Response(text="reached")))
    config = {
        "limits": LIMITS,
        "upstreams": {"primary": {"url": upstream.url}},
        "routes": [route(upstreams=("primary",), retry={"max_replay_body": max_replay_body})],
    }
    return upstream, await start_proxy(config)


@pytest.fixture
async def proxy(http_upstream, start_proxy):
    return await start(http_upstream, start_proxy)


@pytest.fixture(params=["held", "streamed"])
async def body_proxy(request, http_upstream, start_proxy):
    """A route whose body is held for replay (up to 64 KiB) or streamed (over 8 bytes)."""
    return await start(http_upstream, start_proxy, "64KiB" if request.param == "held" else "8B")


async def test_a_request_head_trickling_in_is_cut_at_the_header_deadline(proxy):
    upstream, url = proxy
    cut = await trickle(url, b"GET / HTTP/1.1\r\nHost: a\r\n", SLOW_HEAD)
    assert cut.answer == b""
    assert TIMEOUT - 0.1 <= cut.closed_after < TIMEOUT + 0.8
    assert upstream.hits == 0


async def test_the_header_deadline_restarts_after_each_answer_on_a_kept_alive_connection(proxy):
    upstream, url = proxy
    cut = await trickle(
        url,
        b"GET /second HTTP/1.1\r\nHost: a\r\n",
        SLOW_HEAD,
        before=b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    assert cut.answer == b""
    assert TIMEOUT - 0.1 <= cut.closed_after < TIMEOUT + 0.8
    assert [r["path_qs"] for r in upstream.requests] == ["/first"]


async def test_a_body_trickling_in_gets_408_at_the_body_deadline_and_the_connection_closes(
    body_proxy,
):
    upstream, url = body_proxy
    head = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n"
    cut = await trickle(url, head, SLOW_BODY)
    assert cut.answer.startswith(b"HTTP/1.1 408 ")
    assert b"Connection: close" in cut.answer
    assert cut.answered_after is not None
    assert TIMEOUT - 0.1 <= cut.answered_after < TIMEOUT + 0.8
    # then at most client_body_timeout of lingering, so the client reads the 408
    assert cut.closed_after < 2 * TIMEOUT + 0.8
    assert all(len(r["body"]) < 100 for r in upstream.requests)


async def test_a_chunked_body_trickling_in_gets_408_at_the_body_deadline(body_proxy):
    upstream, url = body_proxy
    head = b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    cut = await trickle(url, head, b"1\r\na\r\n" * 20 + b"0\r\n\r\n")
    assert cut.answer.startswith(b"HTTP/1.1 408 ")
    assert cut.answered_after is not None
    assert cut.answered_after < TIMEOUT + 0.8
    assert all(len(r["body"]) < 20 for r in upstream.requests)


async def test_ordinary_requests_keep_their_latency_while_50_clients_trickle(proxy):
    upstream, url = proxy
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    cuts: list[Cut] = []

    async def slow_client(n: int) -> None:
        """Trickle a head or a body, and start again each time the proxy cuts it."""
        while not stop.is_set():
            if n % 2:
                cuts.append(await trickle(url, b"GET / HTTP/1.1\r\nHost: a\r\n", SLOW_HEAD))
            else:
                head = b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n"
                cuts.append(await trickle(url, head, SLOW_BODY))

    async def timed(session: aiohttp.ClientSession) -> float:
        started = loop.time()
        async with session.get(f"{url}/ordinary") as response:
            assert response.status == 200
            await response.read()
        return loop.time() - started

    async with aiohttp.ClientSession() as session:
        baseline = [await timed(session) for _ in range(5)]
        slow = [asyncio.create_task(slow_client(n)) for n in range(50)]
        await asyncio.sleep(0.5)  # every slow client is connected and trickling
        latencies = []
        for _ in range(20):
            latencies.append(await timed(session))
            await asyncio.sleep(0.1)  # spread over 2 s: across the slow clients' cuts
        stop.set()
        await asyncio.gather(*slow)

    assert len(cuts) >= 50
    assert all(cut.closed_after < 2 * TIMEOUT + 0.8 for cut in cuts)
    assert max(latencies) < max(0.5, 10 * max(baseline)), (baseline, latencies)
    assert sum(r["path_qs"] == "/ordinary" for r in upstream.requests) == 25
