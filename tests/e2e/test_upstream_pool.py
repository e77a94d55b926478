"""The client side of talking to upstreams (proxy.upstreams.pool/connection/response),
over real loopback sockets: keep-alive reuse and when a connection must not be reused,
stale pooled connections, the framing of answers (HEAD, 1xx, 204/304, chunked with
trailers, close-delimited), broken HTTP, timeouts, the connection bound, backpressure,
header bytes, and the bytes of a request."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from proxy.upstreams.connection import UpstreamConnection
from proxy.upstreams.pool import Pool
from proxy.upstreams.response import (
    HIGH_WATER,
    LAST_CHUNK,
    BadAnswer,
    BodyCut,
    ConnectFailed,
    ConnectionLost,
    ReadTimedOut,
    UpstreamResponse,
    chunk,
    request_head,
)
from tests.conftest import LOOPBACK, Upstream

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
TIMEOUT = 0.3  # the read timeout of the timeout tests


# --- helpers -------------------------------------------------------------------------


@pytest.fixture
async def make_pool() -> AsyncIterator[Callable[..., Pool]]:
    """A pool to an upstream's URL; every pool is closed at the end of the test."""
    pools: list[Pool] = []

    def make(url: str, *, max_connections: int = 4, connect_timeout: float = 2.0) -> Pool:
        host, port = url.removeprefix("http://").split(":")
        pool = Pool(
            host, int(port), max_connections=max_connections, connect_timeout=connect_timeout
        )
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()


def head_of(method: str = "GET", target: bytes = b"/", *extra: tuple[str, str]) -> bytes:
    return request_head(method, target, [("Host", "upstream.test"), *extra])


async def send(
    pool: Pool,
    method: str = "GET",
    *,
    body: bytes | AsyncIterator[bytes] | None = None,
    headers: tuple[tuple[str, str], ...] = (),
    read_timeout: float = 2.0,
    may_resend: bool = True,
    chunked: bool = False,
) -> UpstreamResponse:
    head = head_of(method, b"/", *headers)
    async with asyncio.timeout(5):
        return await pool.exchange(
            method, head, body, read_timeout=read_timeout, may_resend=may_resend, chunked=chunked
        )


