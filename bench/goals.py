"""The performance targets of issue 14, evaluated on one run's report.

Every target is a ratio or a difference between targets measured in the same run (and
the same rounds), so a slow or busy host moves both sides. Each check says met,
missed, or n/a (a target it needs was not run or not measured), with its numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from names import (
    BARE,
    FAILOVER,
    NGINX,
    PROXY,
    PROXY_FRESH,
    PROXY_FULL,
    PROXY_LOG,
    PROXY_OPEN,
    PROXY_STALE,
    ROUTES,
    ROUTES_FEW,
    ROUTES_MANY,
    ROUTES_MID,
)

if TYPE_CHECKING:
    from report import Report

MIN_CPU_EFFICIENCY = 2.0  # bare-aiohttp's CPU per request over failover-proxy-full's
CPU_EFFICIENCY_FLOOR = 1.6  # below this the issue is not done
MAX_P50_OVER_NGINX_MS = 0.05  # small -c1
MIN_BIG_OVER_NGINX = 0.9  # 1 MiB -c4 MiB/s
MIN_OPEN_OVER_FULL = 0.95
MIN_FRESH_OVER_FULL = 3.0
MIN_STALE_OVER_PROXY = 1.5  # an earlier target, kept
MIN_LOG_OVER_FULL = 0.85  # the access log costs at most 15%
MAX_IDLE_RSS_MB = 60.0
MIN_MANY_ROUTES_OVER_FEW = 0.95
MAX_MANY_ROUTES_RSS_MB = 100.0


@dataclass(frozen=True)
class Check:
    text: str
    value: float | None
    passed: bool | None  # None: not measured
    detail: str

    def to_json(self) -> dict[str, object]:
        return {
            "check": self.text,
            "value": self.value,
            "passed": self.passed,
            "detail": self.detail,
        }


def _n(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _at_least(text: str, value: float | None, goal: float, detail: str) -> Check:
    if value is None:
        return Check(text, None, None, "not measured (a target it needs did not run)")
    return Check(text, value, value >= goal, detail)


def evaluate(report: Report) -> list[Check]:
    return [
        cpu_efficiency(report),
        latency(report),
        big_bodies(report),
        variant(report, PROXY_OPEN, PROXY_FULL, MIN_OPEN_OVER_FULL, "open-breaker path"),
        variant(report, PROXY_FRESH, PROXY_FULL, MIN_FRESH_OVER_FULL, "fresh_for hits"),
        variant(report, PROXY_STALE, PROXY, MIN_STALE_OVER_PROXY, "stale-cache answers"),
        variant(report, PROXY_LOG, PROXY_FULL, MIN_LOG_OVER_FULL, "access log on"),
        idle_rss(report),
        many_routes(report),
        many_routes_rss(report),
    ]


def cpu_efficiency(report: Report) -> Check:
    value = report.efficiency(BARE, PROXY_FULL)
    mine, bare = report.cpu(PROXY_FULL), report.cpu(BARE)
    text = (
        f"CPU per request at {report.throughput.label}: {BARE}'s / {PROXY_FULL}'s "
        f">= {MIN_CPU_EFFICIENCY} (floor {CPU_EFFICIENCY_FLOOR})"
    )
    detail = f"{_n(value, 2)}x ({_n(mine, 1)} us vs {_n(bare, 1)} us"
    if value is not None and value < MIN_CPU_EFFICIENCY:
        side = "above" if value >= CPU_EFFICIENCY_FLOOR else "BELOW"
        detail += f"; {side} the {CPU_EFFICIENCY_FLOOR} floor"
    nginx = report.efficiency(NGINX, PROXY_FULL)
    if nginx is not None:
        detail += f"; {nginx:.2f}x nginx's {_n(report.cpu(NGINX), 1)} us"
    return _at_least(text, value, MIN_CPU_EFFICIENCY, detail + ")")


def latency(report: Report) -> Check:
    value = report.added_p50_ms(PROXY_FULL, over=NGINX)
    text = (
        f"p50 at {report.single.label}: {PROXY_FULL} within {MAX_P50_OVER_NGINX_MS} ms of {NGINX}"
    )
    detail = f"{_n(value)} ms ({_n(report.p50(PROXY_FULL))} ms vs {_n(report.p50(NGINX))} ms)"
    if value is None:
        return Check(text, None, None, "not measured (a target it needs did not run)")
    return Check(text, value, value <= MAX_P50_OVER_NGINX_MS, detail)


def big_bodies(report: Report) -> Check:
    s = report.big
    value = report.ratio(NGINX, s, PROXY_FULL)
    text = f"{s.label} {s.unit}: {PROXY_FULL}/{NGINX} >= {MIN_BIG_OVER_NGINX}"
    detail = (
        f"{_n(value)} ({_n(report.value(PROXY_FULL, s), 1)} vs {_n(report.value(NGINX, s), 1)} "
        f"{s.unit})"
    )
    return _at_least(text, value, MIN_BIG_OVER_NGINX, detail)


def variant(report: Report, mine: str, reference: str, goal: float, what: str) -> Check:
    s = report.throughput
    value = report.ratio(reference, s, mine)
    by_cpu = report.efficiency(reference, mine)  # reference's CPU/req over mine
    text = f"{what}: {mine}/{reference} req/s at {s.label} >= {goal}"
    ours, theirs = report.value(mine, s), report.value(reference, s)
    detail = f"{_n(value)} ({_n(ours, 0)} vs {_n(theirs, 0)} req/s; by CPU/request {_n(by_cpu)})"
    return _at_least(text, value, goal, detail)


def idle_rss(report: Report) -> Check:
    """Every failover-proxy target with a handful of routes (the many-routes ones have
    their own bound)."""
    names = [n for n in FAILOVER if n not in (ROUTES_MID, ROUTES_MANY)]
    measured = {n: report.rss_mb(n, "idle") for n in names}
    known = {n: v for n, v in measured.items() if v is not None}
    text = f"RSS idle <= {MAX_IDLE_RSS_MB:g} MB, every failover-proxy target (up to 10 routes)"
    if not known:
        return Check(text, None, None, "not measured (no failover-proxy target ran)")
    worst = max(known, key=lambda n: known[n])
    detail = f"largest {known[worst]:.1f} MB ({worst}); " + ", ".join(
        f"{n} {v:.1f}" for n, v in known.items()
    )
    return Check(text, known[worst], known[worst] <= MAX_IDLE_RSS_MB, detail)


def many_routes(report: Report) -> Check:
    s = report.throughput
    value = report.ratio(ROUTES_FEW, s, ROUTES_MANY)
    mid = report.ratio(ROUTES_FEW, s, ROUTES_MID)
    text = (
        f"{ROUTES[ROUTES_MANY]:,} routes (match last) >= {MIN_MANY_ROUTES_OVER_FEW}x "
        f"the req/s of {ROUTES[ROUTES_FEW]}"
    )
    many, few = report.value(ROUTES_MANY, s), report.value(ROUTES_FEW, s)
    detail = (
        f"{_n(value)} ({_n(many, 0)} vs {_n(few, 0)} req/s; "
        f"{ROUTES[ROUTES_MID]:,} routes: {_n(mid)})"
    )
    return _at_least(text, value, MIN_MANY_ROUTES_OVER_FEW, detail)


def many_routes_rss(report: Report) -> Check:
    idle, loaded = report.rss_mb(ROUTES_MANY, "idle"), report.rss_mb(ROUTES_MANY, "loaded")
    known = [v for v in (idle, loaded) if v is not None]
    value = max(known) if known else None
    text = f"{ROUTES[ROUTES_MANY]:,} routes: RSS < {MAX_MANY_ROUTES_RSS_MB:g} MB"
    detail = f"{_n(value, 1)} MB (idle {_n(idle, 1)}, after load {_n(loaded, 1)})"
    if value is None:
        return Check(text, None, None, "not measured (the target did not run)")
    return Check(text, value, value < MAX_MANY_ROUTES_RSS_MB, detail)
