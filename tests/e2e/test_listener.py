"""The main listener as a raw client sees it: pipelined requests answered in order, a
refused request answered after the ones before it, Host rules, transfer codings, and a
client that leaves cancelling its upstream call."""

from __future__ import annotations

import asyncio

from aiohttp import web

from tests.conftest import raw_exchange, read_request_head, route


async def echo_path(request: web.Request) -> web.Response:
    return web.Response(text=f"path {request.path}")


async def one_upstream(http_upstream, start_proxy, handler=echo_path) -> str:
    upstream = await http_upstream(handler)
    config = {
        "upstreams": {"primary": {"url": upstream.url}},
        "routes": [route(upstreams=("primary",))],
    }
    return await start_proxy(config)


def answers(raw: bytes) -> list[tuple[int, bytes]]:
    """Split a stream of Content-Length framed answers into (status, body)."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        found.append((status, rest[:length]))
        raw = rest[length:]
    return found


async def test_pipelined_requests_are_answered_in_order(http_upstream, start_proxy):
    async def slow_first(request: web.Request) -> web.Response:
        if request.path == "/1":
            await asyncio.sleep(0.1)  # the first answer is ready last
        return await echo_path(request)

    proxy = await one_upstream(http_upstream, start_proxy, slow_first)
    requests = b"".join(
        b"GET /%d HTTP/1.1\r\nHost: a\r\n%s\r\n" % (n, b"Connection: close\r\n" if n == 3 else b"")
        for n in (1, 2, 3)
    )
    raw = await raw_exchange(proxy, requests)
    assert answers(raw) == [(200, b"path /1"), (200, b"path /2"), (200, b"path /3")]


async def test_a_malformed_request_after_a_good_one_is_refused_after_its_answer(
    http_upstream, start_proxy
):
    proxy = await one_upstream(http_upstream, start_proxy)
    raw = await raw_exchange(
        proxy, b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\nGET /bad HTTP/1.1\r\nHost a\r\n\r\n"
    )
    assert [status for status, _ in answers(raw)] == [200, 400]
    assert answers(raw)[0][1] == b"path /ok"


async def test_host_must_be_there_once_on_http_1_1(http_upstream, start_proxy):
    proxy = await one_upstream(http_upstream, start_proxy)
    missing = await raw_exchange(proxy, b"GET /x HTTP/1.1\r\n\r\n")
    twice = await raw_exchange(proxy, b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    old = await raw_exchange(proxy, b"GET /x HTTP/1.0\r\n\r\n")
    assert [answers(raw)[0][0] for raw in (missing, twice, old)] == [400, 400, 200]


async def test_only_the_chunked_transfer_coding_is_accepted(http_upstream, start_proxy):
    upstream = await http_upstream(echo_path)
    config = {
        "upstreams": {"primary": {"url": upstream.url}},
        "routes": [route(upstreams=("primary",))],
    }
    proxy = await start_proxy(config)
    raw = await raw_exchange(
        proxy, b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
    )
    assert answers(raw)[0][0] == 400
    assert upstream.hits == 0


async def test_a_client_that_leaves_cancels_the_upstream_call(raw_upstream, start_proxy):
    arrived, upstream_closed = asyncio.Event(), asyncio.Event()

    async def generating(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        arrived.set()
        if await reader.read(1) == b"":  # the proxy closed its side: the call is over
            upstream_closed.set()

    upstream = await raw_upstream(generating)
    config = {
        "upstreams": {"primary": {"url": upstream.url}},
        "routes": [route(upstreams=("primary",))],
    }
    proxy = await start_proxy(config)
    host, port = proxy.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
    await writer.drain()
    await asyncio.wait_for(arrived.wait(), 2)
    writer.close()
    await asyncio.wait_for(upstream_closed.wait(), 1)  # within a second of the client leaving