async def fetch(pool: Pool, method: str = "GET", **kwargs: object) -> tuple[int, bytes]:
    """One exchange read to the end and released: (status, body)."""
    response = await send(pool, method, **kwargs)  # type: ignore[arg-type]
    try:
        async with asyncio.timeout(5):
            body = await response.read()
    finally:
        response.release()
    return response.status, body


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """A request's head and body (by Content-Length or chunked); None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        return head + await reader.readuntil(b"0\r\n\r\n")
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return head + await reader.readexactly(int(line.split(b":")[1]))
    return head


Answer = Callable[[int, int, bytes], Awaitable[bytes | None]]


class Scripted:
    """A keep-alive upstream: each request (connection number, request number on that
    connection, its bytes) gets ``answer``'s bytes; ``None`` closes the connection
    without a byte. Counts the connections open at once."""

    def __init__(self, answer: bytes | Answer = OK, *, delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.requests: list[bytes] = []
        self.connections = 0
        self.open = 0
        self.max_open = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            index = 0
            while (request := await read_request(reader)) is not None:
                self.requests.append(request)
                index += 1
                if self.delay:
                    await asyncio.sleep(self.delay)
                if isinstance(self.answer, bytes):
                    answer: bytes | None = self.answer
                else:
                    answer = await self.answer(number, index, request)
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
        finally:
            self.open -= 1


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def only_connection(pool: Pool) -> UpstreamConnection:
    (conn,) = pool._open
    return conn


# --- keep-alive reuse ----------------------------------------------------------------


async def test_two_sequential_exchanges_share_one_connection(raw_upstream, make_pool) -> None:
    script = Scripted()
    upstream = await raw_upstream(script)
    pool = make_pool(upstream.url)

    assert await fetch(pool) == (200, b"hello")
    assert pool.idle == 1
    assert await fetch(pool, "POST", body=b"data", headers=(("Content-Length", "4"),)) == (
        200,
        b"hello",
    )

    assert upstream.connections == 1
    assert pool.size == 1 and pool.idle == 1
    assert script.requests[1].endswith(b"\r\n\r\ndata")


async def test_aiohttp_upstream_keeps_the_connection(http_upstream, make_pool) -> None:
    peers: list[object] = []

    async def handler(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        return web.Response(body=b"from aiohttp")

    upstream: Upstream = await http_upstream(handler)
    pool = make_pool(upstream.url)
    for _ in range(3):
        assert await fetch(pool) == (200, b"from aiohttp")
    assert len(set(peers)) == 1
    assert upstream.hits == 3


@pytest.mark.parametrize("how", ["unread-release", "partly-read-release", "read-close"])
async def test_an_answer_not_read_to_the_end_is_not_reused(raw_upstream, make_pool, how) -> None:
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 600000\r\n\r\n" + b"b" * 600_000
    upstream = await raw_upstream(Scripted(big))
    pool = make_pool(upstream.url)

    response = await send(pool)
    if how == "partly-read-release":
        assert await response.read_chunk()
        response.release()
    elif how == "unread-release":
        await asyncio.sleep(0.05)
        response.release()
    else:
        assert len(await response.read()) == 600_000
        response.close()
    assert pool.size == 0 and pool.idle == 0

    status, body = await fetch(pool)
    assert (status, len(body)) == (200, 600_000)
    assert upstream.connections == 2


# --- stale pooled connections --------------------------------------------------------


@pytest.mark.parametrize(("method", "may_resend"), [("GET", True), ("POST", False)])
async def test_a_connection_the_upstream_closed_while_idle_is_not_used(
    raw_upstream, make_pool, method, may_resend
) -> None:
    async def closer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await read_request(reader) is not None
        writer.write(OK)
        await writer.drain()
        # the upstream's keep-alive timeout: it closes while the connection is idle

    upstream = await raw_upstream(closer)
    pool = make_pool(upstream.url)
    assert await fetch(pool) == (200, b"hello")
    await until(lambda: pool.idle == 0)  # its close is seen
    assert pool.size == 0

    assert await fetch(pool, method, may_resend=may_resend) == (200, b"hello")
    assert upstream.connections == 2


class DiesOnSecond:
    """The first connection answers its first request, then reads the second and closes
    without a byte (or after ``partial``); later connections answer everything."""

    def __init__(self, partial: bytes = b"") -> None:
        self.partial = partial
        self.requests: list[tuple[int, bytes]] = []
        self.connections = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        while (request := await read_request(reader)) is not None:
            self.requests.append((number, request))
            if number == 1 and len(self.requests) == 2:
                if self.partial:
                    writer.write(self.partial)
                    await writer.drain()
                return  # the fixture closes the connection
            writer.write(OK)
            await writer.drain()


async def test_a_reused_connection_dying_before_the_answer_is_resent_when_allowed(
    raw_upstream, make_pool
) -> None:
    script = DiesOnSecond()
    upstream = await raw_upstream(script)
    pool = make_pool(upstream.url)
    assert await fetch(pool) == (200, b"hello")

    assert await fetch(pool, "PUT", body=b"x", headers=(("Content-Length", "1"),)) == (
        200,
        b"hello",
    )
    assert upstream.connections == 2
    assert [number for number, _ in script.requests] == [1, 1, 2]
    assert script.requests[1][1] == script.requests[2][1]  # the same bytes, sent again


async def test_a_reused_connection_dying_is_reported_when_not_resendable(
    raw_upstream, make_pool
) -> None:
    script = DiesOnSecond()
    upstream = await raw_upstream(script)
    pool = make_pool(upstream.url)
    assert await fetch(pool) == (200, b"hello")

    with pytest.raises(ConnectionLost) as caught:
        await send(pool, "POST", body=b"x", headers=(("Content-Length", "1"),), may_resend=False)
    assert caught.value.reused is True
    await asyncio.sleep(0.05)
    assert len(script.requests) == 2  # the POST went upstream once
    assert upstream.connections == 1
    assert pool.size == 0


async def test_a_streamed_body_is_never_resent(raw_upstream, make_pool) -> None:
    script = DiesOnSecond()
    upstream = await raw_upstream(script)
    pool = make_pool(upstream.url)
    assert await fetch(pool) == (200, b"hello")

    async def body() -> AsyncIterator[bytes]:
        yield b"streamed"

    with pytest.raises(ConnectionLost):
        await send(
            pool,
            "PUT",
            body=body(),
            headers=(("Transfer-Encoding", "chunked"),),
            chunked=True,
            may_resend=True,
        )
    await asyncio.sleep(0.05)
    assert len(script.requests) == 2
    assert upstream.connections == 1


async def test_a_reused_connection_dying_mid_answer_is_not_resent(raw_upstream, make_pool) -> None:
    """The upstream began to answer: it read the request, so it is not sent again."""
    script = DiesOnSecond(partial=b"HTTP/1.1 200 OK\r\nContent-")
    upstream = await raw_upstream(script)
    pool = make_pool(upstream.url)
    assert await fetch(pool) == (200, b"hello")

    with pytest.raises(ConnectionLost) as caught:
        await send(pool, "GET", may_resend=True)
    assert caught.value.reused is False
    await asyncio.sleep(0.05)
    assert len(script.requests) == 2
    assert upstream.connections == 1


# --- Connection: close, HTTP/1.0, close-delimited bodies -----------------------------


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello", id="close"
        ),
        pytest.param(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello", id="http-1.0"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 5\r\n\r\nhello",
            id="close-in-list",
        ),
    ],
)
async def test_a_connection_the_upstream_will_close_is_not_reused(
    raw_upstream, make_pool, answer
) -> None:
    # this upstream would even keep the connection open: the pool must not rely on it
    upstream = await raw_upstream(Scripted(answer))
    pool = make_pool(upstream.url)
    response = await send(pool)
    assert await response.read() == b"hello"
    assert response.complete
    response.release()
    assert pool.size == 0

    assert await fetch(pool) == (200, b"hello")
    assert upstream.connections == 2


async def test_a_close_delimited_body_is_read_complete(raw_upstream, make_pool) -> None:
    body = bytes(range(256)) * 400

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
        for start in range(0, len(body), 25_600):
            writer.write(body[start : start + 25_600])
            await writer.drain()
            await asyncio.sleep(0.002)
        # the fixture closes: the end of the body

    upstream = await raw_upstream(script)
    pool = make_pool(upstream.url)
    response = await send(pool)
    assert response.content_length is None and not response.chunked
    assert await response.read() == body
    assert response.complete
    response.release()
    assert pool.size == 0


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
async def test_a_close_delimited_body_cut_by_a_reset_is_cut(
    raw_upstream, make_pool, version
) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/" + version + b" 200 OK\r\n\r\n" + b"x" * 1000)
        await writer.drain()
        await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # with SO_LINGER 0: a TCP reset, not a FIN

    upstream = await raw_upstream(script)
    pool = make_pool(upstream.url)
    response = await send(pool)
    with pytest.raises(BodyCut):
        await response.read()
    assert not response.complete
    response.release()
    assert pool.size == 0


async def test_an_asyncio_abort_of_a_close_delimited_body_looks_like_its_end(
    raw_upstream, make_pool
) -> None:
    """asyncio's ``transport.abort()`` closes the socket without SO_LINGER 0, so the
    kernel sends a FIN, not a reset: for a close-delimited body this is its end, and a
    cut cannot be told from a complete body (only a real RST can: see the test above)."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 1000)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()

    upstream = await raw_upstream(script)
    pool = make_pool(upstream.url)
    response = await send(pool)
    assert await response.read() == b"x" * 1000
    assert response.complete
    response.release()


