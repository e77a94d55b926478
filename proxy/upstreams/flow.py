"""Write backpressure for an asyncio protocol, shared by both sides of the data path
(the client connection and the upstream connection): the transport says when its
buffer is full (``pause_writing``) and when it has drained (``resume_writing``); a
writer awaits :meth:`WriteFlow.writable` between chunks, so neither side buffers an
unbounded body for a slow reader.
"""

from __future__ import annotations

import asyncio


class WriteFlow(asyncio.Protocol):
    """An asyncio protocol whose writers can wait for the transport to drain."""

    loop: asyncio.AbstractEventLoop
    _write_paused = False
    _write_waiter: asyncio.Future[None] | None = None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writer()

    def _wake_writer(self) -> None:
        """Let a waiting writer go on (the transport drained, or the connection is gone:
        the writer then sees that for itself)."""
        waiter = self._write_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def writable(self) -> None:
        """Return once the transport takes more (at once unless it is paused)."""
        if self._write_paused:
            self._write_waiter = self.loop.create_future()
            try:
                await self._write_waiter
            finally:
                self._write_waiter = None
