"""One keep-alive connection to an upstream: an asyncio protocol parsing answers with
llhttp (``httptools``, strict: no lenient flags), and the answer as the caller reads it.

What a parser cannot know is handled here: an answer to HEAD has no body whatever its
``Content-Length`` says (the connection is then not reused: llhttp would read the next
answer's bytes as this one's body), interim ``1xx`` answers are skipped, and a body
without ``Content-Length`` or chunking ends when the upstream closes (close-delimited:
complete, but never reusable).

The answer and its backpressure are :mod:`proxy.upstreams.response`'s.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

import httptools

from proxy.upstreams.flow import WriteFlow
from proxy.upstreams.response import (
    FRAMING_NAME_SIZES,
    HIGH_WATER,
    BadAnswer,
    BodyCut,
    ConnectionLost,
    DeadlineExceeded,
    Framing,
    ReadTimedOut,
    StreamTooLong,
    UpstreamError,
    UpstreamResponse,
)

MAX_HEAD = 64 * 1024  # bytes of status line and headers an upstream may send


class _Pool(Protocol):
    """What a connection tells its pool."""

    def put_back(self, conn: UpstreamConnection) -> None: ...

    def forget(self, conn: UpstreamConnection) -> None: ...


class UpstreamConnection(WriteFlow):
    """A connection of one pool; it carries one exchange at a time."""

    def __init__(self, pool: _Pool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.uses = 0  # exchanges started on it
        self.idle_since = 0.0
        self.reading_paused = False
        self._parser = httptools.HttpResponseParser(self)
        self._method = "GET"
        self._pairs: list[tuple[str, str]] = []
        self._framing = Framing()
        self._head_size = 0
        self._in_body = False
        self._interim = False
        self._keep_alive = False
        self._answer_began = False  # a byte of this exchange's answer arrived
        self._head: asyncio.Future[UpstreamResponse] | None = None
        self._response: UpstreamResponse | None = None
        self._reason = b""
        self._read_timeout = 0.0
        self.deadline: float | None = None  # the route's, in loop time
        self._by_deadline = False
        self._timer: asyncio.TimerHandle | None = None
        self._stream_timer: asyncio.TimerHandle | None = None  # stream.max_duration
        self.upgraded: bytes | None = None  # after a 101: the bytes that followed it

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        if self._stream_timer is not None:
            self._stream_timer.cancel()
            self._stream_timer = None
        head, response = self._head, self._response
        if head is not None and not head.done():
            # only a pooled connection dying before any byte of the answer may have
            # lost the request unread (the upstream's idle close crossing it)
            reused = self.uses > 1 and not self._answer_began
            head.set_exception(ConnectionLost("the upstream closed the connection", reused=reused))
        elif response is not None and not response.finished:
            if response.close_delimited and self._in_body and exc is None:
                response._finish()  # the end of a close-delimited body is the close
            else:
                response._finish(BodyCut("the upstream closed the connection mid-body"))
        self._wake_writer()
        self.pool.forget(self)

    def data_received(self, data: bytes) -> None:
        if self._head is None and self._response is None:
            self.abort()  # bytes nobody asked for: this connection cannot be trusted
            return
        if self.upgraded is not None:
            self.upgraded += data  # after a 101, before the tunnel takes the connection
            return
        self._answer_began = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # a 101: what follows its head is the other protocol's, kept for the tunnel;
            # reading waits until the tunnel takes the connection over
            self.upgraded = data[exc.args[0] :]
            self._keep_alive = False
            if self.transport is not None:
                self.transport.pause_reading()
        except (httptools.HttpParserError, ValueError) as exc:
            self._fail(BadAnswer(f"the upstream's answer is not valid HTTP: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost reports it

    # llhttp callbacks
    def on_message_begin(self) -> None:
        if self._response is not None:
            # a second answer to one request: the upstream is out of step (the answer
            # already parsed is kept, the connection is never reused)
            self._keep_alive = False
            raise ValueError("bytes after the complete answer")
        self._pairs = []
        self._framing = Framing()
        self._head_size = 0
        self._in_body = False

    def on_status(self, status: bytes) -> None:
        self._reason += status
        self._head_size += len(status)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_body:
            return  # a trailer: the proxy re-frames, and drops trailers
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD:
            raise ValueError(f"the answer's head is larger than {MAX_HEAD} bytes")
        pair = (name.decode("latin-1"), value.decode("latin-1"))
        if len(name) in FRAMING_NAME_SIZES:
            self._framing.note(pair[0], pair[1])
        self._pairs.append(pair)

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._interim = True  # 100 Continue, 103 Early Hints: not the answer
            self._reason = b""
            return
        self._interim = False
        self._in_body = True
        self._cancel_timer()  # the head is here; reading the body arms it again
        self._keep_alive = parser.should_keep_alive()
        response = UpstreamResponse(
            self,
            self._method,
            status,
            self._reason.decode("latin-1"),
            _version(parser.get_http_version()),
            self._pairs,
            self._framing,
        )
        self._reason = b""
        self._response = response
        head = self._head
        self._head = None
        if self._method == "HEAD":
            self._keep_alive = False  # llhttp would take the next answer as this body
            response._finish()
        if head is not None and not head.done():
            head.set_result(response)

    def on_body(self, body: bytes) -> None:
        response = self._response
        if response is None or response.finished:
            return
        response._feed(body)
        if response._queued >= HIGH_WATER and not self.reading_paused:
            self.reading_paused = True
            if self.transport is not None:
                self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        response = self._response
        if response is not None and not response.complete:
            response._finish()

    # the pool's and the caller's side
    def send(
        self, method: str, head: bytes, body: bytes | None, read_timeout: float
    ) -> asyncio.Future[UpstreamResponse]:
        """Write the request (head and a body held whole) and return the answer's head."""
        transport = self.transport
        assert transport is not None
        head_future = self._expect(method, read_timeout)
        if body:
            transport.writelines([head, body])
        else:
            transport.write(head)
        self._arm()
        return head_future

    def expect_answer(self, method: str, read_timeout: float) -> asyncio.Future[UpstreamResponse]:
        """Wait for the answer to a request whose body the caller streams itself (only
        the deadline runs while it is sent: the read timeout starts once it is)."""
        head_future = self._expect(method, read_timeout)
        # the body may still fail to go out, and then nobody awaits this answer
        head_future.add_done_callback(_retrieved)
        self._arm(reading=False)
        return head_future

    def _expect(self, method: str, read_timeout: float) -> asyncio.Future[UpstreamResponse]:
        self.uses += 1
        self._method = method
        self._read_timeout = read_timeout
        self._answer_began = False
        self._head = head_future = self.loop.create_future()
        return head_future

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def drain(self) -> None:
        if not self.closed:
            await self.writable()
        if self.closed:
            raise ConnectionLost("the upstream closed the connection while the body was sent")

    def arm_read_timeout(self) -> None:
        """The streamed body is sent: the answer's head is due within the read timeout
        (unless it is here already; reading its body arms the timer itself)."""
        if self._head is not None and not self._head.done():
            self._arm()

    def forbid_reuse(self) -> None:
        """The request was not sent whole (answered early): never reuse the connection."""
        self._keep_alive = False

    def _arm(self, *, reading: bool = True) -> None:
        """One timer: the read timeout, or the route's deadline if that comes first."""
        self._cancel_timer()
        timeout = self._read_timeout if reading and self._read_timeout > 0 else None
        self._by_deadline = False
        if self.deadline is not None:
            left = self.deadline - self.loop.time()
            if timeout is None or left < timeout:
                timeout, self._by_deadline = max(left, 0.0), True
        if timeout is not None:
            self._timer = self.loop.call_later(timeout, self._timed_out)

    def stream_limits(
        self, read_timeout: float, *, deadline: bool, max_duration: float | None
    ) -> None:
        self._read_timeout = read_timeout
        if not deadline:
            self.deadline = None
        if max_duration is not None and self._stream_timer is None:
            self._stream_timer = self.loop.call_later(max_duration, self._ran_too_long)

    def detach(self) -> tuple[asyncio.Transport, bytes]:
        """After a 101: the transport, with the bytes that followed the answer's head,
        handed to a tunnel. The pool forgets the connection (a reload's closing of the
        pool does not touch it); reading stays paused until the tunnel starts."""
        assert self.transport is not None and self.upgraded is not None
        self._cancel_timer()
        self._response = None
        self.pool.forget(self)
        pending, self.upgraded = self.upgraded, b""
        return self.transport, pending

    def _ran_too_long(self) -> None:
        self._stream_timer = None
        self._fail(StreamTooLong("the stream ran past its max_duration"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._by_deadline:
            self._fail(DeadlineExceeded("the route's deadline ran out"))
        else:
            self._fail(ReadTimedOut("the upstream did not answer within its read timeout"))

    async def wait_read(self, waiter: asyncio.Future[None]) -> None:
        """Wait for more body, within the read timeout (silence between chunks)."""
        if self.reading_paused:
            self.resume()
        self._arm()
        try:
            await waiter
        finally:
            self._cancel_timer()

    def head_arrived(self) -> None:
        self._cancel_timer()

    def resume(self) -> None:
        self.reading_paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def _fail(self, error: UpstreamError) -> None:
        head, response = self._head, self._response
        if head is not None and not head.done():
            head.set_exception(error)
        elif response is not None and not response.complete:
            response._finish(error)
        self.abort()

    def abort(self) -> None:
        self.closed = True
        self._cancel_timer()
        if self._stream_timer is not None:
            self._stream_timer.cancel()
            self._stream_timer = None
        if self.transport is not None:
            self.transport.abort()

    def done_with(self, response: UpstreamResponse, *, reusable: bool) -> None:
        if self._response is response:
            self._response = None
        self._cancel_timer()
        if self._stream_timer is not None:
            self._stream_timer.cancel()
            self._stream_timer = None
        if reusable and self._keep_alive and not self.closed:
            self.pool.put_back(self)
        else:
            self.abort()
            self.pool.forget(self)


_VERSIONS = {"1.1": (1, 1), "1.0": (1, 0)}


def _version(version: str) -> tuple[int, int]:
    known = _VERSIONS.get(version)
    if known is not None:
        return known
    major, _, minor = version.partition(".")
    return int(major or 1), int(minor or 1)


def _retrieved(future: asyncio.Future[UpstreamResponse]) -> None:
    """A head nobody waits for any more (the caller's deadline ran out first): its
    failure is expected, not an unretrieved error to log."""
    if not future.cancelled():
        future.exception()