# --- answers without a body ----------------------------------------------------------


async def test_head_answer_is_complete_at_once_and_the_pool_goes_on(
    raw_upstream, make_pool
) -> None:
    async def answer(conn: int, index: int, request: bytes) -> bytes:
        if request.startswith(b"HEAD "):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
        return b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nget"

    upstream = await raw_upstream(Scripted(answer))
    pool = make_pool(upstream.url)

    response = await send(pool, "HEAD")
    assert response.complete
    assert response.content_length == 100
    assert await response.read() == b""
    response.release()
    assert pool.size == 0  # llhttp would read the next answer as this one's body

    assert await fetch(pool) == (200, b"get")
    assert await fetch(pool) == (200, b"get")
    assert upstream.connections == 2


async def test_interim_answers_are_skipped(raw_upstream, make_pool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            for part in (
                b"HTTP/1.1 100 Continue\r\n\r\n",
                b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nX-Final: yes\r\nContent-Length: 2\r\n\r\nok",
            ):
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(0.01)

    upstream = await raw_upstream(script)
    pool = make_pool(upstream.url)
    response = await send(pool)
    assert (response.status, response.reason) == (200, "OK")
    assert response.headers["X-Final"] == "yes"
    assert "Link" not in response.headers
    assert response.pairs == [("X-Final", "yes"), ("Content-Length", "2")]
    assert await response.read() == b"ok"
    response.release()

    assert await fetch(pool) == (200, b"ok")
    assert upstream.connections == 1


async def test_interim_answers_in_one_packet_are_skipped(raw_upstream, make_pool) -> None:
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nnew"
    )
    upstream = await raw_upstream(Scripted(answer))
    pool = make_pool(upstream.url)
    assert await fetch(pool) == (201, b"new")
    assert await fetch(pool) == (201, b"new")
    assert upstream.connections == 1


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
async def test_204_and_304_have_no_body_whatever_their_content_length(
    raw_upstream, make_pool, status
) -> None:
    async def answer(conn: int, index: int, request: bytes) -> bytes:
        if index == 1:
            return b"HTTP/1.1 " + status + b'\r\nContent-Length: 10\r\nETag: "e"\r\n\r\n'
        return OK

    upstream = await raw_upstream(Scripted(answer))
    pool = make_pool(upstream.url)
    response = await send(pool)
    assert response.status == int(status[:3])
    assert response.complete
    assert await response.read() == b""
    response.release()

    # the next answer is not taken for a body: the connection goes on
    assert await fetch(pool) == (200, b"hello")
    assert upstream.connections == 1


