"""Bad input gets the right 4xx from the proxy itself and never reaches an upstream
(docs/configuration.md, "Limits and bad input")."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tests.conftest import raw_exchange, route

LIMITS = {
    "max_request_line": "1KiB",
    "max_header_size": "2KiB",
    "max_headers": 20,
    "max_body": "64KiB",
    "client_body_timeout": "200ms",
    "client_header_timeout": "300ms",
}


@pytest.fixture
async def guarded(http_upstream, start_proxy):
    upstream = await http_upstream(lambda r: asyncio.sleep(0, web.Response(text="reached")))
    config = {
        "limits": LIMITS,
        "upstreams": {"primary": {"url": upstream.url}},
        "routes": [route(upstreams=("primary",), retry={"max_replay_body": "1KiB"})],
    }
    return upstream, await start_proxy(config)


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


async def test_request_line_over_the_limit_is_414(guarded):
    upstream, proxy = guarded
    raw = await raw_exchange(proxy, b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status_of(raw) == 414
    assert b"X-Failover-Source: none" in raw
    assert upstream.hits == 0


async def test_header_over_the_limit_is_431(guarded):
    upstream, proxy = guarded
    raw = await raw_exchange(
        proxy, b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 3000 + b"\r\n\r\n"
    )
    assert status_of(raw) == 431
    assert upstream.hits == 0


async def test_too_many_headers_is_431(guarded):
    upstream, proxy = guarded
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(40))
    raw = await raw_exchange(proxy, b"GET / HTTP/1.1\r\nHost: a\r\n" + headers + b"\r\n")
    assert status_of(raw) == 431
    assert upstream.hits == 0


async def test_declared_body_over_the_limit_is_413_before_any_upstream_call(guarded):
    upstream, proxy = guarded
    request = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100
    raw = await raw_exchange(proxy, request)
    assert status_of(raw) == 413
    assert upstream.hits == 0


async def test_chunked_body_growing_over_the_limit_is_413(guarded):
    upstream, proxy = guarded
    chunk = b"z" * 16384
    chunks = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 6 + b"0\r\n\r\n"
    raw = await raw_exchange(
        proxy, b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
    )
    assert status_of(raw) == 413
    assert upstream.hits == 0


async def test_body_that_stalls_is_408(guarded):
    upstream, proxy = guarded
    request = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc"
    raw = await raw_exchange(proxy, request)
    assert status_of(raw) == 408
    assert upstream.hits == 0


async def test_header_that_never_ends_gets_the_connection_closed(guarded):
    upstream, proxy = guarded
    loop = asyncio.get_running_loop()
    started = loop.time()
    raw = await raw_exchange(proxy, b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ", timeout=5)
    assert raw == b""
    assert loop.time() - started < 3
    assert upstream.hits == 0


@pytest.mark.parametrize(
    "head",
    [
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;\x00ext\r\nhello\r\n0\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-Bad\r\n\r\n",
        b"GET /x HTTP/1.1\nHost: a\n\n",
    ],
)
async def test_smuggling_vectors_are_refused_not_forwarded(head, guarded):
    upstream, proxy = guarded
    raw = await raw_exchange(proxy, head + b"hello")
    assert status_of(raw) == 400
    assert upstream.hits == 0


async def test_connect_is_refused(guarded):
    upstream, proxy = guarded
    raw = await raw_exchange(proxy, b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n")
    assert status_of(raw) in (400, 405)
    assert upstream.hits == 0
