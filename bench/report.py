"""Turning load results into the numbers the issue asks for, as text and as JSON.

Ratios are one target's throughput divided by another's in the same scenario (req/s
for the small body, MiB/s for the 1 MiB body), medians over the rounds. proxy/direct
is the share of the upstream's speed left after the proxy hop, proxy/bare how close
failover-proxy gets to the least an aiohttp proxy can do, proxy/nginx compares with a
C proxy. "Added p50" is a target's median latency at -c 1 minus direct's: the time
the hop adds to a single request on an idle system.

CPU per request is the server's CPU time (user + system, its whole process group,
from /proc; see usage.py) over a -c 50 run divided by the requests wrk completed in
it. "x as efficient" is another target's CPU per request over ours: 2.0 means we
spend half of its CPU on a request. RSS is the server's resident memory right after
it started and answered its readiness checks ("idle") and right after its last run
("load"), the largest over the rounds.

The same-proxy comparisons (``names.VARIANTS``: open breaker, fresh hits, stale
cache, access log, many routes) divide a variant's throughput by its reference's;
``goals.py`` turns all of this into the issue's targets, met or missed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import goals
from measure import LoadResult
from names import BARE, DIRECT, FAILOVER, NGINX, PROXY, PROXY_FULL, VARIANTS

MIN_PROXY_OVER_BARE = 0.85  # the earlier throughput goal, still instructions.py's
MB = 1e6


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    path: str
    connections: int
    metric: str  # "rps" or "mib_per_s": what the ratios compare

    @property
    def unit(self) -> str:
        return "req/s" if self.metric == "rps" else "MiB/s"


@dataclass
class TargetResult:
    name: str
    samples: dict[str, list[LoadResult]] = field(default_factory=dict)  # one per round
    status: str = "ok"  # ok | failed | skipped
    error: str | None = None
    affinity: list[int] | None = None
    rss_idle: list[int] = field(default_factory=list)  # bytes, one per round
    rss_loaded: list[int] = field(default_factory=list)

    def add(self, scenario: Scenario, run: LoadResult) -> None:
        self.samples.setdefault(scenario.key, []).append(run)

    @property
    def runs(self) -> dict[str, LoadResult]:
        """Per scenario, the median over rounds (the run itself with one round)."""
        return {key: LoadResult.median_of(runs) for key, runs in self.samples.items()}

    @property
    def rss_mb(self) -> dict[str, float | None]:
        """The largest idle and after-load RSS over the rounds, in MB."""
        return {
            "idle": max(self.rss_idle) / MB if self.rss_idle else None,
            "loaded": max(self.rss_loaded) / MB if self.rss_loaded else None,
        }


@dataclass
class Report:
    summary: dict[str, str]  # what ran how, for people
    meta: dict[str, object]  # the same, for programs
    scenarios: list[Scenario]
    targets: dict[str, TargetResult]

    @property
    def throughput(self) -> Scenario:
        return self.scenarios[0]

    @property
    def single(self) -> Scenario:
        return self.scenarios[1]

    @property
    def big(self) -> Scenario:
        return self.scenarios[2]

    def run(self, target: str, scenario: Scenario) -> LoadResult | None:
        found = self.targets.get(target)
        return found.runs.get(scenario.key) if found else None

    def value(self, target: str, scenario: Scenario) -> float | None:
        run = self.run(target, scenario)
        return getattr(run, scenario.metric) if run else None

    def ratio(self, other: str, scenario: Scenario, mine: str = PROXY) -> float | None:
        """``mine``'s throughput over ``other``'s in ``scenario`` (None if either is missing)."""
        ours, theirs = self.value(mine, scenario), self.value(other, scenario)
        return ours / theirs if ours is not None and theirs else None

    def cpu(self, target: str, scenario: Scenario | None = None) -> float | None:
        """CPU microseconds per request of ``target`` (at -c 50 unless told)."""
        run = self.run(target, scenario or self.throughput)
        return run.cpu_us_per_request if run else None

    def efficiency(self, other: str, mine: str = PROXY_FULL) -> float | None:
        """``other``'s CPU per request over ``mine``'s at -c 50: 2.0 = half the CPU."""
        ours, theirs = self.cpu(mine), self.cpu(other)
        return theirs / ours if ours and theirs is not None else None

    def p50(self, target: str) -> float | None:
        run = self.run(target, self.single)
        return run.p50_ms if run else None

    def added_p50_ms(self, target: str, over: str = DIRECT) -> float | None:
        mine, base = self.p50(target), self.p50(over)
        return mine - base if mine is not None and base is not None else None

    def rss_mb(self, target: str, when: str) -> float | None:
        found = self.targets.get(target)
        return found.rss_mb[when] if found else None

    def checks(self) -> list[goals.Check]:
        return goals.evaluate(self)

    def to_json(self) -> dict[str, object]:
        ratios: dict[str, dict[str, float | None]] = {}
        for mine in (PROXY, PROXY_FULL):
            for other in (DIRECT, BARE, NGINX):
                if mine in self.targets and other in self.targets:
                    ratios[f"{mine}/{other}"] = {
                        s.key: self.ratio(other, s, mine) for s in self.scenarios
                    }
        for variant, reference, _ in VARIANTS:
            if variant in self.targets and reference in self.targets:
                ratios[f"{variant}/{reference}"] = {
                    s.key: self.ratio(reference, s, variant) for s in self.scenarios
                }
        efficiency = {
            f"{mine} vs {other}": self.efficiency(other, mine)
            for mine in (PROXY, PROXY_FULL)
            for other in (BARE, NGINX)
            if mine in self.targets and other in self.targets
        }
        return {
            "summary": self.summary,
            "meta": self.meta,
            "scenarios": [asdict(s) for s in self.scenarios],
            "targets": {
                name: {
                    **asdict(t),
                    "runs": {k: asdict(r) for k, r in t.runs.items()},
                    "rss_mb": t.rss_mb,
                }
                for name, t in self.targets.items()
            },
            "cpu_us_per_request": {
                name: {s.key: self.cpu(name, s) for s in self.scenarios} for name in self.targets
            },
            "cpu_efficiency": efficiency,
            "ratios": ratios,
            "added_p50_ms": {
                name: self.added_p50_ms(name) for name in self.targets if name != DIRECT
            },
            "checks": [c.to_json() for c in self.checks()],
        }


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _run_cells(run: LoadResult | None, scenario: Scenario, with_cpu: bool) -> list[str]:
    if scenario.metric != "rps":
        return [_num(run.mib_per_s) + ("" if run.clean else "!")] if run else ["-"]
    if run is None:
        return ["-"] * (4 if with_cpu else 3)
    cells = [_num(run.rps) + ("" if run.clean else "!"), _num(run.p50_ms, 3), _num(run.p99_ms, 3)]
    return [*cells, _num(run.cpu_us_per_request)] if with_cpu else cells


def _row(cells: list[str], first: int = 16, width: int = 11) -> str:
    return cells[0].ljust(first) + "".join(cell.rjust(width) for cell in cells[1:])


def render_table(report: Report) -> list[str]:
    header, units = [""], ["target"]
    for s in report.scenarios:
        if s is report.throughput:
            header += ["", s.label, "", ""]
            units += ["req/s", "p50 ms", "p99 ms", "CPU us/req"]
        elif s.metric == "rps":
            header += ["", s.label, ""]
            units += ["req/s", "p50 ms", "p99 ms"]
        else:
            header.append(s.label)
            units.append("MiB/s")
    header += ["RSS MB", ""]
    units += ["idle", "load"]
    first = max([16, *(len(name) + 2 for name in report.targets)])
    lines = [_row(header, first), _row(units, first)]
    for target in report.targets.values():
        if target.status != "ok" and not target.runs:
            error = _first_line(target.error)
            lines.append(f"{target.name:<{first}}{target.status.upper()}: {error}")
            continue
        cells = [target.name]
        for s in report.scenarios:
            cells += _run_cells(target.runs.get(s.key), s, s is report.throughput)
        rss = target.rss_mb
        cells += [_num(rss["idle"]), _num(rss["loaded"])]
        lines.append(_row(cells, first))
    return lines


def _first_line(text: str | None) -> str:
    return (text or "").splitlines()[0] if text else ""


def render_ratios(report: Report) -> list[str]:
    heads = [f"{s.label} {s.unit}" for s in report.scenarios]
    lines: list[str] = []
    for mine in (PROXY_FULL, PROXY):
        others = [n for n in (DIRECT, BARE, NGINX) if n in report.targets]
        if mine not in report.targets or not others:
            continue
        lines += [""] if lines else []
        lines.append(_row([f"{mine} / ...", *heads, "CPU/req theirs/ours"], 28, 21))
        for other in others:
            cells = [_num(report.ratio(other, s, mine), 2) for s in report.scenarios]
            cells.append(_num(report.efficiency(other, mine), 2))
            lines.append(_row([f"  {other}", *cells], 28, 21))
    variants = render_variants(report)
    return [*lines, *([""] if lines and variants else []), *variants]


def render_variants(report: Report) -> list[str]:
    """One line per same-proxy comparison whose two targets both ran."""
    lines = []
    for variant, reference, what in VARIANTS:
        if variant not in report.targets or reference not in report.targets:
            continue
        parts = [
            f"{s.label} {s.unit} {_num(report.ratio(reference, s, variant), 3)}"
            for s in report.scenarios
            if s.metric == "rps" and report.run(variant, s) and report.run(reference, s)
        ]
        by_cpu = report.efficiency(reference, mine=variant)  # reference's CPU/req over variant's
        parts.append(f"by CPU/request {_num(by_cpu, 3)}")
        lines.append(f"{variant} / {reference} ({what}): " + ", ".join(parts))
    return lines


def render_latency(report: Report) -> list[str]:
    parts = [
        f"{name} {_signed(report.added_p50_ms(name))}"
        for name in report.targets
        if name != DIRECT and report.p50(name) is not None
    ]
    if not parts:
        return []
    lines = [f"added p50 latency at {report.single.label} over direct: " + ", ".join(parts)]
    if report.added_p50_ms(NGINX) is not None:
        lines.append(
            "  (nginx's figure approximates the cost of the hop itself on this host: "
            "loopback plus wake-ups across cores)"
        )
    return lines


def _signed(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:+.3f} ms"


def render_checks(report: Report) -> list[str]:
    lines = ["targets (issue 14; bench/README.md):"]
    for check in report.checks():
        verdict = {True: "met   ", False: "MISSED", None: "n/a   "}[check.passed]
        lines.append(f"  {verdict}  {check.text}: {check.detail}")
    return lines


def render_problems(report: Report) -> list[str]:
    lines = []
    for target in report.targets.values():
        for key, run in target.runs.items():
            if not run.clean:
                lines.append(
                    f"! {target.name} {key}: {run.errors} socket errors, "
                    f"{run.non_2xx} non-2xx/3xx responses"
                )
        if target.status == "failed":
            lines.append(f"{target.name} failed: {target.error}")
    return lines


def render(report: Report) -> str:
    sections = [
        [f"{k}: {v}" for k, v in report.summary.items()],
        render_table(report),
        render_ratios(report),
        render_latency(report),
        render_checks(report),
        render_problems(report),
    ]
    return "\n\n".join("\n".join(s) for s in sections if s)


__all__ = ["FAILOVER", "Report", "Scenario", "TargetResult", "render"]