# --- chunked answers, cut bodies ------------------------------------------------------


async def test_a_chunked_answer_with_trailers(raw_upstream, make_pool) -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: abc\r\nX-Other: 1\r\n\r\n"
    )
    upstream = await raw_upstream(Scripted(answer))
    pool = make_pool(upstream.url)
    response = await send(pool)
    assert response.chunked and response.content_length is None
    assert await response.read() == b"hello world"
    assert response.complete
    assert "X-Sum" not in response.headers and "X-Other" not in response.headers
    assert [name for name, _ in response.pairs] == ["Transfer-Encoding", "Trailer"]
    response.release()

    assert await fetch(pool) == (200, b"hello world")
    assert upstream.connections == 1


async def test_a_chunked_answer_arriving_slowly(raw_upstream, make_pool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"a", b"bc", b"def"):
            writer.write(chunk(piece))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(LAST_CHUNK)
        await writer.drain()
        await reader.read()

    upstream = await raw_upstream(script)
    pool = make_pool(upstream.url)
    response = await send(pool)
    pieces = []
    while piece := await response.readany():
        pieces.append(piece)
    assert b"".join(pieces) == b"abcdef"
    assert len(pieces) >= 2
    response.release()
    assert pool.idle == 1


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10, id="length"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", id="chunked"
        ),
    ],
)
async def test_a_body_cut_short_by_the_upstream_closing(raw_upstream, make_pool, answer) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(0.02)  # then the fixture closes: a clean FIN mid-body

    upstream = await raw_upstream(script)
    pool = make_pool(upstream.url)
    response = await send(pool)
    with pytest.raises(BodyCut):
        await response.read()
    assert not response.complete
    response.release()
    assert pool.size == 0


