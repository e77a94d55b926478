"""What the proxy has done, counted for ``/health``, the metrics and the status page.
Pure: an injected clock, plain counters; nothing here does I/O.

Cheap on the request path by design: a request adds to a few ``Counter`` and list
slots; percentiles, shares and the Prometheus exposition are computed when someone
reads them. Every label kept here is a route or upstream name from the config or a
member of a fixed set (sources, healths, outcome classes, status classes), so the
number of series cannot grow with traffic.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

RECENT_SECONDS = 60
# Request duration buckets (seconds), for the histogram.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LATENCY_SAMPLES = 1024  # per upstream: p50/p99 are over the most recent calls


def status_class(status: int) -> str:
    return f"{status // 100}xx"


_CLASSES = {n: f"{n}xx" for n in range(1, 6)}


class RecentCounts:
    """Counts over the last ``seconds``, in one-second buckets."""

    __slots__ = ("_buckets", "_clock", "_seconds")  # one per route: 10,000 routes hold 10,000

    def __init__(self, clock: Callable[[], float], seconds: int = RECENT_SECONDS) -> None:
        self._clock = clock
        self._seconds = seconds
        # a list, not a deque: at most a minute of buckets, and an empty deque holds
        # 600 bytes, which 10,000 routes' stats would pay whether they see traffic or not
        self._buckets: list[tuple[int, Counter[str]]] = []

    def add(self, name: str, n: int = 1) -> None:
        second = int(self._clock())
        buckets = self._buckets
        if not buckets or buckets[-1][0] != second:
            buckets.append((second, Counter()))
            while buckets[0][0] <= second - self._seconds:
                del buckets[0]
        buckets[-1][1][name] += n

    def counts(self) -> Counter[str]:
        horizon = int(self._clock()) - self._seconds
        total: Counter[str] = Counter()
        for second, counts in self._buckets:
            if second > horizon:
                total.update(counts)
        return total


@dataclass(slots=True)
class Histogram:
    """Prometheus-style cumulative buckets, filled per observation in O(log buckets)."""

    bounds: tuple[float, ...] = DURATION_BUCKETS
    # filled at the first observation: a route that sees no traffic holds an empty list
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def observe(self, value: float) -> None:
        counts = self.counts
        if not counts:
            counts.extend([0] * (len(self.bounds) + 1))
        counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        running = 0
        out = []
        counts = self.counts or [0] * (len(self.bounds) + 1)
        for bound, count in zip((*map(str, self.bounds), "+Inf"), counts, strict=True):
            running += count
            out.append((bound, running))
        return out

    @property
    def count(self) -> int:
        return sum(self.counts)


_NO_REQUESTS: Counter[tuple[str, str, str]] = Counter()
_NO_RECENT = RecentCounts(time.monotonic)
_NO_DURATIONS = Histogram()
_NO_TIME: dict[str, float] = {}


class RouteStats:
    """Per route: who served its answers, with which health, and for how long it has
    been in each health state (the health its latest answer carried)."""

    __slots__ = (
        "_clock",
        "_stale",
        "_time_in",
        "durations",
        "health",
        "health_since",
        "name",
        "recent",
        "requests",
    )

    def __init__(self, name: str, clock: Callable[[], float]) -> None:
        self.name = name
        self._clock = clock
        # until the route's first request, shared empty counters (never written: the
        # first request gives the route its own), so 10,000 idle routes hold none
        self.requests: Counter[tuple[str, str, str]] = _NO_REQUESTS  # (source, health, class)
        self.recent = _NO_RECENT  # by source
        self.durations = _NO_DURATIONS
        self.health: str | None = None
        self.health_since = clock()
        self._stale: tuple[float, float] | None = None  # (when, age): oldest stale copy served
        self._time_in: dict[str, float] = _NO_TIME

    def record(self, source: str, health: str, status: int, seconds: float) -> None:
        if self.requests is _NO_REQUESTS:
            self.requests, self.recent = Counter(), RecentCounts(self._clock)
            self.durations, self._time_in = Histogram(), {}
        self.requests[source, health, _CLASSES.get(status // 100) or status_class(status)] += 1
        self.recent.add(source)
        self.durations.observe(seconds)
        if health != self.health:
            now = self._clock()
            if self.health is not None:
                spent = now - self.health_since
                self._time_in[self.health] = self._time_in.get(self.health, 0.0) + spent
            self.health, self.health_since = health, now

    @property
    def served(self) -> Counter[str]:
        """Answers by source since start (summed when read, not counted per request)."""
        by_source: Counter[str] = Counter()
        for (source, _, _), n in self.requests.items():
            by_source[source] += n
        return by_source

    def stale_served(self, age: float) -> None:
        now = self._clock()
        if self._stale is None or now - self._stale[0] > RECENT_SECONDS or age >= self._stale[1]:
            self._stale = (now, age)

    def oldest_stale_served(self) -> float | None:
        """The age of the oldest stale copy served in the last minute, when it was served."""
        if self._stale is None or self._clock() - self._stale[0] > RECENT_SECONDS:
            return None
        return round(self._stale[1], 1)

    def time_in_health(self) -> dict[str, float]:
        times = dict(self._time_in)
        if self.health is not None:
            times[self.health] = times.get(self.health, 0.0) + self._clock() - self.health_since
        return times


@dataclass(frozen=True, slots=True)
class LastFailure:
    outcome: str
    at: float  # wall clock


class UpstreamStats:
    """Per upstream: every try's outcome class, and latency of the tries that got an
    answer (``ok`` or a failed status)."""

    def __init__(
        self, name: str, clock: Callable[[], float], wall_clock: Callable[[], float]
    ) -> None:
        self.name = name
        self._wall_clock = wall_clock
        self.outcomes: Counter[str] = Counter()
        self.recent = RecentCounts(clock)  # "calls", "failures" (skips are not calls)
        self.latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.last_failure: LastFailure | None = None

    def answered(self, seconds: float) -> None:
        self.outcomes["ok"] += 1
        self.recent.add("calls")
        self.latencies.append(seconds)

    def failed(self, outcome: str, seconds: float | None) -> None:
        """A failed try; ``seconds`` when it got an answer (a failed status) in that time."""
        self.outcomes[outcome] += 1
        self.recent.add("calls")
        self.recent.add("failures")
        if seconds is not None:
            self.latencies.append(seconds)
        self.last_failure = LastFailure(outcome, self._wall_clock())

    def skipped(self, outcome: str) -> None:
        """Not called at all (its breaker, a cooldown, its limits): not a call."""
        self.outcomes[outcome] += 1

    def failure_rate(self) -> tuple[float | None, int]:
        """Failed share of the calls in the last minute (None without calls), and calls."""
        recent = self.recent.counts()
        calls = recent["calls"]
        return (recent["failures"] / calls if calls else None), calls

    def percentiles(self, *quantiles: float) -> list[float | None]:
        ordered = sorted(self.latencies)
        if not ordered:
            return [None for _ in quantiles]
        last = len(ordered) - 1
        return [ordered[min(last, round(q * last))] for q in quantiles]


@dataclass(slots=True)
class CacheStats:
    hits: int = 0  # fresh hits, and copies served while refreshed behind
    stale_serves: int = 0  # served because every upstream failed
    misses: int = 0  # went upstream
    collapsed: int = 0  # waited for another request's upstream call
    stored: int = 0


class Stats:
    """All of it, for one running proxy."""

    def __init__(
        self,
        routes: Iterable[str],
        upstreams: Iterable[str],
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        self.started = clock()
        self.started_wall = wall_clock()
        self.routes = {name: RouteStats(name, clock) for name in routes}
        self.upstreams = {name: UpstreamStats(name, clock, wall_clock) for name in upstreams}
        self.cache = CacheStats()
        self._clock = clock
        self._wall_clock = wall_clock

    def ensure(self, routes: Iterable[str], upstreams: Iterable[str]) -> None:
        """Counters for routes and upstreams a reload added (the old ones stay: Prometheus
        counters never go back)."""
        for name in routes:
            if name not in self.routes:
                self.routes[name] = RouteStats(name, self._clock)
        for name in upstreams:
            if name not in self.upstreams:
                self.upstreams[name] = UpstreamStats(name, self._clock, self._wall_clock)
