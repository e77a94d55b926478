"""An upstream's answer as the proxy reads it, the errors of talking to an upstream,
and the bytes of a request's framing.

The answer's head is there at once; its body is queued by the connection as it
arrives and read chunk by chunk. Above ``HIGH_WATER`` bytes queued and not yet read,
the connection stops reading the socket until the reader catches up, so a slow client
never makes the proxy hold an unbounded answer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import Protocol

from multidict import CIMultiDict

HIGH_WATER = 256 * 1024


class _Connection(Protocol):
    """What an answer needs of the connection it arrives on."""

    loop: asyncio.AbstractEventLoop
    reading_paused: bool

    async def wait_read(self, waiter: asyncio.Future[None]) -> None: ...

    def resume(self) -> None: ...

    def done_with(self, response: UpstreamResponse, *, reusable: bool) -> None: ...

    def stream_limits(
        self, read_timeout: float, *, deadline: bool, max_duration: float | None
    ) -> None: ...

    def detach(self) -> tuple[asyncio.Transport, bytes]: ...


def request_head(method: str, target: bytes, headers: Iterable[tuple[str, str]]) -> bytes:
    """An upstream request's head (the headers already hold Host and the framing)."""
    lines = "".join([f"{name}: {value}\r\n" for name, value in headers])
    return b"%s %s HTTP/1.1\r\n%s\r\n" % (method.encode("ascii"), target, lines.encode("latin-1"))


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


class UpstreamError(Exception):
    """Talking to the upstream failed; the subclass says how (see chain.errors)."""


class ConnectFailed(UpstreamError):
    def __init__(self, message: str, os_error: OSError | None = None) -> None:
        super().__init__(message)
        self.os_error = os_error


class ConnectTimedOut(UpstreamError):
    pass


class ReadTimedOut(UpstreamError):
    pass


class DeadlineExceeded(UpstreamError):
    """The route's deadline ran out before the answer did (one timer per try, shared
    with the read timeout: whichever comes first)."""


class ConnectionLost(UpstreamError):
    """Closed or reset before a complete answer head; ``reused``: on a pooled connection
    and before any byte of the answer (the request may not have been read)."""

    def __init__(self, message: str, *, reused: bool = False) -> None:
        super().__init__(message)
        self.reused = reused


class BodyCut(UpstreamError):
    pass


class BadAnswer(UpstreamError):
    """The upstream spoke broken HTTP."""


class ErrorEvent(UpstreamError):
    """A committed stream carried an error event (``stream.abort_on_error_event``)."""


class StreamTooLong(UpstreamError):
    """A committed stream ran past the route's ``stream.max_duration``: the proxy's
    limit, not the upstream's failure."""


class Framing:
    """What an answer's head says of its body and connection, noted as its fields are
    parsed (no second pass over them)."""

    __slots__ = (
        "accel_buffering",
        "chunked",
        "connection_listed",
        "content_length",
        "content_type",
        "dated",
    )

    def __init__(self) -> None:
        self.content_length: int | None = None
        self.chunked = False
        self.connection_listed: frozenset[str] = frozenset()
        self.dated = False  # a Date among the headers
        # what tells a stream (proxy.chain.streams), without a multidict per answer
        self.content_type: str | None = None
        self.accel_buffering: str | None = None

    def note(self, name: str, value: str) -> None:
        """One header field whose name is one of the framing ones (by length first)."""
        lowered = name.lower()
        if lowered == "content-length":
            self.content_length = int(value) if value.isascii() and value.isdigit() else None
        elif lowered == "transfer-encoding":
            self.chunked = "chunked" in value.lower()
        elif lowered == "date":
            self.dated = True
        elif lowered == "content-type":
            if self.content_type is None:
                self.content_type = value
        elif lowered == "x-accel-buffering":
            self.accel_buffering = value
        elif lowered == "connection":
            listed = value.lower().split(",")
            self.connection_listed |= {token.strip() for token in listed}


# the lengths of the names Framing notes (Content-Length, Transfer-Encoding and
# X-Accel-Buffering, Connection, Date, Content-Type): a cheap first test
FRAMING_NAME_SIZES = frozenset({14, 17, 10, 4, 12})