# --- broken HTTP ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"HTPP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", id="garbage-status-line"),
        pytest.param(b"hello there\r\n\r\n", id="not-http"),
        pytest.param(b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", id="four-digit-status"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\nContent-Length: 0\r\n\r\n", id="ctl"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX-Bad: a\x00b\r\nContent-Length: 0\r\n\r\n", id="nul"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX Bad: a\r\nContent-Length: 0\r\n\r\n", id="bad-name"),
        pytest.param(b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", id="bare-lf"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX-A: b\nContent-Length: 0\r\n\r\n", id="bare-lf-header"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
            id="two-lengths",
        ),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", id="negative-length"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            id="length-and-chunked",
        ),
    ],
)
async def test_broken_http_is_a_bad_answer(raw_upstream, make_pool, answer) -> None:
    upstream = await raw_upstream(Scripted(answer))
    pool = make_pool(upstream.url)
    with pytest.raises(BadAnswer):
        await send(pool)
    assert pool.size == 0
    assert upstream.connections == 1


async def test_broken_chunk_framing_is_a_bad_answer_from_read(raw_upstream, make_pool) -> None:
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"
    upstream = await raw_upstream(Scripted(answer))
    pool = make_pool(upstream.url)
    response = await send(pool)
    with pytest.raises(BadAnswer):
        await response.read()
    response.release()
    assert pool.size == 0


async def test_bytes_after_a_complete_answer_spoil_the_connection(raw_upstream, make_pool) -> None:
    """An upstream answering twice to one request is out of step: the first answer is
    read intact, the connection is never reused."""
    stray = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    upstream = await raw_upstream(Scripted(OK + stray))
    pool = make_pool(upstream.url)
    assert await fetch(pool) == (200, b"hello")
    assert pool.size == 0
    assert await fetch(pool) == (200, b"hello")
    assert upstream.connections == 2


# --- timeouts and refusals -----------------------------------------------------------


async def test_an_upstream_that_never_answers_times_out(raw_upstream, make_pool) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()

    upstream = await raw_upstream(silent)
    pool = make_pool(upstream.url)
    start = time.monotonic()
    with pytest.raises(ReadTimedOut):
        await send(pool, read_timeout=TIMEOUT)
    assert TIMEOUT * 0.9 <= time.monotonic() - start < TIMEOUT + 0.5
    assert pool.size == 0


async def test_an_upstream_stalling_mid_body_times_out(raw_upstream, make_pool) -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        await writer.drain()
        await reader.read()

    upstream = await raw_upstream(stall)
    pool = make_pool(upstream.url)
    response = await send(pool, read_timeout=TIMEOUT)
    assert await response.read_chunk() == b"x" * 10
    start = time.monotonic()
    with pytest.raises(ReadTimedOut):
        await response.read_chunk()
    assert TIMEOUT * 0.9 <= time.monotonic() - start < TIMEOUT + 0.5
    response.release()
    assert pool.size == 0


async def test_a_slow_but_steady_body_does_not_time_out(raw_upstream, make_pool) -> None:
    """The read timeout is silence between pieces, not the whole body's time."""

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n")
        for byte in b"abcdef":
            await asyncio.sleep(0.1)
            writer.write(bytes([byte]))
            await writer.drain()
        await reader.read()

    upstream = await raw_upstream(drip)
    pool = make_pool(upstream.url)
    assert await fetch(pool, read_timeout=0.25) == (200, b"abcdef")


async def test_a_refused_connection_fails_to_connect(make_pool) -> None:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port = sock.getsockname()[1]
    pool = make_pool(f"http://{LOOPBACK}:{port}")
    with pytest.raises(ConnectFailed) as caught:
        await send(pool)
    assert isinstance(caught.value.os_error, ConnectionRefusedError)
    assert pool.size == 0
    with pytest.raises(ConnectFailed):
        await send(pool)  # the slot was given back
    assert pool.size == 0


# --- the connection bound ------------------------------------------------------------


async def test_max_connections_bounds_concurrent_exchanges(raw_upstream, make_pool) -> None:
    script = Scripted(delay=0.05)
    upstream = await raw_upstream(script)
    pool = make_pool(upstream.url, max_connections=2)

    results = await asyncio.gather(*(fetch(pool) for _ in range(5)))
    assert results == [(200, b"hello")] * 5
    assert script.max_open <= 2
    assert upstream.connections == 2
    assert len(script.requests) == 5
    assert pool.size == 2


