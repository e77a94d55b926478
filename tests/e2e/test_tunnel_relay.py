"""The tunnel of an upgraded connection, over real loopback sockets: a client, the
proxy's two transports (taken over from a placeholder protocol that paused reading, as
the connection's own protocol does once it has parsed the head), and an upstream.

The suite's loop is asyncio's; the proxy runs on uvloop, whose transports take the
protocol swap their own way, so every test runs on both loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
import struct
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import pytest
import uvloop

from proxy.http.tunnel import Tunnel, TunnelLimits

LOOPBACK = "127.0.0.1"
KiB = 1024
MiB = 1024 * KiB
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
LIMITS = TunnelLimits(idle_timeout=5.0, max_duration=None)
# a write buffer is bounded by its high-water mark (64 KiB) plus one read (256 KiB)
BOUNDED = 512 * KiB


def on_each_loop(scenario: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[str], None]:
    """A test running ``scenario`` on asyncio's loop and on uvloop, within 20 s."""

    @pytest.mark.parametrize("loop", sorted(LOOPS))
    def test(loop: str) -> None:
        async def bounded() -> None:
            async with asyncio.timeout(20):
                await scenario()

        with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
            runner.run(bounded())

    test.__doc__ = scenario.__doc__
    return test


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


class Held(asyncio.Protocol):
    """The proxy's protocol until the swap: it pauses reading once the connection is up
    (reading starts right after ``connection_made`` on both loops, so not in it)."""

    def __init__(self, ready: asyncio.Future[Held]) -> None:
        self.ready = ready
        self.transport = cast(asyncio.Transport, None)
        self.read = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        asyncio.get_running_loop().call_soon(self._hold)

    def _hold(self) -> None:
        self.transport.pause_reading()
        if not self.ready.done():
            self.ready.set_result(self)

    def data_received(self, data: bytes) -> None:
        self.read += data


@dataclass
class Peer:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def push(self, data: bytes) -> None:
        """Send ``data`` in 64 KiB pieces until done or the connection is gone."""
        with contextlib.suppress(ConnectionError, RuntimeError):  # uvloop: a closed transport
            for at in range(0, len(data), 64 * KiB):
                await self.send(data[at : at + 64 * KiB])

    async def read_to_end(self) -> bytes:
        """Everything until the peer closes (a reset ends it too)."""
        chunks = []
        with contextlib.suppress(ConnectionError):
            while chunk := await self.reader.read(256 * KiB):
                chunks.append(chunk)
        return b"".join(chunks)

    def reset(self) -> None:
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


@dataclass
class Rig:
    client: Peer
    upstream: Peer
    client_side: Held  # the proxy's end of the client's connection
    upstream_side: Held  # the proxy's end of the upstream's
    ended: list[tuple[str | None, int, int, bool]] = field(default_factory=list)
    tunnel: Tunnel | None = None

    def start(self, limits: TunnelLimits = LIMITS, **pending: bytes) -> Tunnel:
        def on_close(tunnel: Tunnel) -> None:
            self.ended.append((tunnel.reason, tunnel.bytes_up, tunnel.bytes_down, tunnel.closed))

        self.tunnel = Tunnel(
            asyncio.get_running_loop(),
            self.client_side.transport,
            self.upstream_side.transport,
            limits,
            route="ws",
            on_close=on_close,
            **pending,
        )
        self.tunnel.start()
        return self.tunnel


Narrow = Literal["client", "upstream"] | None


