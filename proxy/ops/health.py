"""``/health``: what state the proxy is in, and why, in words an SRE can act on.
Pure: it reads the counters and guards it is given and returns a JSON-ready dict.

The rule for a route's health (docs/operations.md states it too):

- if the route answered in the last minute, the health its latest answer carried
  (``healthy``: from its first upstream; ``degraded``: from another upstream, or from a
  fresh cache entry while its first upstream is skipped; ``critical``: a stale copy, a
  default payload or an error);
- if it was idle, what a request would meet now: ``critical`` when every one of its
  upstreams is being skipped (circuit open, failing health check, cooling down),
  ``degraded`` when its first one is, else ``healthy``
  (:func:`proxy.chain.outcome.route_health`, the rule a cache hit's health follows too).

The proxy's overall health is the worst of its routes'.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from proxy.buffer.buffer import WriteBuffer
from proxy.cache.store import Store
from proxy.chain.errors import SKIPPED
from proxy.chain.outcome import route_health
from proxy.config.runtime import Runtime
from proxy.live import Live
from proxy.ops.advice import recommendations
from proxy.ops.report import (
    CacheReport,
    CheckState,
    Circuit,
    ConfigReport,
    DrillReport,
    FailureReport,
    HealthReport,
    QuotaReport,
    RouteReport,
    UpstreamReport,
)
from proxy.ops.stats import Stats
from proxy.upstreams.breaker import State
from proxy.upstreams.drills import Drills
from proxy.upstreams.events import EventLog
from proxy.upstreams.guard import UpstreamGuard

ORDER = {"healthy": 0, "degraded": 1, "critical": 2}


@dataclass
class ConfigInfo:
    file: str | None
    loaded_at: float  # wall clock
    last_reload_error: str | None = None
    reloads: dict[str, int] = field(default_factory=dict)  # "success"/"failure" -> count
    needs_restart: list[str] = field(default_factory=list)  # changes not applied by a reload


class TunnelCounts(Protocol):
    """What the reports read of the open tunnels (:class:`proxy.http.tunnels.Tunnels`)."""

    def count(self, route: str) -> int: ...

    def routes(self) -> list[str]: ...

    def bytes(self, route: str) -> tuple[int, int]: ...


@dataclass
class Observed:
    """Everything ``/health``, the metrics and the status page read."""

    live: Live
    stats: Stats
    store: Store
    events: EventLog
    drills: Drills
    config: ConfigInfo
    cache_file: Callable[[], str | None]  # the file the cache is kept in, if it is
    clock: Callable[[], float]
    wall_clock: Callable[[], float]
    buffer: WriteBuffer | None = None
    tunnels: TunnelCounts | None = None

    def runtime(self) -> Runtime:
        """The config being served now."""
        return self.live.current.runtime

    @property
    def guards(self) -> Mapping[str, UpstreamGuard]:
        """The guards of the config being served now."""
        return self.live.current.guards


def iso(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


def circuit_state(guard: UpstreamGuard, now: float) -> str:
    """As a call now would find it (:meth:`proxy.upstreams.guard.UpstreamGuard.circuit`)."""
    return str(guard.circuit(now))


def report(observed: Observed) -> dict[str, Any]:
    """The ``/health`` document: the report, and the advice drawn from it."""
    gathered = health_report(observed)
    return gathered.json(recommendations(gathered, observed.runtime()))


def health_report(observed: Observed) -> HealthReport:
    runtime = observed.runtime()
    now, wall = observed.clock(), observed.wall_clock()
    upstreams = {name: _upstream(observed, name, now, wall) for name in runtime.upstreams}
    routes = {route.name: _route(observed, route.name, route.upstreams) for route in runtime.routes}
    overall = max((r.health for r in routes.values()), key=ORDER.__getitem__, default="healthy")
    info = observed.config
    return HealthReport(
        status=overall,
        time=iso(wall),
        uptime_s=round(now - observed.stats.started, 1),
        routes=routes,
        upstreams=upstreams,
        cache=_cache(observed, now),
        buffer=None if observed.buffer is None else observed.buffer.status(),
        config=ConfigReport(
            file=info.file,
            loaded_at=iso(info.loaded_at),
            last_reload_error=info.last_reload_error,
            needs_restart=tuple(info.needs_restart),
            reloads=dict(info.reloads),
        ),
        recent_events=tuple(
            {
                "at": iso(wall - (now - event.at)),
                "upstream": event.upstream,
                "kind": event.kind,
                "detail": event.detail,
            }
            for event in reversed(observed.events.recent)
        )[:20],
    )


def _route(observed: Observed, name: str, upstreams: tuple[str, ...]) -> RouteReport:
    stats = observed.stats.routes[name]
    recent = stats.recent.counts()
    recent_total = sum(recent.values())
    if recent_total and stats.health is not None:
        health = stats.health
    else:
        health = str(route_health([observed.guards[u].skipping() for u in upstreams]))
    since_start = sum(stats.served.values())
    return RouteReport(
        health=health,
        upstreams=upstreams,
        requests_last_minute=recent_total,
        served_last_minute=_shares(recent, recent_total),
        requests_since_start=since_start,
        served_since_start=_shares(stats.served, since_start),
        time_in_health_s={k: round(v, 1) for k, v in stats.time_in_health().items()},
        oldest_stale_served_s=stats.oldest_stale_served(),
        open_tunnels=observed.tunnels.count(name) if observed.tunnels is not None else 0,
    )


def _shares(counts: Counter[str], total: int) -> dict[str, float]:
    return {source: round(n / total, 4) for source, n in counts.most_common()} if total else {}


def _circuit(guard: UpstreamGuard, now: float, wall: float) -> Circuit:
    state = circuit_state(guard, now)
    breaker = guard.breaker
    if guard.pinned is not None:
        return Circuit(state, forced=True, since=iso(wall - (now - guard.pinned_since)))
    if breaker is None:
        return Circuit(state, forced=False, enabled=False)
    retry_in = round(max(0.0, breaker.open_until - now), 1) if state == State.OPEN else None
    return Circuit(state, False, since=iso(wall - (now - breaker.since)), retry_in_s=retry_in)


def _check(observed: Observed, name: str, guard: UpstreamGuard) -> CheckState:
    if observed.runtime().upstreams[name].health_check is None:
        return CheckState("off")
    state = "up" if guard.check_healthy else "down"
    if guard.last_check is None:
        return CheckState(state)
    passed, detail, at = guard.last_check
    return CheckState(state, "passed" if passed else "failed", detail, iso(at))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _upstream(observed: Observed, name: str, now: float, wall: float) -> UpstreamReport:
    guard = observed.guards[name]
    stats = observed.stats.upstreams[name]
    rate, calls = stats.failure_rate()
    p50, p99 = stats.percentiles(0.5, 0.99)
    last = stats.last_failure
    drill = next((d for d in observed.drills.active() if d.upstream == name), None)
    outcomes = stats.outcomes.most_common()
    return UpstreamReport(
        circuit=_circuit(guard, now, wall),
        calls_last_minute=calls,
        failure_rate_last_minute=None if rate is None else round(rate, 4),
        latency_p50_ms=_ms(p50),
        latency_p99_ms=_ms(p99),
        last_failure=None
        if last is None
        else FailureReport(last.outcome, iso(last.at), round(wall - last.at, 1)),
        failures_since_start={o: n for o, n in outcomes if o != "ok" and o not in SKIPPED},
        skipped_since_start={o: n for o, n in outcomes if o in SKIPPED},
        health_check=_check(observed, name, guard),
        cooldown_s=round(max(0.0, guard.cooldown_until - now), 1),
        quota=tuple(
            QuotaReport(use.period, use.used, use.limit, round(use.share, 4), use.warning)
            for use in (guard.quota.use() if guard.quota is not None else [])
        ),
        in_flight=guard.in_flight,
        drill=None
        if drill is None
        else DrillReport(drill.kind, drill.percent, drill.describe(), round(drill.until - now, 1)),
    )


def _cache(observed: Observed, now: float) -> CacheReport:
    store = observed.store
    entries = store.items()
    oldest = max((now - entry.stored_at for _, entry in entries), default=None)
    counts = observed.stats.cache
    return CacheReport(
        entries=len(entries),
        bytes=store.bytes,
        max_bytes=store.max_bytes,
        oldest_age_s=None if oldest is None else round(oldest, 1),
        hits=counts.hits,
        stale_serves=counts.stale_serves,
        misses=counts.misses,
        collapsed=counts.collapsed,
        evictions=store.evictions,
        file=observed.cache_file(),
    )