class UpstreamResponse:
    """An upstream's answer: its head at once, its body read chunk by chunk."""

    __slots__ = (
        "_chunks",
        "_conn",
        "_error",
        "_headers",
        "_queued",
        "_waiter",
        "complete",
        "framing",
        "method",
        "pairs",
        "reason",
        "status",
        "version",
    )

    def __init__(
        self,
        conn: _Connection,
        method: str,
        status: int,
        reason: str,
        version: tuple[int, int],
        pairs: list[tuple[str, str]],
        framing: Framing,
    ) -> None:
        self._conn: _Connection | None = conn
        self.method = method
        self.status = status
        self.reason = reason
        self.version = version
        # decoded once as they were parsed (latin-1: byte for byte); the multidict only
        # when asked for
        self.pairs = pairs
        self._headers: CIMultiDict[str] | None = None
        self.framing = framing  # what the head said of the body and the connection
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: UpstreamError | None = None
        self.complete = False

    @property
    def content_length(self) -> int | None:
        return self.framing.content_length

    @property
    def chunked(self) -> bool:
        return self.framing.chunked

    @property
    def connection_listed(self) -> frozenset[str]:
        return self.framing.connection_listed

    @property
    def dated(self) -> bool:
        return self.framing.dated

    @property
    def content_type(self) -> str | None:
        return self.framing.content_type

    @property
    def accel_buffering(self) -> str | None:
        return self.framing.accel_buffering

    @property
    def headers(self) -> CIMultiDict[str]:
        if self._headers is None:
            self._headers = CIMultiDict(self.pairs)
        return self._headers

    @property
    def close_delimited(self) -> bool:
        return (
            self.content_length is None
            and not self.chunked
            and self.method != "HEAD"
            and self.status not in (204, 304)
        )

    # the connection's side
    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._queued += len(data)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def finished(self) -> bool:
        """Complete, or failed: the first outcome stands (a read timeout's abort is not
        then reported as a cut body)."""
        return self.complete or self._error is not None

    def _finish(self, error: UpstreamError | None = None) -> None:
        if self.finished:
            return
        if error is None:
            self.complete = True
        else:
            self._error = error
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # the reader's side
    async def read_chunk(self) -> bytes:
        """The next piece of the body; ``b""`` at its end. Raises what cut it short."""
        while not self._chunks:
            if self.complete:
                return b""
            if self._error is not None:
                raise self._error
            conn = self._conn
            if conn is None:
                raise BodyCut("the answer was closed")
            self._waiter = conn.loop.create_future()
            try:
                await conn.wait_read(self._waiter)
            finally:
                self._waiter = None
        data = self._chunks.popleft()
        self._queued -= len(data)
        conn = self._conn
        if conn is not None and conn.reading_paused and self._queued < HIGH_WATER // 2:
            conn.resume()
        return data

    readany = read_chunk  # the name aiohttp's StreamReader gives it

    def stream_limits(
        self, read_timeout: float, *, deadline: bool = True, max_duration: float | None = None
    ) -> None:
        """The timers a stream's body is read under from now on: ``read_timeout`` for
        the silence between chunks, the route's deadline only while ``deadline``, and
        ``max_duration`` from now for the rest of it."""
        if self._conn is not None:
            self._conn.stream_limits(read_timeout, deadline=deadline, max_duration=max_duration)

    def detach(self) -> tuple[asyncio.Transport, bytes]:
        """A 101's connection, taken out of the pool for a tunnel (see the connection's
        ``detach``)."""
        conn, self._conn = self._conn, None
        if conn is None:
            raise BodyCut("the answer was closed")
        return conn.detach()

    def take_all(self) -> list[bytes]:
        """The whole body of a complete answer, at once (no coroutine)."""
        chunks = list(self._chunks)
        self._chunks.clear()
        self._queued = 0
        return chunks

    @property
    def content(self) -> UpstreamResponse:
        return self

    async def read(self) -> bytes:
        chunks = []
        while chunk := await self.read_chunk():
            chunks.append(chunk)
        return b"".join(chunks)

    def release(self) -> None:
        """Done with the answer: a complete one gives its connection back for reuse."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.done_with(self, reusable=self.complete and not self._chunks)

    def close(self) -> None:
        """Done, whatever state the answer is in: the connection is closed."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.done_with(self, reusable=False)
