"""The main listener: accepts client connections (:mod:`proxy.http.client_connection`)
and sweeps their request-head deadlines with one timer for all of them, not a timer per
request. Stopping it stops accepting, lets requests being answered finish within a
grace, then closes what is left.
"""

from __future__ import annotations

import asyncio

from proxy.http.client_connection import ClientConnection
from proxy.http.request import Handler, ListenerLimits, RefusalAnswer
from proxy.http.wire import DATE

__all__ = ["Listener", "ListenerLimits"]


class Listener:
    """The main listener's server: its connections and the sweep of their deadlines."""

    def __init__(
        self,
        handler: Handler,
        refusal: RefusalAnswer,
        limits: ListenerLimits,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.handler = handler
        self.refusal = refusal
        self.limits = limits
        self.loop = loop
        self.connections: set[ClientConnection] = set()
        self.requests = 0  # request heads parsed, for the drain's idle check
        self.server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    def protocol(self) -> ClientConnection:
        return ClientConnection(self)

    async def start(self, host: str, port: int, *, backlog: int = 1024) -> int:
        DATE.start(self.loop)
        self.server = await self.loop.create_server(
            self.protocol, host, port, reuse_address=True, backlog=backlog
        )
        self._sweep()
        sockets = self.server.sockets
        return int(sockets[0].getsockname()[1]) if sockets else port

    def _sweep(self) -> None:
        now = self.loop.time()
        for conn in [conn for conn in self.connections if conn.expired(now)]:
            conn.deadline = None
            conn.time_out()
        interval = min(0.25, self.limits.header_timeout / 4)
        self._sweeper = self.loop.call_later(interval, self._sweep)

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    @property
    def busy(self) -> int:
        """Connections with a request being answered or waiting."""
        return sum(1 for conn in self.connections if conn.busy or conn.queued)

    async def close(self, grace: float) -> None:
        """Stop accepting; close idle connections now and busy ones after ``grace``."""
        self.stop_accepting()
        loop = self.loop
        until = loop.time() + grace
        while self.busy and loop.time() < until:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.cancel()
            if conn.transport is not None:
                conn.transport.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.server is not None:
            await self.server.wait_closed()
