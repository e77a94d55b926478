"""A bounded keep-alive pool of connections to one upstream, and one exchange on it.

Idle connections are reused last-in first-out (the warmest socket first) and dropped
after ``idle_timeout`` unused, shorter than the usual upstream keep-alive (Node's is
5 s), so the proxy rarely writes into a socket the upstream is closing. A connection
the upstream closed while idle is seen (its ``connection_lost``) and never handed out.

If a reused connection still dies before any byte of the answer, the request may or
may not have been read. It is sent again on a new connection only when the failover
plan would allow moving on anyway (``may_resend``: an idempotent method or an
Idempotency-Key); otherwise the failure is reported like any other reset.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterable

from proxy.upstreams.connection import UpstreamConnection
from proxy.upstreams.response import (
    LAST_CHUNK,
    ConnectFailed,
    ConnectionLost,
    ConnectTimedOut,
    DeadlineExceeded,
    UpstreamResponse,
    chunk,
)

IDLE_TIMEOUT = 4.0


class Pool:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_connections: int,
        connect_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        self.idle_timeout = idle_timeout
        self._idle: list[UpstreamConnection] = []
        self._open: set[UpstreamConnection] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def size(self) -> int:
        return len(self._open)

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def acquire(self, deadline: float | None = None) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise ConnectFailed("the upstream's pool is closed")
            now = loop.time()
            idle = self._idle
            while idle:
                conn = idle.pop()
                transport = conn.transport
                if (
                    not conn.closed
                    and transport is not None
                    and not transport.is_closing()
                    and now - conn.idle_since < self.idle_timeout
                ):
                    return conn
                conn.abort()
                self._open.discard(conn)
            if len(self._open) < self.max_connections:
                return await self._connect(loop, deadline)
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # woken, then cancelled: the turn goes to the next
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, deadline: float | None = None
    ) -> UpstreamConnection:
        conn = UpstreamConnection(self, loop)
        self._open.add(conn)
        timeout = self.connect_timeout
        by_deadline = deadline is not None and deadline - loop.time() < timeout
        if deadline is not None and by_deadline:
            timeout = max(deadline - loop.time(), 0.0)
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: conn,
                    self.host,
                    self.port,
                    ssl=self.ssl_context,
                    server_hostname=self.server_hostname if self.ssl_context else None,
                )
        except TimeoutError:
            self.forget(conn)
            if by_deadline:
                raise DeadlineExceeded("the route's deadline ran out while connecting") from None
            raise ConnectTimedOut(f"no connection to {self.host}:{self.port} in time") from None
        except ssl.SSLError:
            self.forget(conn)
            raise
        except socket.gaierror:
            self.forget(conn)
            raise
        except OSError as exc:
            self.forget(conn)
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {exc}", exc) from exc
        except BaseException:
            self.forget(conn)
            raise
        transport = conn.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def put_back(self, conn: UpstreamConnection) -> None:
        if self._closed:
            conn.abort()
            self._open.discard(conn)
            return
        conn.idle_since = conn.loop.time()
        self._idle.append(conn)
        self._wake()

    def forget(self, conn: UpstreamConnection) -> None:
        self._open.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        self._closed = True
        for conn in list(self._open):
            conn.abort()
        self._open.clear()
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def exchange(
        self,
        method: str,
        head: bytes,
        body: bytes | AsyncIterable[bytes] | None,
        *,
        read_timeout: float,
        may_resend: bool,
        chunked: bool = False,
        deadline: float | None = None,
    ) -> UpstreamResponse:
        """Send one request and wait for its answer's head; ``deadline`` (loop time)
        bounds the wait for a connection, the connect, and every read."""
        conn = await self._acquire_by(deadline)
        reused = conn.uses > 0
        conn.deadline = deadline
        try:
            if body is None or isinstance(body, bytes):
                try:  # the common case inline: no coroutine of its own
                    return await conn.send(method, head, body, read_timeout)
                except BaseException:
                    conn.abort()
                    self.forget(conn)
                    raise
            return await self._send(conn, method, head, body, read_timeout, chunked)
        except ConnectionLost as exc:
            if not (reused and exc.reused and may_resend and not isinstance(body, AsyncIterable)):
                raise
        # the pooled connection was stale: once more, on a new one
        conn = await self._connect(asyncio.get_running_loop(), deadline)
        conn.deadline = deadline
        return await self._send(conn, method, head, body, read_timeout, chunked)

    async def _acquire_by(self, deadline: float | None) -> UpstreamConnection:
        if deadline is None or (self._idle and not self._waiters):
            return await self.acquire(deadline)
        try:
            async with asyncio.timeout_at(deadline):
                return await self.acquire(deadline)
        except TimeoutError:
            raise DeadlineExceeded(
                "the route's deadline ran out waiting for a connection"
            ) from None

    async def _send(
        self,
        conn: UpstreamConnection,
        method: str,
        head: bytes,
        body: bytes | AsyncIterable[bytes] | None,
        read_timeout: float,
        chunked: bool,
    ) -> UpstreamResponse:
        try:
            if body is None or isinstance(body, bytes):
                return await conn.send(method, head, body, read_timeout)
            answer = conn.expect_answer(method, read_timeout)
            conn.write(head)
            async for data in body:
                if answer.done():
                    # answered early (a 413, say): the rest is not wanted, and the
                    # upstream is left mid-request, so the connection is not reused
                    conn.forbid_reuse()
                    break
                if data:
                    conn.write(chunk(data) if chunked else data)
                    await conn.drain()
            else:
                if chunked:
                    conn.write(LAST_CHUNK)
                conn.arm_read_timeout()
            return await answer
        except BaseException:
            conn.abort()
            self.forget(conn)
            raise
