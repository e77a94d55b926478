"""The ``/health`` report as typed records: what :mod:`proxy.ops.health` reads off the
proxy's state, what :mod:`proxy.ops.advice` turns into recommendations, and, in each
record's ``json()``, the one place its JSON form is written.

Numbers are kept as the JSON shows them (rounded, times as ISO strings), so the advice
quotes exactly what the reader sees beside it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from proxy.buffer.status import BufferStatus


@dataclass(frozen=True, slots=True)
class Circuit:
    state: str  # as a call now would find it
    forced: bool  # pinned by an operator
    since: str | None = None  # when it entered that state; None without a breaker
    retry_in_s: float | None = None  # an open breaker's wait
    enabled: bool = True  # False: the upstream has no breaker

    def json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"state": self.state, "forced": self.forced}
        if self.since is not None:
            body["since"] = self.since
        if self.retry_in_s is not None:
            body["retry_in_s"] = self.retry_in_s
        if not self.enabled:
            body["enabled"] = False
        return body


@dataclass(frozen=True, slots=True)
class CheckState:
    """The active health check: ``off``, ``up`` or ``down``, and its last result."""

    state: str
    last: str | None = None  # "passed" or "failed"; None before the first check
    detail: str | None = None
    at: str | None = None

    def json(self) -> dict[str, Any]:
        if self.last is None:
            return {"state": self.state}
        return {"state": self.state, "last": self.last, "detail": self.detail, "at": self.at}


@dataclass(frozen=True, slots=True)
class QuotaReport:
    period: str
    used: int
    limit: int
    share: float
    warning: float | None  # the warning level reached, if any

    def json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class DrillReport:
    kind: str
    percent: float
    what: str  # in words
    ends_in_s: float

    def json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class FailureReport:
    outcome: str  # the failure class
    at: str
    ago_s: float

    def json(self) -> dict[str, Any]:
        return {"class": self.outcome, "at": self.at, "ago_s": self.ago_s}


@dataclass(frozen=True, slots=True)
class UpstreamReport:
    circuit: Circuit
    calls_last_minute: int
    failure_rate_last_minute: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    last_failure: FailureReport | None
    failures_since_start: dict[str, int]  # failure class -> count, most common first
    skipped_since_start: dict[str, int]
    health_check: CheckState
    cooldown_s: float
    quota: tuple[QuotaReport, ...]
    in_flight: int
    drill: DrillReport | None

    def json(self) -> dict[str, Any]:
        return {
            "circuit": self.circuit.json(),
            "calls_last_minute": self.calls_last_minute,
            "failure_rate_last_minute": self.failure_rate_last_minute,
            "latency_ms": {"p50": self.latency_p50_ms, "p99": self.latency_p99_ms},
            "last_failure": None if self.last_failure is None else self.last_failure.json(),
            "failures_since_start": self.failures_since_start,
            "skipped_since_start": self.skipped_since_start,
            "health_check": self.health_check.json(),
            "cooldown_s": self.cooldown_s,
            "quota": [use.json() for use in self.quota],
            "in_flight": self.in_flight,
            "drill": None if self.drill is None else self.drill.json(),
        }


@dataclass(frozen=True, slots=True)
class RouteReport:
    health: str
    upstreams: tuple[str, ...]
    requests_last_minute: int
    served_last_minute: dict[str, float]  # source -> share of the requests
    requests_since_start: int
    served_since_start: dict[str, float]
    time_in_health_s: dict[str, float]
    oldest_stale_served_s: float | None
    open_tunnels: int = 0  # upgraded connections (WebSockets) relayed now

    def json(self) -> dict[str, Any]:
        body = dataclasses.asdict(self)
        body["upstreams"] = list(self.upstreams)
        return body


@dataclass(frozen=True, slots=True)
class CacheReport:
    entries: int
    bytes: int
    max_bytes: int
    oldest_age_s: float | None
    hits: int
    stale_serves: int
    misses: int
    collapsed: int
    evictions: int
    file: str | None

    def json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class ConfigReport:
    file: str | None
    loaded_at: str
    last_reload_error: str | None
    needs_restart: tuple[str, ...]  # changes a reload could not apply
    reloads: dict[str, int]  # "success"/"failure" -> count

    def json(self) -> dict[str, Any]:
        body = dataclasses.asdict(self)
        body["needs_restart"] = list(self.needs_restart)
        return body


@dataclass(frozen=True, slots=True)
class HealthReport:
    status: str  # the worst route health
    time: str
    uptime_s: float
    routes: dict[str, RouteReport]
    upstreams: dict[str, UpstreamReport]
    cache: CacheReport
    buffer: BufferStatus | None
    config: ConfigReport
    recent_events: tuple[dict[str, Any], ...]  # already JSON: nothing reads them back

    def json(self, recommendations: list[str]) -> dict[str, Any]:
        return {
            "status": self.status,
            "time": self.time,
            "uptime_s": self.uptime_s,
            "routes": {name: route.json() for name, route in self.routes.items()},
            "upstreams": {name: up.json() for name, up in self.upstreams.items()},
            "cache": self.cache.json(),
            "buffer": None if self.buffer is None else self.buffer.json(),
            "config": self.config.json(),
            "recent_events": list(self.recent_events),
            "recommendations": recommendations,
        }
