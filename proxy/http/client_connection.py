"""One client connection of the main listener: an HTTP/1.1 server protocol on asyncio
(uvloop), parsing requests with llhttp through ``httptools`` in strict mode (no lenient
flags).

One connection, one :class:`ClientConnection`. Requests are parsed as bytes arrive,
queued (pipelining), and answered in order by one task per connection that lives while
requests wait; the head of each answer leaves in one write. What the parser refuses
(smuggling shapes: Content-Length with Transfer-Encoding, a duplicate Content-Length,
obs-fold, a bare CR or LF, a bad chunk size) is answered 400 and the connection closed.

Limits: the request line (414), each header line and the number of headers (431), and
two deadlines swept by one timer for all connections, not a timer per request: the
request head must be complete within ``client_header_timeout`` of the connection's
start or of the previous answer's end; the body's budget is the body reader's. After an
early answer (413, 408) the rest of the body is read and dropped for up to
``linger`` seconds, so the client reads the answer rather than a reset.

A client that goes away cancels its request's task, and with it the upstream call.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import Protocol, cast

import httptools

from proxy.http.request import (
    METHOD_NAMES,
    VERSIONS,
    Handler,
    IncomingRequest,
    ListenerLimits,
    RefusalAnswer,
    Refused,
    RequestBody,
    parse_version,
)
from proxy.http.sending import close_stream, send_stream
from proxy.http.wire import Reply, response_head
from proxy.upstreams.flow import WriteFlow

log = logging.getLogger("failover_proxy")


class _Listener(Protocol):
    """What a connection needs of the listener that accepted it."""

    handler: Handler
    refusal: RefusalAnswer
    limits: ListenerLimits
    loop: asyncio.AbstractEventLoop
    connections: set[ClientConnection]
    requests: int


class ClientConnection(WriteFlow):
    def __init__(self, listener: _Listener) -> None:
        self.listener = listener
        self.loop = listener.loop
        self.limits = listener.limits
        self.transport: asyncio.Transport | None = None
        self.remote: str | None = None
        self.closed = False
        self.deadline: float | None = None  # for the request head; None while answering
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._pairs: list[tuple[str, str]] = []
        self._head_bytes = 0
        self._in_body = False
        self._body: RequestBody | None = None
        self._queue: deque[IncomingRequest] = deque()
        # one task per connection, started with its first request, waiting between
        # requests (not a task per request); ``busy`` while a request is answered
        self._task: asyncio.Task[None] | None = None
        self._next: asyncio.Future[None] | None = None
        self.busy = False
        self._refusal: tuple[int, str] | None = None  # to answer once the queue is served
        self._reading_paused = False
        self._started_head = False
        self._stop_parsing = False
        self._upgrade_data: bytes | None = None  # sent after an Upgrade request's head
        self._upgrade_body_left = 0  # bytes of an Upgrade request's body still to come
        self.tunnelled = False  # the connection is a tunnel's now

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else None
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.deadline = self.loop.time() + self.limits.header_timeout
        self.listener.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.listener.connections.discard(self)
        if self._body is not None and not self._body.complete:
            self._body.fail(ConnectionResetError())
        for request in self._queue:
            if request.body is not None and not request.body.complete:
                request.body.fail(ConnectionResetError())
        if self._task is not None and not self._task.done():
            self._task.cancel()  # the client left: stop the upstream call
        self._wake_writer()

    def data_received(self, data: bytes) -> None:
        if self._stop_parsing:
            if self._upgrade_data is not None:  # before the 101: kept for the tunnel
                self._upgrade_data += self._upgrade_body_bytes(data)
                if not self._upgrade_body_left:
                    self.pause_reading()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # what follows is not HTTP: kept for a tunnel if the upstream switches (the
            # rest waits in the kernel meanwhile); else the answer ends the connection
            self._stop_parsing = True
            self._upgrade_data = self._upgrade_body_bytes(data[exc.args[0] :])
            if not self._upgrade_body_left:
                self.pause_reading()
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, Refused):
                self._refuse(cause.status, cause.message)
            else:
                log.exception("request parsing failed", exc_info=cause)
                self._refuse(400, "the request is malformed")
        except httptools.HttpParserError as exc:
            log.debug("refused a malformed request from %s: %s", self.remote, exc)
            self._refuse(400, "the request is malformed")

    def _upgrade_body_bytes(self, data: bytes) -> bytes:
        """An upgrade request's body out of the bytes after its head; the rest."""
        left = self._upgrade_body_left
        if not left:
            return data
        piece, rest = data[:left], data[left:]
        self._upgrade_body_left = left - len(piece)
        body = self._body
        if body is not None:
            if piece:
                body.feed(piece)
            if not self._upgrade_body_left:
                body.finish()
                self._body = None
        return rest

    def eof_received(self) -> bool | None:
        """The client closed its side: it is gone (as nginx takes it by default), and
        the request being answered is cancelled with its upstream call."""
        return False

    # llhttp callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._pairs = []
        self._head_bytes = 0
        self._in_body = False
        self._started_head = True

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_request_line:
            raise Refused(414, "the request line is too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_body:
            return  # a trailer: dropped (the proxy re-frames what it forwards)
        if len(name) + len(value) + 2 > self.limits.max_header_size:
            raise Refused(431, "the request headers are too large or too many")
        pairs = self._pairs
        pairs.append((name.decode("latin-1"), value.decode("latin-1")))
        if len(pairs) > self.limits.max_headers:
            raise Refused(431, "the request headers are too large or too many")

    def on_headers_complete(self) -> None:
        parser = self._parser
        method = METHOD_NAMES.get(raw := parser.get_method()) or raw.decode()
        version = VERSIONS.get(text := parser.get_http_version()) or parse_version(text)
        pairs = self._pairs
        body: RequestBody | None = None
        length: int | None = None
        chunked, hosts = False, 0
        for name, value in pairs:
            size = len(name)
            if size == 4 and name.lower() == "host":
                hosts += 1
            elif size == 14 and name.lower() == "content-length":
                length = int(value)  # llhttp let only digits through
            elif size == 17 and name.lower() == "transfer-encoding":
                if value.strip().lower() != "chunked":
                    raise Refused(400, "only the chunked transfer coding is accepted")
                chunked = True
        if hosts > 1 or (hosts == 0 and version >= (1, 1)):
            raise Refused(400, "an HTTP/1.1 request needs exactly one Host header")
        upgrade = parser.should_upgrade()
        if upgrade and chunked:
            # llhttp hands over everything after an upgrade request's head unparsed: a
            # body is taken by its length (RFC 9110 7.8: the new protocol starts after it)
            raise Refused(400, "an Upgrade request's body needs a Content-Length")
        if length or chunked:
            body = RequestBody(self)
            if upgrade:
                self._upgrade_body_left = length or 0
        self._body = body
        self._in_body = True
        self.deadline = None
        request = IncomingRequest(
            self, method, self._url, version, pairs, length, parser.should_keep_alive(), body
        )
        if upgrade:
            request.upgrade = True
            request.keep_alive = False
        self._queue.append(request)
        self.listener.requests += 1
        if self._task is None:
            self._task = self.loop.create_task(self._serve())
        elif self._next is not None and not self._next.done():
            self._next.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._body is not None:
            self._body.feed(body)

    def on_message_complete(self) -> None:
        if self._upgrade_body_left:
            return  # llhttp ends an upgrade request at its head: its body is still to come
        if self._body is not None:
            self._body.finish()
            self._body = None
        self._in_body = False
        self._started_head = False

    # flow control
    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    async def drain(self) -> None:
        if not self.closed:
            await self.writable()
        if self.closed:
            raise ConnectionResetError("the client went away")

    # answering
    async def _serve(self) -> None:
        try:
            while not self.closed:
                if not self._queue:
                    self.busy = False
                    if self._refusal is not None:
                        self._refuse(*self._refusal)
                        return
                    self._next = self.loop.create_future()
                    await self._next
                    continue
                self.busy = True
                request = self._queue[0]
                try:
                    reply = await self.listener.handler(request)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("the request handler failed")
                    reply = self.listener.refusal(500, "the proxy failed to answer this request")
                    reply.close = True
                self._queue.popleft()
                keep = await self._send(request, reply)
                if self.tunnelled:
                    return
                if not keep:
                    self._close_after(request)
                    return
                if not self._queue:
                    self.deadline = self.loop.time() + self.limits.header_timeout
        except asyncio.CancelledError:
            if self.transport is not None:
                self.transport.abort()
        finally:
            self.busy = False

    async def _send(self, request: IncomingRequest, reply: Reply) -> bool:
        """Write the answer; whether the connection may carry another request."""
        body = request.body
        unread = body is not None and not body.complete
        keep = request.keep_alive and not reply.close and not unread
        head_only = request.method == "HEAD"
        head, chunked = response_head(
            reply, version=request.version, head_only=head_only, keep_alive=keep
        )
        transport = self.transport
        if transport is None or self.closed:
            return False
        if reply.tunnel is not None:
            transport.write(head)
            self._hand_over(reply.tunnel)
            return False
        stream = reply.stream
        if stream is None:
            if head_only or not reply.body or reply.status in (204, 304):
                transport.write(head)
            else:
                transport.writelines([head, reply.body])
            return keep
        transport.write(head)
        if head_only:
            await close_stream(stream)
            return keep
        if not await send_stream(self, transport, stream, chunked=chunked):
            return False
        return keep and (chunked or reply.length is not None)

    def _hand_over(self, start: Callable[[asyncio.Transport, bytes], None]) -> None:
        """The 101 is out: the connection becomes a tunnel's, which takes the transport
        (reading is paused since the request's head) and the bytes sent after it."""
        assert self.transport is not None
        self.tunnelled = True
        self.listener.connections.discard(self)
        pending, self._upgrade_data = self._upgrade_data or b"", None
        try:
            start(self.transport, pending)
        except Exception:
            log.exception("the tunnel could not start")
            self.transport.abort()

    def _close_after(self, request: IncomingRequest) -> None:
        body = request.body
        transport = self.transport
        if transport is None or self.closed:
            return
        if body is not None and not body.complete:
            body.drop_rest()  # read and drop the rest for a while: the client reads our answer
            self.loop.call_later(self.limits.linger, self._close)
            if transport.can_write_eof():
                transport.write_eof()
            return
        self._close()

    def _close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        """Answer a request the parser or a limit refused, then close. A body that
        breaks the framing fails its request's read (its handler answers); a head that
        does is answered here, after the requests before it."""
        self._stop_parsing = True
        body = self._body
        if body is not None and not body.complete:
            body.fail(Refused(status, message))
            return
        if self.busy or self._queue:
            self._refusal = (status, message)  # after the requests before it
            return
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            return
        reply = self.listener.refusal(status, message)
        reply.close = True
        head, _ = response_head(reply, version=(1, 1), head_only=False, keep_alive=False)
        transport.writelines([head, reply.body])
        self.loop.call_later(self.limits.linger, self._close)
        if transport.can_write_eof():
            transport.write_eof()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def cancel(self) -> None:
        """Stop answering (shutdown): the request being answered is cancelled."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def time_out(self) -> None:
        """The request head did not arrive in time: the connection is closed (as an idle
        keep-alive one is); nothing was asked, so nothing is answered."""
        self._close()
