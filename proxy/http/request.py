"""A request as the listener hands it to the handler: its head as parsed (the bytes of
the target and of each header, and the headers decoded from latin-1 for lookups), and
its body as it arrives.

The body is queued by the connection; above ``HIGH_WATER`` bytes not yet read, the
socket stops being read until the handler catches up (an upload is never held whole
unless the handler asks for it).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from multidict import CIMultiDict

from proxy.http.wire import Reply

HIGH_WATER = 256 * 1024

# what llhttp hands over, as the text the handler reads, for the common cases: no
# decoding or int() parsing per request
METHOD_NAMES = {name.encode(): name for name in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")}
VERSIONS = {"1.1": (1, 1), "1.0": (1, 0)}


def parse_version(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor)


class _Connection(Protocol):
    """What a request needs of the client connection it arrived on."""

    loop: asyncio.AbstractEventLoop
    remote: str | None

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def write(self, data: bytes) -> None: ...


class Refused(Exception):
    """A request the proxy answers itself with ``status`` (400, 408, 413, 414, 431): the
    client is at fault, not an upstream. A body that breaks the framing rules (a bad
    chunk) raises it from :meth:`RequestBody.readany`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RequestBody:
    """The body as it arrives, read with ``readany()`` (``b""`` at its end)."""

    __slots__ = ("_chunks", "_conn", "_error", "_queued", "_waiter", "complete", "discard")

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self.complete = False
        self.discard = False

    def feed(self, data: bytes) -> None:
        if self.discard:
            return
        self._chunks.append(data)
        self._queued += len(data)
        if self._queued >= HIGH_WATER:
            self._conn.pause_reading()
        self._wake()

    def finish(self) -> None:
        self.complete = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def readany(self) -> bytes:
        while not self._chunks:
            if self.complete:
                return b""
            if isinstance(self._error, Refused):
                raise self._error
            if self._error is not None:
                raise ConnectionResetError("the client went away while sending the body")
            self._conn.resume_reading()
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._chunks.popleft()
        self._queued -= len(data)
        if self._queued < HIGH_WATER // 2:
            self._conn.resume_reading()
        return data

    def drop_rest(self) -> None:
        """Nobody will read the rest: drop it as it arrives."""
        self.discard = True
        self._chunks.clear()
        self._queued = 0
        self._conn.resume_reading()


class IncomingRequest:
    """One parsed request head, and its body if it has one."""

    __slots__ = (
        "body",
        "conn",
        "content_length",
        "headers",
        "keep_alive",
        "method",
        "remote",
        "target",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        conn: _Connection,
        method: str,
        target: bytes,
        version: tuple[int, int],
        pairs: list[tuple[str, str]],
        content_length: int | None,
        keep_alive: bool,
        body: RequestBody | None,
    ) -> None:
        self.conn = conn
        self.method = method
        self.target = target
        self.version = version
        # decoded from latin-1 as they were parsed: byte for byte
        self.headers: CIMultiDict[str] = CIMultiDict(pairs)
        self.keep_alive = keep_alive
        self.body = body
        self.content_length = content_length
        self.remote = conn.remote
        self.upgrade = False

    @property
    def raw_path(self) -> str:
        return self.target.decode("latin-1")

    @property
    def body_exists(self) -> bool:
        return self.body is not None

    @property
    def content(self) -> RequestBody:
        assert self.body is not None
        return self.body

    def send_continue(self) -> None:
        """``100 Continue`` for a client that waits for it before sending the body."""
        self.conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    """What the main listener enforces on each connection's requests."""

    max_request_line: int
    max_header_size: int
    max_headers: int
    header_timeout: float
    linger: float


Handler = Callable[[IncomingRequest], Awaitable[Reply]]  # answers a request
RefusalAnswer = Callable[[int, str], Reply]  # the proxy's answer to a request it refused
