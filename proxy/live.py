"""What a reload swaps, with one owner: the runtime snapshot, the upstream pools and
guards, and which config generation they are.

Everyone else reads :attr:`Live.current`: the handler once at a request's start (the
request keeps that :class:`Generation` to its end, so it never sees a mix of two
configs), ``/health``, the metrics and the admin API whenever they answer. Only the
reloader calls :meth:`Live.swap`; the admin API's "switch primary" goes through
:meth:`Live.reorder`. Work still running on an older generation is counted here, so
the reloader closes a replaced pool only once nothing that could still use it runs.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

from proxy.config.runtime import Runtime, with_upstream_order
from proxy.upstreams.client import UpstreamClient
from proxy.upstreams.guard import UpstreamGuard


@dataclass(frozen=True, slots=True)
class Generation:
    """One config as served: never changed once swapped in (a reorder makes a new one
    with the same pools, guards and number)."""

    runtime: Runtime
    clients: dict[str, UpstreamClient]  # filled at start, before the first request
    guards: dict[str, UpstreamGuard]
    number: int


class Live:
    def __init__(
        self,
        runtime: Runtime,
        clients: dict[str, UpstreamClient],
        guards: dict[str, UpstreamGuard],
    ) -> None:
        self.current = Generation(runtime, clients, guards, 0)
        # Client requests and background work (refreshes, replays) still running, by the
        # generation they started on.
        self._active: Counter[int] = Counter()
        self._background = 0

    def swap(
        self,
        runtime: Runtime,
        clients: dict[str, UpstreamClient],
        guards: dict[str, UpstreamGuard],
    ) -> Generation:
        """A reloaded config, in one step with no await: from here new work reads it."""
        self.current = Generation(runtime, clients, guards, self.current.number + 1)
        return self.current

    def reorder(self, route_name: str, order: tuple[str, ...]) -> Generation:
        """The route's upstreams tried in ``order`` until the next reload. The pools and
        guards are the same ones, so the generation keeps its number (nothing to drain).
        Raises ValueError unless ``order`` is a permutation of the route's upstreams."""
        current = self.current
        runtime = with_upstream_order(current.runtime, route_name, order)
        self.current = dataclasses.replace(current, runtime=runtime)
        return self.current

    def using(self, number: int, *, background: bool = True) -> _Using:
        """Count work as using the pools of generation ``number``, so a reload does not
        close them under it; ``background`` is work no client waits for (a refresh, a
        replay), which a drain at shutdown does not wait for."""
        return _Using(self, number, background)

    def enter(self, number: int) -> None:
        """A client's request starts on generation ``number`` (:meth:`using` without a
        context manager object, for the request path; :meth:`leave` ends it)."""
        self._active[number] += 1

    def leave(self, number: int) -> None:
        self._active[number] -= 1

    def drained(self, number: int) -> bool:
        """Whether nothing that started before generation ``number`` is still running."""
        return not any(n for g, n in list(self._active.items()) if g < number)

    @property
    def in_flight(self) -> int:
        """Client requests being answered now (not background refreshes or replays):
        what a drain at shutdown waits for."""
        return sum(self._active.values()) - self._background


class _Using:
    """:meth:`Live.using` as a plain context manager: it wraps every request, and a
    generator-based one costs several times as much."""

    __slots__ = ("_background", "_live", "_number")

    def __init__(self, live: Live, number: int, background: bool) -> None:
        self._live, self._number, self._background = live, number, background

    def __enter__(self) -> None:
        live = self._live
        live.enter(self._number)
        live._background += self._background

    def __exit__(self, *exc_info: object) -> None:
        live = self._live
        live.leave(self._number)
        live._background -= self._background