async def test_a_cancelled_waiter_passes_its_turn_on(raw_upstream, make_pool) -> None:
    upstream = await raw_upstream(Scripted())
    pool = make_pool(upstream.url, max_connections=1)
    held = await send(pool)
    assert await held.read() == b"hello"

    first = asyncio.create_task(fetch(pool))
    second = asyncio.create_task(fetch(pool))
    await asyncio.sleep(0.02)  # both wait for the one connection
    held.release()  # wakes the first waiter...
    first.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    async with asyncio.timeout(2):
        assert await second == (200, b"hello")
    assert upstream.connections == 1


# --- backpressure --------------------------------------------------------------------


async def test_a_slow_reader_pauses_the_upstream_and_gets_the_whole_body(
    raw_upstream, make_pool
) -> None:
    body = bytes(range(256)) * (10 * 1024 * 1024 // 256)
    written = asyncio.Event()

    async def fast(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        view = memoryview(body)
        for start in range(0, len(body), 256 * 1024):
            writer.write(view[start : start + 256 * 1024])
            await writer.drain()
        written.set()
        await reader.read()

    upstream = await raw_upstream(fast)
    pool = make_pool(upstream.url)
    response = await send(pool)
    conn = only_connection(pool)

    await asyncio.sleep(0.2)  # nobody reads: the connection stops reading the socket
    assert conn.reading_paused
    assert not written.is_set()  # the upstream's drain blocks
    assert response._queued <= HIGH_WATER + 256 * 1024

    received = []
    for _ in range(5):  # a slow reader
        received.append(await response.read_chunk())
        await asyncio.sleep(0.01)
    assert response._queued <= HIGH_WATER + 256 * 1024
    received.append(await response.read())
    assert b"".join(received) == body
    assert response.complete
    assert written.is_set()
    response.release()
    assert pool.idle == 1
    assert not conn.reading_paused


# --- header bytes --------------------------------------------------------------------


async def test_obs_text_in_answer_headers_arrives_byte_for_byte(raw_upstream, make_pool) -> None:
    value = b"caf\xe9 \x80\xff\ttab end"
    answer = b"HTTP/1.1 200 Fin\xe9\r\nX-Obs: " + value + b"\r\nContent-Length: 0\r\n\r\n"
    upstream = await raw_upstream(Scripted(answer))
    pool = make_pool(upstream.url)
    response = await send(pool)
    assert ("X-Obs", value.decode("latin-1")) in response.pairs
    assert response.headers["X-Obs"] == value.decode("latin-1")
    assert response.headers["x-obs"].encode("latin-1") == value
    assert response.reason.encode("latin-1") == b"Fin\xe9"
    response.release()


async def test_repeated_headers_keep_their_order_and_case(raw_upstream, make_pool) -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Mixed-CASE: v\r\nset-cookie: b=2\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    upstream = await raw_upstream(Scripted(answer))
    pool = make_pool(upstream.url)
    response = await send(pool)
    assert response.pairs[:3] == [
        ("Set-Cookie", "a=1"),
        ("X-Mixed-CASE", "v"),
        ("set-cookie", "b=2"),
    ]
    assert response.headers.getall("Set-Cookie") == ["a=1", "b=2"]
    response.release()


# --- the request's bytes -------------------------------------------------------------


def test_request_head_bytes() -> None:
    head = request_head(
        "POST",
        b"/a/b?c=d%20e",
        [("Host", "example.test:8080"), ("X-Latin", "caf\xe9"), ("Content-Length", "3")],
    )
    assert head == (
        b"POST /a/b?c=d%20e HTTP/1.1\r\n"
        b"Host: example.test:8080\r\n"
        b"X-Latin: caf\xe9\r\n"
        b"Content-Length: 3\r\n"
        b"\r\n"
    )
    assert request_head("GET", b"*", []) == b"GET * HTTP/1.1\r\n\r\n"
    assert chunk(b"0123456789abcdef!") == b"11\r\n0123456789abcdef!\r\n"
    assert LAST_CHUNK == b"0\r\n\r\n"


async def test_the_upstream_receives_exactly_the_request_bytes(raw_upstream, make_pool) -> None:
    script = Scripted()
    upstream = await raw_upstream(script)
    pool = make_pool(upstream.url)
    head = head_of("PUT", b"/x?y=\xff", ("X-Obs", "\x80\xff"), ("Content-Length", "4"))
    response = await pool.exchange("PUT", head, b"body", read_timeout=2, may_resend=False)
    assert await response.read() == b"hello"
    response.release()
    assert script.requests == [head + b"body"]


async def test_a_streamed_body_arrives_as_valid_chunked_framing(raw_upstream, make_pool) -> None:
    script = Scripted()
    upstream = await raw_upstream(script)
    pool = make_pool(upstream.url)

    async def body() -> AsyncIterator[bytes]:
        for piece in (b"hello", b"", b" ", b"x" * 300):
            await asyncio.sleep(0.005)
            yield piece

    status, _ = await fetch(
        pool, "POST", body=body(), headers=(("Transfer-Encoding", "chunked"),), chunked=True
    )
    assert status == 200
    (request,) = script.requests
    framing = request.split(b"\r\n\r\n", 1)[1]
    assert framing == b"5\r\nhello\r\n1\r\n \r\n12c\r\n" + b"x" * 300 + b"\r\n0\r\n\r\n"
    assert await fetch(pool) == (200, b"hello")  # the request ended cleanly: reused
    assert upstream.connections == 1


async def test_a_streamed_chunked_body_reaches_an_aiohttp_upstream(
    http_upstream, make_pool
) -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=upstream.requests[-1]["body"])

    upstream: Upstream = await http_upstream(echo)
    pool = make_pool(upstream.url)

    async def body() -> AsyncIterator[bytes]:
        for index in range(50):
            yield b"%04d," % index

    status, echoed = await fetch(
        pool, "POST", body=body(), headers=(("Transfer-Encoding", "chunked"),), chunked=True
    )
    expected = b"".join(b"%04d," % index for index in range(50))
    assert (status, echoed) == (200, expected)
    assert upstream.requests[0]["headers"]["Transfer-Encoding"] == "chunked"


async def test_an_early_answer_stops_the_body_and_the_connection(raw_upstream, make_pool) -> None:
    """The upstream answers (413) before the streamed body is over: the rest is not
    sent, and the connection, whose request was never finished, is not reused."""
    sent: list[bytes] = []

    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\n\r\nbig")
        await writer.drain()
        await reader.read()

    upstream = await raw_upstream(early)
    pool = make_pool(upstream.url)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(100):
            sent.append(b"x" * 1000)
            yield sent[-1]
            await asyncio.sleep(0.01)

    status, answer = await fetch(
        pool, "POST", body=body(), headers=(("Transfer-Encoding", "chunked"),), chunked=True
    )
    assert (status, answer) == (413, b"big")
    assert len(sent) < 100
    assert pool.size == 0


async def test_an_answer_arriving_while_the_body_ends_keeps_no_stray_timer(
    raw_upstream, make_pool
) -> None:
    """The answer's head came before the streamed body's end: reading it slowly is not
    cut by a read timeout armed for a head that is already here."""
    big = b"y" * 1_000_000

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
            await writer.drain()
            await reader.readuntil(b"0\r\n\r\n")

    upstream = await raw_upstream(script)
    pool = make_pool(upstream.url)

    async def body() -> AsyncIterator[bytes]:
        yield b"last piece"
        await asyncio.sleep(0.1)  # meanwhile the answer arrives

    response = await send(
        pool,
        "POST",
        body=body(),
        headers=(("Transfer-Encoding", "chunked"),),
        chunked=True,
        read_timeout=TIMEOUT,
    )
    await asyncio.sleep(TIMEOUT + 0.1)  # a slow client: the reader has not started
    assert await response.read() == big
    response.release()
    assert pool.idle == 1
