"""Fake streaming upstreams, and clients that time what they read: for the stream tests
(tests/e2e/test_streams.py).

A :class:`ScriptedStream` is an aiohttp handler that writes its chunks (SSE events,
NDJSON lines, comments) one by one on a schedule with ``web.StreamResponse``, then ends,
hangs or cuts the connection, and records when it wrote each chunk and when it saw its
peer close. The upstream, the in-process proxy and the test share one event loop, so
``loop.time()`` on both sides is one clock: a latency is a plain subtraction.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

import aiohttp
from aiohttp import web

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
PING = b": ping\n\n"
POLL = 0.01  # how often a waiting upstream looks whether its peer has gone


def sse(data: object, *, event: str | None = None) -> bytes:
    """One complete SSE event; ``data`` that is not a string is sent as JSON."""
    text = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


def ndjson(value: object) -> bytes:
    return json.dumps(value).encode() + b"\n"


def numbered_sse(count: int, source: str = "up") -> list[bytes]:
    return [sse({"n": n, "from": source}) for n in range(count)]


def numbered_ndjson(count: int, source: str = "up") -> list[bytes]:
    return [ndjson({"n": n, "from": source}) for n in range(count)]


class Then(Enum):
    """What a scripted stream does after its last chunk."""

    END = "end"  # the terminating zero-length chunk: a clean end
    HANG = "hang"  # nothing more, connection open, until the peer leaves (or hang_for)
    CUT = "cut"  # when the next chunk is due: the connection is aborted (RST), unterminated


@dataclass
class Call:
    """What one request to a scripted stream saw and did, in loop time."""

    started: float
    sent: list[float] = field(default_factory=list)  # just before each chunk was written
    peer_closed_at: float | None = None  # when the proxy's side of the connection went
    ended: bool = False  # the terminating chunk was written


class ScriptedStream:
    """An upstream that answers every request with ``chunks``, the first at once and
    then one every ``interval`` seconds, then does ``then``."""

    def __init__(
        self,
        chunks: Sequence[bytes],
        *,
        interval: float = 0.1,
        content_type: str = SSE,
        headers: dict[str, str] | None = None,
        then: Then = Then.END,
        hang_for: float = 5.0,
    ) -> None:
        self.chunks = list(chunks)
        self.interval = interval
        self.content_type = content_type
        self.headers = headers or {}
        self.then = then
        self.hang_for = hang_for
        self.calls: list[Call] = []

    @property
    def call(self) -> Call:
        """The only call, for tests that make one request."""
        (only,) = self.calls
        return only

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        call = Call(started=loop.time())
        self.calls.append(call)
        response = web.StreamResponse(headers={"Content-Type": self.content_type, **self.headers})
        await response.prepare(request)
        try:
            for index, chunk in enumerate(self.chunks):
                if index and not await stay(request, self.interval):
                    call.peer_closed_at = loop.time()
                    return response
                call.sent.append(loop.time())
                await response.write(chunk)
            if self.then is Then.HANG and not await stay(request, self.hang_for):
                call.peer_closed_at = loop.time()
            elif self.then is Then.CUT and await stay(request, self.interval):
                assert request.transport is not None
                request.transport.abort()
            elif self.then is Then.END:
                await response.write_eof()
                call.ended = True
        except ConnectionError:
            call.peer_closed_at = loop.time()
        return response


async def stay(request: web.Request, seconds: float) -> bool:
    """Wait ``seconds`` while the peer stays connected: False as soon as it leaves."""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while loop.time() < until:
        if peer_gone(request):
            return False
        await asyncio.sleep(min(POLL, max(0.0, until - loop.time())))
    return not peer_gone(request)


def peer_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


@dataclass
class Received:
    """What a client read: each complete piece (an event, a line) with the loop time it
    arrived, and how the body ended (None: cleanly; else the exception that ended it)."""

    pieces: list[bytes] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)
    error: BaseException | None = None
    ended: float = 0.0  # when the body ended, cleanly or not

    @property
    def clean(self) -> bool:
        return self.error is None

    def json(self) -> list[object]:
        """The JSON data of each piece: an SSE event's ``data:`` field or an NDJSON line."""
        values: list[object] = []
        for piece in self.pieces:
            lines = piece.decode().splitlines()
            data = [
                line.removeprefix("data:").strip() for line in lines if line.startswith("data:")
            ]
            values.append(json.loads("\n".join(data) if data else piece))
        return values


async def read_pieces(
    response: aiohttp.ClientResponse, separator: bytes = b"\n\n", timeout: float = 5.0
) -> Received:
    """Read the body as it arrives, split on ``separator``; never raises for a broken
    body (a payload error or the timeout is recorded in ``error``)."""
    loop = asyncio.get_running_loop()
    received, pending = Received(), b""
    try:
        async with asyncio.timeout(timeout):
            async for data in response.content.iter_any():
                now = loop.time()
                pending += data
                while separator in pending:
                    piece, pending = pending.split(separator, 1)
                    received.pieces.append(piece + separator)
                    received.arrived.append(now)
    except (aiohttp.ClientError, TimeoutError) as exc:
        received.error = exc
    received.ended = loop.time()
    return received


# --- a raw HTTP/1.1 client, for the framing on the wire ------------------------------


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names; repeated fields joined with ", "
    head: bytes


async def raw_request(
    base_url: str, path: str, headers: Sequence[tuple[str, str]] = ()
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    return reader, writer


async def raw_head(reader: asyncio.StreamReader, timeout: float = 5.0) -> RawResponse:
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")[:-2]
    headers: dict[str, str] = {}
    for line in fields:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return RawResponse(int(status_line.split()[1]), headers, head)


@dataclass
class RawChunks:
    """A chunked body as it came off the wire: the chunks' data, and whether the
    terminating zero-length chunk arrived (False: the connection closed first)."""

    data: list[bytes] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)
    terminated: bool = False

    @property
    def body(self) -> bytes:
        return b"".join(self.data)


async def read_chunk(reader: asyncio.StreamReader) -> bytes:
    """One chunk's data; b"" for the terminating chunk (its empty trailer line read)."""
    size_line = await reader.readuntil(b"\r\n")
    size = int(size_line.split(b";")[0].strip(), 16)
    if size == 0:
        assert await reader.readuntil(b"\r\n") == b"\r\n", "trailers after the last chunk"
        return b""
    data = await reader.readexactly(size)
    assert await reader.readexactly(2) == b"\r\n", "a chunk not followed by CRLF"
    return data


async def read_chunked(
    reader: asyncio.StreamReader, timeout: float = 5.0, chunks: RawChunks | None = None
) -> RawChunks:
    """Decode chunked framing until the last chunk or the connection's end (added to
    ``chunks`` when given); a timeout (the proxy neither ended nor aborted) propagates."""
    loop = asyncio.get_running_loop()
    chunks = chunks or RawChunks()
    async with asyncio.timeout(timeout):
        try:
            while data := await read_chunk(reader):
                chunks.data.append(data)
                chunks.arrived.append(loop.time())
        except (asyncio.IncompleteReadError, ConnectionError):
            return chunks
    chunks.terminated = True
    return chunks
