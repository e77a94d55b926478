"""The open tunnels of every route (:mod:`proxy.http.tunnel` relays one): the per-route
cap on them, their counts and bytes for ``/metrics`` and ``/health``, and closing them
at shutdown.

A tunnel belongs to no config generation: its upstream connection left its pool at the
``101``, so a reload that closes the old pools leaves it alone, and it lives until one
end closes, a limit ends it, or the proxy shuts down. A route's slot is taken before
the handshake is sent (a cap of 10 never lets an 11th handshake reach an upstream) and
given back if no tunnel comes of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

from proxy.config.runtime import UpgradeSettings
from proxy.http.tunnel import Tunnel, TunnelLimits
from proxy.upstreams.response import UpstreamResponse

log = logging.getLogger("failover_proxy")

# What the client connection calls once the 101 is written: its transport, and the
# bytes the client sent after its request's head.
TunnelStart = Callable[[asyncio.Transport, bytes], None]


class Tunnels:
    def __init__(self) -> None:
        self._open: dict[str, set[Tunnel]] = {}
        self._reserved: Counter[str] = Counter()
        self._bytes_up: Counter[str] = Counter()  # of tunnels that ended
        self._bytes_down: Counter[str] = Counter()
        self.opened: Counter[str] = Counter()  # tunnels opened since start, by route

    def reserve(self, route: str, settings: UpgradeSettings) -> bool:
        """Take a slot for a handshake on ``route``; False when the route is at its cap."""
        if len(self._open.get(route, ())) + self._reserved[route] >= settings.max_tunnels:
            return False
        self._reserved[route] += 1
        return True

    def release(self, route: str) -> None:
        """The handshake ended without a tunnel (or the tunnel took the slot over)."""
        if self._reserved[route] > 0:
            self._reserved[route] -= 1

    def opener(
        self, route: str, settings: UpgradeSettings, response: UpstreamResponse
    ) -> TunnelStart:
        """What joins the client to ``response``'s connection once the 101 is out."""

        def start(client: asyncio.Transport, client_pending: bytes) -> None:
            upstream, upstream_pending = response.detach()
            tunnel = Tunnel(
                asyncio.get_running_loop(),
                client,
                upstream,
                TunnelLimits(settings.idle_timeout, settings.max_duration),
                route=route,
                client_pending=client_pending,
                upstream_pending=upstream_pending,
                on_close=self._closed,
            )
            self._open.setdefault(route, set()).add(tunnel)
            self.opened[route] += 1
            tunnel.start()

        return start

    def _closed(self, tunnel: Tunnel) -> None:
        tunnels = self._open.get(tunnel.route)
        if tunnels is not None:
            tunnels.discard(tunnel)
        self._bytes_up[tunnel.route] += tunnel.bytes_up
        self._bytes_down[tunnel.route] += tunnel.bytes_down
        log.debug(
            "tunnel of route %s closed (%s): %d bytes up, %d down",
            tunnel.route,
            tunnel.reason,
            tunnel.bytes_up,
            tunnel.bytes_down,
        )

    def count(self, route: str) -> int:
        return len(self._open.get(route, ()))

    @property
    def total(self) -> int:
        return sum(len(tunnels) for tunnels in self._open.values())

    def routes(self) -> list[str]:
        """Every route that has had a tunnel since start."""
        return sorted(set(self._open) | set(self.opened))

    def bytes(self, route: str) -> tuple[int, int]:
        """Bytes relayed on ``route``'s tunnels since start, (up, down): the client's to
        the upstream, and back; open tunnels included."""
        up, down = self._bytes_up[route], self._bytes_down[route]
        for tunnel in self._open.get(route, ()):
            up += tunnel.bytes_up
            down += tunnel.bytes_down
        return up, down

    async def close_all(self, grace: float) -> None:
        """Shutdown: tunnels still open after ``grace`` seconds are closed (each end
        flushed first, or aborted if that hangs)."""
        tunnels = [tunnel for group in self._open.values() for tunnel in group]
        if not tunnels:
            return
        waiting = [asyncio.ensure_future(tunnel.wait_closed()) for tunnel in tunnels]
        _, pending = await asyncio.wait(waiting, timeout=grace)
        for future in pending:
            future.cancel()
        still = [tunnel for tunnel in tunnels if not tunnel.closed]
        if still:
            log.info("shutdown: closing %d tunnels after shutdown_grace", len(still))
        for tunnel in still:
            tunnel.close("shutdown")
        if still:
            await asyncio.wait(
                [asyncio.ensure_future(tunnel.wait_closed()) for tunnel in still], timeout=2.0
            )
