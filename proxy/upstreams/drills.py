"""Failover drills: faults an operator injects into calls to one upstream, to watch the
failover work before a real outage does it (the admin API starts them). Pure: an
injected clock and random source; the chain loop applies what :meth:`Drills.pick`
returns.

A drill hits a share of the calls (``percent``) with one kind of fault: ``latency``
(the call waits first, then goes out), ``error`` (answered with ``status`` without
reaching the upstream) or ``abort`` (the connection is reset). Injected failures count
as real ones (breakers trip, the chain moves on): that is the point of a drill. Every
drill ends by itself at ``until``; at most one runs per upstream.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from proxy.upstreams.events import EventLog

KINDS = ("latency", "error", "abort")


@dataclass(frozen=True, slots=True)
class Drill:
    upstream: str
    kind: str
    percent: float
    started: float
    until: float
    latency: float = 0.0  # kind latency: seconds added
    status: int = 503  # kind error: the status answered

    def describe(self) -> str:
        what = {
            "latency": f"delayed by {self.latency:g}s",
            "error": f"answered {self.status}",
            "abort": "aborted",
        }[self.kind]
        return f"{self.percent:g}% of calls {what}"


class Drills:
    def __init__(
        self,
        clock: Callable[[], float],
        events: EventLog,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self._clock = clock
        self._events = events
        self._uniform = uniform
        self._active: dict[str, Drill] = {}

    def start(self, drill: Drill) -> Drill | None:
        """Run ``drill``; returns the one it replaced, if any."""
        replaced = self._active.get(drill.upstream)
        self._active[drill.upstream] = drill
        seconds = drill.until - drill.started
        self._events.record(drill.upstream, "drill_start", f"{drill.describe()} for {seconds:g}s")
        return replaced

    def stop(self, upstream: str, why: str = "stopped by an operator") -> Drill | None:
        drill = self._active.pop(upstream, None)
        if drill is not None:
            self._events.record(upstream, "drill_end", why)
        return drill

    def active(self) -> list[Drill]:
        now = self._clock()
        for drill in list(self._active.values()):
            if now >= drill.until:
                self.stop(drill.upstream, "its time ran out")
        return list(self._active.values())

    def pick(self, upstream: str) -> Drill | None:
        """The drill to apply to this call to ``upstream``, if one runs and hits it."""
        if not self._active:
            return None
        drill = self._active.get(upstream)
        if drill is None:
            return None
        if self._clock() >= drill.until:
            self.stop(upstream, "its time ran out")
            return None
        if self._uniform(0.0, 100.0) >= drill.percent:
            return None
        return drill
