"""``/health``: what state the proxy is in, and why, in words an SRE can act on.
Pure: it reads the counters and guards it is given and returns a JSON-ready dict.

The rule for a route's health (the README states it too):

- if the route answered in the last minute, the health its latest answer carried
  (``healthy``: from its first upstream; ``degraded``: from another upstream, or from a
  fresh cache entry while its first upstream is skipped; ``critical``: a stale copy, a
  default payload or an error);
- if it was idle, what a request would meet now: ``critical`` when every one of its
  upstreams is being skipped (circuit open, failing health check, cooling down),
  ``degraded`` when its first one is, else ``healthy``.

The proxy's overall health is the worst of its routes'.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proxy.buffer.buffer import WriteBuffer
from proxy.cache.store import Store
from proxy.chain.errors import SKIPPED
from proxy.config.runtime import Runtime
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


@dataclass
class Observed:
    """Everything ``/health``, the metrics and the status page read."""

    runtime: Callable[[], Runtime]
    stats: Stats
    guards: dict[str, UpstreamGuard]
    store: Store
    events: EventLog
    drills: Drills
    config: ConfigInfo
    cache_file: Callable[[], str | None]  # the file the cache is kept in, if it is
    clock: Callable[[], float]
    wall_clock: Callable[[], float]
    buffer: WriteBuffer | None = None


def iso(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


def span(seconds: float) -> str:
    """``42s``, ``12m``, ``3h05m``: durations as people say them."""
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def circuit_state(guard: UpstreamGuard, now: float) -> str:
    """As a call now would find it: an open circuit whose time is up is half open (the
    breaker moves only when the next call asks, which an idle route never does)."""
    if guard.pinned is not None:
        return str(guard.pinned)
    if not guard.check_healthy:
        return str(State.OPEN)
    breaker = guard.breaker
    if breaker is None:
        return str(State.CLOSED)
    if breaker.state is State.OPEN and now >= breaker.open_until:
        return str(State.HALF_OPEN)
    return str(breaker.state)


def report(observed: Observed) -> dict[str, Any]:
    runtime = observed.runtime()
    now, wall = observed.clock(), observed.wall_clock()
    upstreams = {name: _upstream(observed, name, now, wall) for name in runtime.upstreams}
    routes = {route.name: _route(observed, route.name, route.upstreams) for route in runtime.routes}
    overall = max((r["health"] for r in routes.values()), key=ORDER.__getitem__, default="healthy")
    body: dict[str, Any] = {
        "status": overall,
        "time": iso(wall),
        "uptime_s": round(now - observed.stats.started, 1),
        "routes": routes,
        "upstreams": upstreams,
        "cache": _cache(observed, now),
        "buffer": None if observed.buffer is None else observed.buffer.status(),
        "config": {
            "file": observed.config.file,
            "loaded_at": iso(observed.config.loaded_at),
            "last_reload_error": observed.config.last_reload_error,
            "needs_restart": observed.config.needs_restart,
            "reloads": observed.config.reloads,
        },
        "recent_events": [
            {
                "at": iso(wall - (now - event.at)),
                "upstream": event.upstream,
                "kind": event.kind,
                "detail": event.detail,
            }
            for event in reversed(observed.events.recent)
        ][:20],
    }
    body["recommendations"] = recommendations(body, runtime)
    return body


def _route(observed: Observed, name: str, upstreams: tuple[str, ...]) -> dict[str, Any]:
    stats = observed.stats.routes[name]
    recent = stats.recent.counts()
    recent_total = sum(recent.values())
    if recent_total and stats.health is not None:
        health = stats.health
    else:
        skipped = [observed.guards[u].skipping() for u in upstreams]
        health = "critical" if all(skipped) else "degraded" if skipped[0] else "healthy"
    since_start = sum(stats.served.values())
    return {
        "health": health,
        "upstreams": list(upstreams),
        "requests_last_minute": recent_total,
        "served_last_minute": _shares(recent, recent_total),
        "requests_since_start": since_start,
        "served_since_start": _shares(stats.served, since_start),
        "time_in_health_s": {k: round(v, 1) for k, v in stats.time_in_health().items()},
        "oldest_stale_served_s": stats.oldest_stale_served(),
    }


def _shares(counts: Any, total: int) -> dict[str, float]:
    return {source: round(n / total, 4) for source, n in counts.most_common()} if total else {}


def _upstream(observed: Observed, name: str, now: float, wall: float) -> dict[str, Any]:
    guard = observed.guards[name]
    stats = observed.stats.upstreams[name]
    rate, calls = stats.failure_rate()
    p50, p99 = stats.percentiles(0.5, 0.99)
    breaker = guard.breaker
    circuit: dict[str, Any] = {
        "state": circuit_state(guard, now),
        "forced": guard.pinned is not None,
    }
    if guard.pinned is not None:
        circuit["since"] = iso(wall - (now - guard.pinned_since))
    elif breaker is not None:
        circuit["since"] = iso(wall - (now - breaker.since))
        if circuit["state"] == State.OPEN:
            circuit["retry_in_s"] = round(max(0.0, breaker.open_until - now), 1)
    else:
        circuit["enabled"] = False
    settings = observed.runtime().upstreams[name]
    check: dict[str, Any] = {"state": "off"}
    if settings.health_check is not None:
        check = {"state": "up" if guard.check_healthy else "down"}
        if guard.last_check is not None:
            passed, detail, at = guard.last_check
            check.update(last="passed" if passed else "failed", detail=detail, at=iso(at))
    last = stats.last_failure
    drill = next((d for d in observed.drills.active() if d.upstream == name), None)
    return {
        "circuit": circuit,
        "calls_last_minute": calls,
        "failure_rate_last_minute": None if rate is None else round(rate, 4),
        "latency_ms": {
            "p50": None if p50 is None else round(p50 * 1000, 2),
            "p99": None if p99 is None else round(p99 * 1000, 2),
        },
        "last_failure": None
        if last is None
        else {"class": last.outcome, "at": iso(last.at), "ago_s": round(wall - last.at, 1)},
        "failures_since_start": {
            outcome: n
            for outcome, n in stats.outcomes.most_common()
            if outcome != "ok" and outcome not in SKIPPED
        },
        "skipped_since_start": {
            outcome: n for outcome, n in stats.outcomes.most_common() if outcome in SKIPPED
        },
        "health_check": check,
        "cooldown_s": round(max(0.0, guard.cooldown_until - now), 1),
        "quota": [
            {
                "period": use.period,
                "used": use.used,
                "limit": use.limit,
                "share": round(use.share, 4),
                "warning": use.warning,
            }
            for use in (guard.quota.use() if guard.quota is not None else [])
        ],
        "in_flight": guard.in_flight,
        "drill": None
        if drill is None
        else {
            "kind": drill.kind,
            "percent": drill.percent,
            "what": drill.describe(),
            "ends_in_s": round(drill.until - now, 1),
        },
    }


def _cache(observed: Observed, now: float) -> dict[str, Any]:
    store = observed.store
    entries = store.items()
    oldest = max((now - entry.stored_at for _, entry in entries), default=None)
    counts = observed.stats.cache
    return {
        "entries": len(entries),
        "bytes": store.bytes,
        "max_bytes": store.max_bytes,
        "oldest_age_s": None if oldest is None else round(oldest, 1),
        "hits": counts.hits,
        "stale_serves": counts.stale_serves,
        "misses": counts.misses,
        "collapsed": counts.collapsed,
        "evictions": store.evictions,
        "file": observed.cache_file(),
    }


def recommendations(body: dict[str, Any], runtime: Runtime) -> list[str]:
    """Plain words, each tied to a condition in ``body``."""
    said: list[str] = []
    routes_of: dict[str, list[str]] = {}
    for route in runtime.routes:
        for upstream in route.upstreams:
            routes_of.setdefault(upstream, []).append(route.name)
    for name, up in body["upstreams"].items():
        circuit = up["circuit"]
        failures = up["failures_since_start"]
        worst = next(iter(failures.items()), None)
        after = f" after {worst[1]} {worst[0]} failures" if worst else ""
        if up["drill"] is not None:
            said.append(
                f"a failover drill is running on upstream {name}: {up['drill']['what']}, "
                f"for another {span(up['drill']['ends_in_s'])}"
            )
        if circuit["forced"]:
            said.append(
                f"the circuit of upstream {name} is forced {circuit['state']} by an operator "
                f"since {circuit['since']}; set it back to automatic when done"
            )
        elif up["health_check"]["state"] == "down":
            said.append(
                f"upstream {name} fails its health check "
                f"({up['health_check'].get('detail', 'no detail')}): it is skipped"
            )
        elif circuit["state"] == "open":
            opened = circuit.get("since", "")
            said.append(f"upstream {name} has been open since {opened}{after}")
        if up["cooldown_s"] > 0:
            said.append(
                f"upstream {name} asked us to back off (Retry-After): skipped for another "
                f"{span(up['cooldown_s'])}"
            )
        rate = up["failure_rate_last_minute"]
        calls = up["calls_last_minute"]
        if circuit["state"] == "closed" and rate is not None and rate >= 0.2 and calls >= 10:
            said.append(
                f"upstream {name} failed {rate:.0%} of {calls} calls in the last minute "
                f"({up['last_failure']['class']} most recently)"
            )
        for quota in up["quota"]:
            if quota["warning"] is not None:
                said.append(
                    f"upstream {name} has used {quota['share']:.0%} of its "
                    f"{quota['period'].replace('_', ' ')} quota ({quota['used']} of "
                    f"{quota['limit']}); it is skipped when the quota runs out"
                )
    for name, route in body["routes"].items():
        served = route["served_last_minute"]
        n = route["requests_last_minute"]
        if served.get("cache") and route["oldest_stale_served_s"] is not None:
            said.append(
                f"the route {name} is serving stale data up to "
                f"{span(route['oldest_stale_served_s'])} old"
            )
        if served.get("default"):
            said.append(
                f"the route {name} served its default payload to {served['default']:.0%} of "
                f"{n} requests in the last minute: every upstream failed and no cached "
                "answer was young enough"
                + ("" if _has_cache(runtime, name) else " (it has no cache: set cache.stale_for)")
            )
        if served.get("none"):
            said.append(
                f"the route {name} answered {served['none']:.0%} of {n} requests in the last "
                "minute with an error of its own: every upstream failed and it has no cached "
                "answer or default payload for them"
            )
    cache = body["cache"]
    if cache["evictions"] and cache["bytes"] > 0.95 * cache["max_bytes"]:
        said.append(
            f"the cache is full ({cache['bytes']} of {cache['max_bytes']} bytes) and evicting: "
            "raise cache.max_size to keep more last good answers"
        )
    buffer = body["buffer"]
    if buffer is not None and buffer["depth"]:
        said.append(
            f"{buffer['depth']} writes wait in the buffer (the oldest "
            f"{span(buffer['oldest_age_s'] or 0)} old); they are replayed as soon as an "
            "upstream of their route answers"
        )
    if buffer is not None and buffer["dead_letters"]:
        said.append(
            f"{buffer['dead_letters']} buffered writes were refused by their upstream and wait "
            "as dead letters: see GET /admin/buffer, then retry or delete them"
        )
    if body["config"]["needs_restart"]:
        said.append(
            "the config file changes "
            + ", ".join(body["config"]["needs_restart"])
            + ": that takes a restart; the rest of the file is in use"
        )
    if body["config"]["last_reload_error"]:
        said.append(
            f"the last config reload failed ({body['config']['last_reload_error']}): the "
            "previous config is still in use"
        )
    return said


def _has_cache(runtime: Runtime, route: str) -> bool:
    return any(r.name == route and r.cache is not None for r in runtime.routes)
