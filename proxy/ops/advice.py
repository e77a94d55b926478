"""``/health`` recommendations: plain words an SRE can act on, each tied to one condition
of the report (:class:`proxy.ops.report.HealthReport`) and quoting its numbers."""

from __future__ import annotations

from proxy.config.runtime import Runtime
from proxy.ops.report import HealthReport, RouteReport, UpstreamReport


def span(seconds: float) -> str:
    """``42s``, ``12m``, ``3h05m``: durations as people say them."""
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def recommendations(report: HealthReport, runtime: Runtime) -> list[str]:
    said: list[str] = []
    for name, up in report.upstreams.items():
        said += _upstream(name, up)
    for name, route in report.routes.items():
        said += _route(name, route, runtime)
    cache = report.cache
    if cache.evictions and cache.bytes > 0.95 * cache.max_bytes:
        said.append(
            f"the cache is full ({cache.bytes} of {cache.max_bytes} bytes) and evicting: "
            "raise cache.max_size to keep more last good answers"
        )
    buffer = report.buffer
    if buffer is not None and buffer.depth:
        said.append(
            f"{buffer.depth} writes wait in the buffer (the oldest "
            f"{span(buffer.oldest_age_s or 0)} old); they are replayed as soon as an "
            "upstream of their route answers"
        )
    if buffer is not None and buffer.dead_letters:
        said.append(
            f"{buffer.dead_letters} buffered writes were refused by their upstream and wait "
            "as dead letters: see GET /admin/buffer, then retry or delete them"
        )
    config = report.config
    if config.needs_restart:
        said.append(
            "the config file changes "
            + ", ".join(config.needs_restart)
            + ": that takes a restart; the rest of the file is in use"
        )
    if config.last_reload_error:
        said.append(
            f"the last config reload failed ({config.last_reload_error}): the "
            "previous config is still in use"
        )
    return said


def _upstream(name: str, up: UpstreamReport) -> list[str]:
    said: list[str] = []
    circuit = up.circuit
    worst = next(iter(up.failures_since_start.items()), None)
    after = f" after {worst[1]} {worst[0]} failures" if worst else ""
    if up.drill is not None:
        said.append(
            f"a failover drill is running on upstream {name}: {up.drill.what}, "
            f"for another {span(up.drill.ends_in_s)}"
        )
    if circuit.forced:
        said.append(
            f"the circuit of upstream {name} is forced {circuit.state} by an operator "
            f"since {circuit.since}; set it back to automatic when done"
        )
    elif up.health_check.state == "down":
        check = up.health_check
        detail = check.detail if check.last is not None else "no detail"
        said.append(f"upstream {name} fails its health check ({detail}): it is skipped")
    elif circuit.state == "open":
        said.append(f"upstream {name} has been open since {circuit.since or ''}{after}")
    if up.cooldown_s > 0:
        said.append(
            f"upstream {name} asked us to back off (Retry-After): skipped for another "
            f"{span(up.cooldown_s)}"
        )
    rate, calls = up.failure_rate_last_minute, up.calls_last_minute
    if circuit.state == "closed" and rate is not None and rate >= 0.2 and calls >= 10:
        outcome = up.last_failure.outcome if up.last_failure is not None else "unknown"
        said.append(
            f"upstream {name} failed {rate:.0%} of {calls} calls in the last minute "
            f"({outcome} most recently)"
        )
    for quota in up.quota:
        if quota.warning is not None:
            said.append(
                f"upstream {name} has used {quota.share:.0%} of its "
                f"{quota.period.replace('_', ' ')} quota ({quota.used} of "
                f"{quota.limit}); it is skipped when the quota runs out"
            )
    return said


def _route(name: str, route: RouteReport, runtime: Runtime) -> list[str]:
    said: list[str] = []
    served, n = route.served_last_minute, route.requests_last_minute
    if served.get("cache") and route.oldest_stale_served_s is not None:
        said.append(
            f"the route {name} is serving stale data up to {span(route.oldest_stale_served_s)} old"
        )
    if served.get("default"):
        found = runtime.route(name)
        has_cache = found is not None and found.cache is not None
        said.append(
            f"the route {name} served its default payload to {served['default']:.0%} of "
            f"{n} requests in the last minute: every upstream failed and no cached "
            "answer was young enough"
            + ("" if has_cache else " (it has no cache: set cache.stale_for)")
        )
    if served.get("none"):
        said.append(
            f"the route {name} answered {served['none']:.0%} of {n} requests in the last "
            "minute with an error of its own: every upstream failed and it has no cached "
            "answer or default payload for them"
        )
    return said