def narrow_receiver(sock: socket.socket) -> None:
    """A small receive window (set before the handshake), so a reader that stops makes
    the proxy's transport toward it fill soon."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * KiB)


def narrow_sender(transport: asyncio.Transport) -> None:
    """A small send buffer on the proxy's side, yet above the loopback MSS (64 KiB): below
    it every segment waits for a delayed ACK."""
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 128 * KiB)


@contextlib.asynccontextmanager
async def loopback(*, narrow: Narrow = None) -> AsyncIterator[Rig]:
    """The rig; ``narrow`` names the peer with small buffers (a slow reader's)."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[Peer] = loop.create_future()

    async def on_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(Peer(reader, writer))

    upstream_sock = socket.socket()
    if narrow == "upstream":
        narrow_receiver(upstream_sock)  # accepted sockets inherit it
    upstream_sock.bind((LOOPBACK, 0))
    upstream_server = await asyncio.start_server(on_upstream, sock=upstream_sock)
    client_held: asyncio.Future[Held] = loop.create_future()
    listener = await loop.create_server(lambda: Held(client_held), LOOPBACK, 0)
    client_sock = socket.socket()
    if narrow == "client":
        narrow_receiver(client_sock)
    client_sock.setblocking(False)
    await loop.sock_connect(client_sock, (LOOPBACK, listener.sockets[0].getsockname()[1]))
    client = Peer(*await asyncio.open_connection(sock=client_sock))
    client_side = await client_held
    upstream_held: asyncio.Future[Held] = loop.create_future()
    port = upstream_sock.getsockname()[1]
    await loop.create_connection(lambda: Held(upstream_held), LOOPBACK, port)
    rig = Rig(client, await accepted, client_side, await upstream_held)
    if narrow is not None:
        narrow_sender((rig.client_side if narrow == "client" else rig.upstream_side).transport)
    try:
        yield rig
        assert rig.client_side.read == rig.upstream_side.read == b""  # nothing read early
    finally:
        if rig.tunnel is None:
            for held in (rig.client_side, rig.upstream_side):
                held.transport.abort()
        elif not rig.tunnel.closed:
            rig.tunnel.abort()
            await rig.tunnel.wait_closed()
        for peer in (rig.client, rig.upstream):
            peer.writer.close()
            with contextlib.suppress(ConnectionError):
                await peer.writer.wait_closed()
        for server in (listener, upstream_server):
            server.close()
            await server.wait_closed()


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.005)


@on_each_loop
async def test_a_mebibyte_each_way_arrives_intact_and_counted() -> None:
    up, down = payload(MiB, 1), payload(MiB, 2)
    async with loopback() as rig:
        tunnel = rig.start()
        _, _, to_client, to_upstream = await asyncio.gather(
            rig.client.send(up),
            rig.upstream.send(down),
            rig.client.reader.readexactly(MiB),
            rig.upstream.reader.readexactly(MiB),
        )
        assert to_client == down and to_upstream == up
        rig.client.writer.write_eof()
        assert await rig.upstream.reader.read() == b""
        rig.upstream.writer.close()
        assert await rig.client.reader.read() == b""
        await tunnel.wait_closed()
        assert rig.ended == [("upstream_closed", MiB, MiB, True)]


@on_each_loop
async def test_pending_bytes_go_first_then_what_waited_in_the_kernel() -> None:
    async with loopback() as rig:
        await rig.client.send(b"held-by-kernel|")
        await rig.upstream.send(b"HELD-BY-KERNEL|")
        await asyncio.sleep(0.05)  # they reach the proxy's socket, which is not read
        tunnel = rig.start(client_pending=b"pending|", upstream_pending=b"PENDING|")
        await rig.client.send(b"after")
        await rig.upstream.send(b"AFTER")
        wanted_up, wanted_down = b"pending|held-by-kernel|after", b"PENDING|HELD-BY-KERNEL|AFTER"
        assert await rig.upstream.reader.readexactly(len(wanted_up)) == wanted_up
        assert await rig.client.reader.readexactly(len(wanted_down)) == wanted_down
        assert (tunnel.bytes_up, tunnel.bytes_down) == (len(wanted_up), len(wanted_down))


async def check_slow_reader_bounds_the_buffer(
    rig: Rig, tunnel: Tunnel, *, slow_client: bool
) -> None:
    """20 MiB pushed at a reader that does not read for 0.5 s: the writer stalls, and the
    proxy's write buffer toward the reader stays bounded; then everything arrives."""
    data = payload(20 * MiB, 3)
    writer, reader = (rig.upstream, rig.client) if slow_client else (rig.client, rig.upstream)
    toward_reader = (rig.client_side if slow_client else rig.upstream_side).transport
    most = 0

    async def watch() -> None:
        nonlocal most
        while True:
            most = max(most, toward_reader.get_write_buffer_size())
            await asyncio.sleep(0.001)

    watcher = asyncio.create_task(watch())
    pushing = asyncio.create_task(writer.push(data))
    await asyncio.sleep(0.5)
    relayed = tunnel.bytes_down if slow_client else tunnel.bytes_up
    assert not pushing.done()
    assert relayed < 4 * MiB
    assert 0 < most < BOUNDED
    got = await reader.reader.readexactly(len(data))
    await pushing
    watcher.cancel()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert most < BOUNDED


