"""``/metrics``: the Prometheus exposition, via prometheus-client.

A custom collector reads :mod:`proxy.ops.stats`, the guards and the store when scraped,
so the request path never touches a prometheus-client object (its metrics take a
lock per update). Labels are route and upstream names from the config and members of
fixed sets only; docs/operations.md lists every metric.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from proxy.ops.health import Observed, circuit_state
from proxy.upstreams.breaker import State

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ProxyCollector(Collector):
    def __init__(self, observed: Observed) -> None:
        self.observed = observed

    def collect(self) -> Iterator[Metric]:
        yield from self._requests()
        yield from self._upstreams()
        yield from self._cache()
        yield from self._config()
        yield from self._buffer()
        yield from self._tunnels()

    def _tunnels(self) -> Iterator[Metric]:
        tunnels = self.observed.tunnels
        open_now = GaugeMetricFamily(
            "failover_tunnels_open",
            "Upgraded connections (WebSockets) relayed now, by route",
            labels=["route"],
        )
        relayed = CounterMetricFamily(
            "failover_tunnel_bytes",
            "Bytes relayed through tunnels by route and direction (up: client to upstream)",
            labels=["route", "direction"],
        )
        if tunnels is not None:
            for route in tunnels.routes():
                open_now.add_metric([route], tunnels.count(route))
                up, down = tunnels.bytes(route)
                relayed.add_metric([route, "up"], up)
                relayed.add_metric([route, "down"], down)
        yield from (open_now, relayed)

    def _requests(self) -> Iterator[Metric]:
        stats = self.observed.stats
        requests = CounterMetricFamily(
            "failover_requests",
            "Answers to clients, by route, the layer that served them, health, status class",
            labels=["route", "source", "health", "code_class"],
        )
        defaults = CounterMetricFamily(
            "failover_default_payloads",
            "Answers served from a route's default payload",
            labels=["route"],
        )
        errors = CounterMetricFamily(
            "failover_unavailable",
            "Errors of the proxy's own (503/504) after every upstream failed",
            labels=["route"],
        )
        durations = HistogramMetricFamily(
            "failover_request_duration_seconds",
            "Time from the request's arrival to its answer's end",
            labels=["route"],
        )
        for name, route in stats.routes.items():
            default = unavailable = 0
            for (source, health, code_class), n in route.requests.items():
                requests.add_metric([name, source, health, code_class], n)
                if source == "default":
                    default += n
                elif source == "none" and code_class == "5xx":
                    unavailable += n
            defaults.add_metric([name], default)
            errors.add_metric([name], unavailable)
            if route.durations.counts:  # a route's histogram from its first request on
                durations.add_metric([name], route.durations.cumulative(), route.durations.total)
        yield from (requests, defaults, errors, durations)

    def _upstreams(self) -> Iterator[Metric]:
        observed = self.observed
        attempts = CounterMetricFamily(
            "failover_upstream_attempts",
            "Tries per upstream by outcome: ok, a failure class, or why it was skipped",
            labels=["upstream", "outcome"],
        )
        in_flight = GaugeMetricFamily(
            "failover_upstream_in_flight", "Calls in flight", labels=["upstream"]
        )
        circuit = GaugeMetricFamily(
            "failover_circuit_state",
            "1 for the circuit's current state (forced states included)",
            labels=["upstream", "state"],
        )
        events = CounterMetricFamily(
            "failover_upstream_events",
            "State changes: circuit_open/half_open/closed/forced_*, check_up/down, "
            "cooldown_start/end, quota_75/90, drill_start/end",
            labels=["upstream", "kind"],
        )
        checks = CounterMetricFamily(
            "failover_health_checks",
            "Active health check results",
            labels=["upstream", "result"],
        )
        cooling = GaugeMetricFamily(
            "failover_cooldown_seconds",
            "Seconds left of a Retry-After cooldown (0: none)",
            labels=["upstream"],
        )
        quota_used = GaugeMetricFamily(
            "failover_quota_used",
            "Calls spent in the current quota window",
            labels=["upstream", "period"],
        )
        quota_limit = GaugeMetricFamily(
            "failover_quota_limit", "The quota window's limit", labels=["upstream", "period"]
        )
        drills = GaugeMetricFamily(
            "failover_drill_active", "1 while a failover drill runs", labels=["upstream"]
        )
        now = observed.clock()
        drilled = {drill.upstream for drill in observed.drills.active()}
        for name, guard in observed.guards.items():
            for outcome, n in observed.stats.upstreams[name].outcomes.items():
                attempts.add_metric([name, str(outcome)], n)
            in_flight.add_metric([name], guard.in_flight)
            current = circuit_state(guard, now)
            for state in State:
                circuit.add_metric([name, str(state)], 1.0 if str(state) == current else 0.0)
            checks.add_metric([name, "passed"], guard.check_results[True])
            checks.add_metric([name, "failed"], guard.check_results[False])
            cooling.add_metric([name], max(0.0, guard.cooldown_until - now))
            for use in guard.quota.use() if guard.quota is not None else []:
                quota_used.add_metric([name, use.period], use.used)
                quota_limit.add_metric([name, use.period], use.limit)
            drills.add_metric([name], 1.0 if name in drilled else 0.0)
        for (upstream, kind), n in observed.events.counts.items():
            events.add_metric([upstream, kind], n)
        yield from (attempts, in_flight, circuit, events, checks, cooling)
        yield from (quota_used, quota_limit, drills)

    def _cache(self) -> Iterator[Metric]:
        counts = self.observed.stats.cache
        store = self.observed.store
        for name, value, text in (
            ("hits", counts.hits, "Answers served from the cache without asking an upstream"),
            (
                "stale_serves",
                counts.stale_serves,
                "Stale answers served after every upstream failed",
            ),
            ("misses", counts.misses, "Cacheable requests that went upstream"),
            ("collapsed", counts.collapsed, "Requests that shared another's upstream call"),
            ("stores", counts.stored, "Answers kept"),
            ("evictions", store.evictions, "Entries evicted to stay within the bounds"),
        ):
            yield CounterMetricFamily(f"failover_cache_{name}", text, value=value)
        now = self.observed.clock()
        oldest = max((now - entry.stored_at for _, entry in store.items()), default=0.0)
        yield GaugeMetricFamily(
            "failover_cache_oldest_entry_age_seconds",
            "Age of the oldest answer held (0 when empty): how old a stale serve can be",
            value=oldest,
        )
        yield GaugeMetricFamily("failover_cache_entries", "Entries held", value=len(store))
        yield GaugeMetricFamily("failover_cache_bytes", "Bytes held", value=store.bytes)

    def _config(self) -> Iterator[Metric]:
        reloads = CounterMetricFamily(
            "failover_config_reloads", "Config reloads by result", labels=["result"]
        )
        for result in ("success", "failure"):
            reloads.add_metric([result], self.observed.config.reloads.get(result, 0))
        yield reloads
        yield GaugeMetricFamily(
            "failover_config_last_reload_failed",
            "1 while the last reload was refused (the old config still serves), else 0",
            value=1.0 if self.observed.config.last_reload_error else 0.0,
        )

    def _buffer(self) -> Iterator[Metric]:
        buffer = self.observed.buffer
        if buffer is None:
            return
        status = buffer.status()
        yield GaugeMetricFamily("failover_buffer_depth", "Writes waiting", value=status.depth)
        yield GaugeMetricFamily(
            "failover_buffer_bytes", "Bytes of buffered writes", value=status.bytes
        )
        yield GaugeMetricFamily(
            "failover_buffer_dead_letters", "Writes refused on replay", value=status.dead_letters
        )
        outcomes = CounterMetricFamily(
            "failover_buffer_writes",
            "Buffered writes by route and what happened: accepted, delivered, dead, retry",
            labels=["route", "outcome"],
        )
        for (route, outcome), n in buffer.totals.items():
            outcomes.add_metric([route, outcome], n)
        yield outcomes


def registry_for(observed: Observed) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProxyCollector(observed))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
