"""The byte relay of an upgraded connection (a WebSocket after its 101, or any other
``Upgrade``): once the 101 is written, the client's transport and the upstream's are
joined, and bytes go both ways untouched until both directions have ended.

The rules, each a line or two below:

1. Backpressure: when one end's write buffer passes its high-water mark
   (``pause_writing``), reading stops on the other end until it drains
   (``resume_writing``), so a slow reader never makes the proxy buffer without bound.
2. Half-close: an EOF from one end is passed on with ``write_eof`` and the other
   direction keeps flowing until it ends too; where the other transport cannot write an
   EOF (TLS), the EOF ends the tunnel.
3. An end whose connection is lost (closed or reset) ends the tunnel: the other is
   closed once what is buffered for it is flushed.
4. Idle timeout: no byte either way for ``idle_timeout`` closes both ends (Envoy's
   ``tcp_proxy`` ``idle_timeout``). One timer per tunnel: a chunk only notes the time,
   and the timer, when it fires, closes or re-arms from the last activity.
5. ``max_duration`` ends the tunnel however busy it is (Envoy's
   ``max_downstream_connection_duration``).
6. A close never hangs: one that has not flushed within ``idle_timeout`` (a reader
   that stopped reading) becomes an abort.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger("failover_proxy")

EndReason = Literal[
    "client_closed", "upstream_closed", "idle_timeout", "max_duration", "shutdown", "error"
]

# uvloop's timers keep whole milliseconds: one may fire a hair before its deadline
TIMER_SLACK = 0.002


@dataclass(frozen=True, slots=True)
class TunnelLimits:
    """How long a tunnel may live; ``max_duration`` None means no limit."""

    idle_timeout: float
    max_duration: float | None

    def __post_init__(self) -> None:
        if not self.idle_timeout > 0:
            raise ValueError(f"idle_timeout must be positive, not {self.idle_timeout}")
        if self.max_duration is not None and not self.max_duration > 0:
            raise ValueError(f"max_duration must be positive or None, not {self.max_duration}")


class _End(asyncio.Protocol):
    """One transport of a tunnel, as its protocol: what it reads goes to the other end."""

    def __init__(self, tunnel: Tunnel, transport: asyncio.Transport, reason: EndReason) -> None:
        self.tunnel = tunnel
        self.transport = transport
        self.reason: EndReason = reason  # the tunnel's, when this end ends it
        self.other = self  # the tunnel pairs the two
        self.relayed = 0  # bytes read here and written to the other end
        self.eof = False  # it sent its last byte
        self.lost = False  # its connection is gone (or was closing when handed over)
        self.full = False  # its write buffer is over the high-water mark
        self.reading_paused = False

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        tunnel.last_activity = tunnel.loop.time()
        if tunnel.reason is not None or self.other.lost:
            return
        try:
            self.other.transport.write(data)
        except Exception:
            log.exception("the tunnel of route %r could not relay", tunnel.route)
            tunnel.abort("error")
            return
        self.relayed += len(data)

    def eof_received(self) -> bool:
        self.eof = True
        self.tunnel._eof_from(self)
        return True  # keep the transport: the other direction may still write to it

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost:
            self.lost = True
            self.tunnel._lost(self)

    def pause_writing(self) -> None:
        self.full = True
        self.other.pause_reading()

    def resume_writing(self) -> None:
        self.full = False
        self.other.resume_reading()

    # after an EOF the transport reads no more: resuming it would read the EOF again
    def pause_reading(self) -> None:
        if not (self.reading_paused or self.eof or self.lost):
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and not (self.eof or self.lost):
            self.reading_paused = False
            self.transport.resume_reading()


class Tunnel:
    """Relays bytes both ways between an upgraded client connection and its upstream.

    What the caller does before :meth:`start`:

    1. Pause reading on each transport as soon as its head is parsed (the client's
       request with ``Upgrade``, the upstream's 101), unless ``start`` runs in the same
       callback that read the head. Neither asyncio's nor uvloop's TCP transports keep
       a read buffer: while reading is paused the bytes wait in the kernel, and after
       the swap they reach the tunnel; a byte read before the pause belongs to the old
       protocol.
    2. Pass the bytes that came after each head in the same read: the client's as
       ``client_pending``, the upstream's as ``upstream_pending``. The tunnel writes
       them before anything it reads.
    3. Write the 101 to the client; the tunnel adds nothing of its own.
    4. Detach the old protocols, which get no ``connection_lost`` after the swap: the
       client connection leaves the listener's set and ends its task without touching
       the transport; the upstream connection leaves its pool, never to be reused, and
       its timer is cancelled.
    5. Hand over live transports: one already closing ends the tunnel at once.

    Write flow needs nothing: a transport may have told the old protocol
    ``pause_writing``, which it says only once, so one that still holds unsent bytes
    is put in the paused state again, where it reports ``resume_writing`` to the
    tunnel once it drains.

    ``on_close`` is called once, when both transports are done; ``reason`` then says
    what ended the tunnel: the end whose EOF or loss ended the last direction
    (``client_closed``, ``upstream_closed``), a limit, ``close``/``abort``'s reason
    (``shutdown`` unless given), or ``error`` (a transport refused the relay).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        client: asyncio.Transport,
        upstream: asyncio.Transport,
        limits: TunnelLimits,
        *,
        route: str = "",
        client_pending: bytes = b"",
        upstream_pending: bytes = b"",
        on_close: Callable[[Tunnel], None] | None = None,
    ) -> None:
        self.loop = loop
        self.limits = limits
        self.route = route
        self.on_close = on_close
        self._client = _End(self, client, "client_closed")
        self._upstream = _End(self, upstream, "upstream_closed")
        self._client.other, self._upstream.other = self._upstream, self._client
        self._pending = (client_pending, upstream_pending)
        self.opened_at = loop.time()
        self.last_activity = self.opened_at
        self.reason: EndReason | None = None
        self.closed = False  # both transports are done
        self._started = False
        self._timer: asyncio.TimerHandle | None = None
        self._done: asyncio.Future[None] = loop.create_future()

    @property
    def bytes_up(self) -> int:
        """Bytes from the client written to the upstream, ``client_pending`` included."""
        return self._client.relayed

    @property
    def bytes_down(self) -> int:
        """Bytes from the upstream written to the client, ``upstream_pending`` included."""
        return self._upstream.relayed

    def start(self) -> None:
        if self._started:
            raise RuntimeError("the tunnel is started already")
        self._started = True
        self.opened_at = self.last_activity = self.loop.time()
        ends = (self._client, self._upstream)
        try:
            for end in ends:
                end.transport.set_protocol(end)
            for end in ends:
                end.lost = end.transport.is_closing()
            gone = [end for end in ends if end.lost]
            if gone:
                self._end(gone[0].reason)
                self._finish_if_done()
                return
            for end in ends:
                if _holds_unsent(end.transport):
                    end.pause_writing()
            for end in ends:
                if not end.reading_paused:
                    end.transport.resume_reading()  # the caller paused it
            client_pending, upstream_pending = self._pending
            self._pending = (b"", b"")
            self._relay_pending(self._client, client_pending)
            self._relay_pending(self._upstream, upstream_pending)
        except Exception:
            log.exception("the tunnel of route %r could not start", self.route)
            self.abort("error")
            raise
        if self.reason is None:
            self._arm(self._next_deadline())

    def close(self, reason: EndReason = "shutdown") -> None:
        """End gracefully: each transport closes once its write buffer is flushed (or
        is aborted if that takes longer than ``idle_timeout``)."""
        self._check_started()
        self._end(reason)

    def abort(self, reason: EndReason = "shutdown") -> None:
        """End now: what is buffered is dropped."""
        self._check_started()
        self._end(reason, abort=True)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._done)

    def _check_started(self) -> None:
        if not self._started:
            raise RuntimeError("the tunnel has not started: its transports are not its own")

    def _relay_pending(self, source: _End, data: bytes) -> None:
        if data:
            source.other.transport.write(data)
            source.relayed += len(data)

    def _eof_from(self, end: _End) -> None:
        if self.reason is not None:
            return
        other = end.other
        if other.eof or not other.transport.can_write_eof():
            self._end(end.reason)
        else:
            other.transport.write_eof()  # after what is buffered for it

    def _lost(self, end: _End) -> None:
        if self.reason is None:
            self._end(end.reason)
        self._finish_if_done()

    def _end(self, reason: EndReason, *, abort: bool = False) -> None:
        ending = self.reason is None
        if ending:
            self.reason = reason
        for end in (self._client, self._upstream):
            if not end.lost:
                if abort:
                    end.transport.abort()
                else:
                    end.transport.close()
        if abort:
            self._cancel_timer()
        elif ending:
            self._arm(self.loop.time() + self.limits.idle_timeout)  # the close's bound

    def _finish_if_done(self) -> None:
        if self.closed or not (self._client.lost and self._upstream.lost):
            return
        self.closed = True
        self._cancel_timer()
        if not self._done.done():
            self._done.set_result(None)
        if self.on_close is not None:
            try:
                self.on_close(self)
            except Exception:
                log.exception("the on_close callback of a tunnel of route %r failed", self.route)

    # the one timer: idle timeout and max duration while open, the close's bound after
    def _next_deadline(self) -> float:
        idle_at = self.last_activity + self.limits.idle_timeout
        max_duration = self.limits.max_duration
        return min(idle_at, math.inf if max_duration is None else self.opened_at + max_duration)

    def _arm(self, when: float) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_at(when, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed:
            return
        if self.reason is not None:
            self._end(self.reason, abort=True)  # the close did not flush in time
            return
        now = self.loop.time() + TIMER_SLACK
        max_duration = self.limits.max_duration
        if max_duration is not None and now >= self.opened_at + max_duration:
            self._end("max_duration")
        elif now >= self.last_activity + self.limits.idle_timeout:
            self._end("idle_timeout")
        else:
            self._arm(self._next_deadline())


def _holds_unsent(transport: asyncio.Transport) -> bool:
    """Whether the transport still holds bytes to send; if so it is left paused for
    writing. Dropping the high-water mark to zero and back makes it pause (telling the
    tunnel) unless it is paused already; either way it says ``resume_writing`` once
    it drains to its low-water mark."""
    if not transport.get_write_buffer_size():
        return False
    low, high = transport.get_write_buffer_limits()
    transport.set_write_buffer_limits(high=0, low=0)
    transport.set_write_buffer_limits(high=high, low=low)
    return True