@on_each_loop
async def test_a_slow_client_pauses_reading_from_the_upstream() -> None:
    async with loopback(narrow="client") as rig:
        tunnel = rig.start()
        await check_slow_reader_bounds_the_buffer(rig, tunnel, slow_client=True)


@on_each_loop
async def test_a_slow_upstream_pauses_reading_from_the_client() -> None:
    async with loopback(narrow="upstream") as rig:
        tunnel = rig.start()
        await check_slow_reader_bounds_the_buffer(rig, tunnel, slow_client=False)


@on_each_loop
async def test_a_client_already_paused_for_writing_at_the_swap_keeps_the_upstream_paused() -> None:
    """The transport told the placeholder ``pause_writing``, which it says only once; its
    buffer is then between the marks, where it would not say it again."""
    async with loopback(narrow="client") as rig:
        before = payload(MiB, 4)
        client_side = rig.client_side.transport
        client_side.write(before)
        assert client_side.get_write_buffer_size() > 64 * KiB
        client_side.set_write_buffer_limits(high=2 * MiB, low=16 * KiB)
        rig.start()
        data = payload(20 * MiB, 5)
        pushing = asyncio.create_task(rig.upstream.push(data))
        await asyncio.sleep(0.5)
        assert not pushing.done()
        assert client_side.get_write_buffer_size() < 2 * MiB + BOUNDED
        got = await rig.client.reader.readexactly(len(before) + len(data))
        await pushing
        assert got == before + data


@on_each_loop
async def test_a_client_eof_reaches_the_upstream_which_still_answers() -> None:
    async with loopback() as rig:
        tunnel = rig.start()
        await rig.client.send(b"question")
        rig.client.writer.write_eof()
        assert await rig.upstream.reader.read() == b"question"
        await rig.upstream.send(b"answer")
        assert await rig.client.reader.readexactly(6) == b"answer"
        assert not tunnel.closed
        rig.upstream.writer.close()
        assert await rig.client.reader.read() == b""
        await tunnel.wait_closed()
        assert rig.ended == [("upstream_closed", 8, 6, True)]


@on_each_loop
async def test_an_upstream_eof_reaches_the_client_which_still_sends() -> None:
    async with loopback() as rig:
        tunnel = rig.start()
        rig.upstream.writer.write_eof()
        assert await rig.client.reader.read() == b""
        await rig.client.send(b"late words")
        assert await rig.upstream.reader.readexactly(10) == b"late words"
        rig.client.writer.close()
        assert await rig.upstream.reader.read() == b""
        await tunnel.wait_closed()
        assert rig.ended == [("client_closed", 10, 0, True)]


@on_each_loop
async def test_a_reset_client_closes_the_upstream() -> None:
    async with loopback() as rig:
        tunnel = rig.start()
        await rig.client.send(b"hello")
        assert await rig.upstream.reader.readexactly(5) == b"hello"
        rig.client.reset()
        assert await rig.upstream.read_to_end() == b""
        await tunnel.wait_closed()
        assert rig.ended == [("client_closed", 5, 0, True)]


@on_each_loop
async def test_a_reset_upstream_closes_the_client_after_what_is_buffered_for_it() -> None:
    async with loopback(narrow="client") as rig:
        tunnel = rig.start()
        data = payload(4 * MiB, 6)
        pushing = asyncio.create_task(rig.upstream.push(data))
        await until(lambda: rig.client_side.transport.get_write_buffer_size() > 0)
        await asyncio.sleep(0.1)
        rig.upstream.reset()
        await pushing
        got = await rig.client.read_to_end()
        await tunnel.wait_closed()
        assert len(got) == tunnel.bytes_down and got == data[: len(got)]
        assert rig.ended == [("upstream_closed", 0, len(got), True)]


