"""The report with the two cache targets: their ratios to failover-proxy and their target.

``failover-proxy-stale / failover-proxy`` is failover-proxy's throughput when every
answer comes from the stale cache (its only upstream down, its breaker open) over its
throughput proxying to a healthy upstream; ``failover-proxy-fresh / failover-proxy``
the same with every answer a ``fresh_for`` hit. Both runs are in the same ``run.py``
invocation, in the same rounds, as the ``failover-proxy`` runs they are divided by.
The target: at least 1.5 for both, at the throughput scenario (small -c50).
"""

from __future__ import annotations

from dataclasses import dataclass

from report import (
    PROXY,
    Report,
    Scenario,
    render_checks,
    render_latency,
    render_problems,
    render_ratios,
    render_table,
)

PROXY_STALE = "failover-proxy-stale"
PROXY_FRESH = "failover-proxy-fresh"
CACHED = {PROXY_STALE: "every answer from the stale cache", PROXY_FRESH: "fresh_for hits"}

MIN_CACHED_OVER_PROXY = 1.5


@dataclass
class CacheReport(Report):
    def cached_over_proxy(self, name: str, scenario: Scenario) -> float | None:
        return self.ratio(PROXY, scenario, mine=name)

    def checks(self) -> list[tuple[str, float | None, bool | None]]:
        found = super().checks()
        for name, what in CACHED.items():
            ratio = self.cached_over_proxy(name, self.throughput)
            found.append(
                (
                    f"{what}: {name}/{PROXY} req/s at {self.throughput.label} "
                    f">= {MIN_CACHED_OVER_PROXY}",
                    ratio,
                    None if ratio is None else ratio >= MIN_CACHED_OVER_PROXY,
                )
            )
        return found

    def to_json(self) -> dict[str, object]:
        data = super().to_json()
        ratios = data["ratios"]
        assert isinstance(ratios, dict)
        for name in CACHED:
            if name in self.targets:
                ratios[f"{name}/{PROXY}"] = {
                    s.key: self.cached_over_proxy(name, s) for s in self.scenarios
                }
        return data


def render_cached_ratios(report: CacheReport) -> list[str]:
    lines = []
    for name, what in CACHED.items():
        if name in report.targets:
            parts = [
                f"{s.label} {s.unit} {_ratio(report.cached_over_proxy(name, s))}"
                for s in report.scenarios
                if s.metric == "rps"
            ]
            lines.append(f"{name} / {PROXY} ({what}): " + ", ".join(parts))
    return lines


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render(report: CacheReport) -> str:
    """``report.render`` with the cache ratios after the other ratios."""
    ratios, cached = render_ratios(report), render_cached_ratios(report)
    sections = [
        [f"{k}: {v}" for k, v in report.summary.items()],
        render_table(report),
        [*ratios, *([""] if ratios and cached else []), *cached],
        render_latency(report),
        render_checks(report),
        render_problems(report),
    ]
    return "\n\n".join("\n".join(s) for s in sections if s)