@on_each_loop
async def test_idle_timeout_closes_both_but_not_while_bytes_flow_either_way() -> None:
    loop = asyncio.get_running_loop()
    async with loopback() as rig:
        tunnel = rig.start(TunnelLimits(idle_timeout=0.2, max_duration=None))
        for sender in (rig.client, rig.upstream):
            for _ in range(10):
                await asyncio.sleep(0.05)
                await sender.send(b".")
            assert not tunnel.closed
        quiet_since = loop.time()
        to_client, to_upstream = await asyncio.gather(
            rig.client.read_to_end(), rig.upstream.read_to_end()
        )
        await tunnel.wait_closed()
        assert 0.15 <= loop.time() - quiet_since < 1.5
        assert to_client == to_upstream == b"." * 10
        assert rig.ended == [("idle_timeout", 10, 10, True)]


@on_each_loop
async def test_max_duration_closes_a_busy_tunnel() -> None:
    loop = asyncio.get_running_loop()
    async with loopback() as rig:
        tunnel = rig.start(TunnelLimits(idle_timeout=5.0, max_duration=0.3))
        while not tunnel.closed and loop.time() - tunnel.opened_at < 3:
            with contextlib.suppress(ConnectionError):
                await rig.client.send(b"tick")
            await asyncio.sleep(0.02)
        assert 0.29 <= loop.time() - tunnel.opened_at < 1.5  # uvloop counts milliseconds
        assert rig.ended[0][0] == "max_duration"
        got = await rig.upstream.read_to_end()
        assert len(got) == tunnel.bytes_up and got == (b"tick" * 1000)[: len(got)]
        assert len(rig.ended) == 1


async def stall_the_client(rig: Rig) -> tuple[bytes, asyncio.Task[None]]:
    """The upstream pushes 8 MiB at a client that does not read, until the proxy holds
    some of it in the client's transport."""
    data = payload(8 * MiB, 7)
    pushing = asyncio.create_task(rig.upstream.push(data))
    await until(lambda: rig.client_side.transport.get_write_buffer_size() > 0)
    await asyncio.sleep(0.1)
    return data, pushing


@on_each_loop
async def test_close_flushes_what_is_buffered_then_closes_both() -> None:
    async with loopback(narrow="client") as rig:
        tunnel = rig.start()
        data, pushing = await stall_the_client(rig)
        tunnel.close()
        await pushing
        assert await rig.upstream.read_to_end() == b""
        got = await rig.client.read_to_end()
        await tunnel.wait_closed()
        assert len(got) == tunnel.bytes_down and got == data[: len(got)]
        assert rig.ended == [("shutdown", 0, len(got), True)]


@on_each_loop
async def test_abort_drops_what_is_buffered() -> None:
    async with loopback(narrow="client") as rig:
        tunnel = rig.start()
        data, pushing = await stall_the_client(rig)
        tunnel.abort()
        async with asyncio.timeout(1):  # no flush to wait for
            await tunnel.wait_closed()
        await pushing
        got = await rig.client.read_to_end()
        assert len(got) < tunnel.bytes_down and got == data[: len(got)]
        assert rig.ended == [("shutdown", 0, tunnel.bytes_down, True)]


@on_each_loop
async def test_a_close_that_cannot_flush_is_aborted_after_the_idle_timeout() -> None:
    """The client never reads: the idle timeout closes the tunnel, whose close cannot
    flush, and is aborted an idle timeout later."""
    async with loopback(narrow="client") as rig:
        tunnel = rig.start(TunnelLimits(idle_timeout=0.3, max_duration=None))
        _, pushing = await stall_the_client(rig)
        async with asyncio.timeout(2):
            await tunnel.wait_closed()
        await pushing
        assert len(await rig.client.read_to_end()) < tunnel.bytes_down
        assert rig.ended == [("idle_timeout", 0, tunnel.bytes_down, True)]


@on_each_loop
async def test_a_client_transport_closing_at_the_swap_ends_the_tunnel_at_once() -> None:
    async with loopback() as rig:
        rig.client_side.transport.close()
        tunnel = rig.start(client_pending=b"never sent")
        assert await rig.upstream.read_to_end() == b""
        assert await rig.client.read_to_end() == b""
        await tunnel.wait_closed()
        assert rig.ended == [("client_closed", 0, 0, True)]


def test_limits_refuse_a_timeout_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="idle_timeout"):
        TunnelLimits(idle_timeout=0, max_duration=None)
    with pytest.raises(ValueError, match="max_duration"):
        TunnelLimits(idle_timeout=1, max_duration=0)
