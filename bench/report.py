"""Turning load results into the numbers the issue asks for, as text and as JSON.

Ratios are failover-proxy's throughput divided by another target's in the same
scenario (req/s for the small body, MiB/s for the 1 MiB body): proxy/direct is the
share of the upstream's speed left after the proxy hop, proxy/bare is how close
failover-proxy gets to the least an aiohttp proxy can do, proxy/nginx compares with a
C proxy. "Added p50" is a target's median latency at -c 1 minus direct's: the time the
hop adds to a single request on an idle system.

failover-proxy-open / failover-proxy is the same proxy's throughput when every request
finds its first upstream's circuit open (skip it, fail over, say so in Proxy-Status)
over its throughput on the plain one-upstream path: what the open-breaker path costs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from measure import LoadResult

PROXY = "failover-proxy"
PROXY_OPEN = "failover-proxy-open"
BARE = "bare-aiohttp"
DIRECT = "direct"
NGINX = "nginx"

MIN_PROXY_OVER_BARE = 0.85
MAX_ADDED_P50_MS = 0.3
MIN_OPEN_OVER_PROXY = 0.95


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

    def add(self, scenario: Scenario, run: LoadResult) -> None:
        self.samples.setdefault(scenario.key, []).append(run)

    @property
    def runs(self) -> dict[str, LoadResult]:
        """Per scenario, the median over rounds (the run itself with one round)."""
        return {key: LoadResult.median_of(runs) for key, runs in self.samples.items()}


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

    def value(self, target: str, scenario: Scenario) -> float | None:
        found = self.targets.get(target)
        run = found.runs.get(scenario.key) if found else None
        return getattr(run, scenario.metric) if run else None

    def ratio(self, other: str, scenario: Scenario, mine: str = PROXY) -> float | None:
        """``mine``'s throughput over ``other``'s in ``scenario`` (None if either is missing)."""
        ours, theirs = self.value(mine, scenario), self.value(other, scenario)
        return ours / theirs if ours is not None and theirs else None

    def open_over_proxy(self, scenario: Scenario) -> float | None:
        return self.ratio(PROXY, scenario, mine=PROXY_OPEN)

    def added_p50_ms(self, target: str) -> float | None:
        def p50(name: str) -> float | None:
            found = self.targets.get(name)
            run = found.runs.get(self.single.key) if found else None
            return run.p50_ms if run else None

        mine, direct = p50(target), p50(DIRECT)
        return mine - direct if mine is not None and direct is not None else None

    def checks(self) -> list[tuple[str, float | None, bool | None]]:
        """The issue's performance targets: (description, value, passed or None if unknown)."""
        over_bare = self.ratio(BARE, self.throughput)
        added = self.added_p50_ms(PROXY)
        open_over = self.open_over_proxy(self.throughput)
        return [
            (
                f"{PROXY}/{BARE} req/s at {self.throughput.label} >= {MIN_PROXY_OVER_BARE}",
                over_bare,
                None if over_bare is None else over_bare >= MIN_PROXY_OVER_BARE,
            ),
            (
                f"{PROXY} added p50 at {self.single.label} < {MAX_ADDED_P50_MS} ms",
                added,
                None if added is None else added < MAX_ADDED_P50_MS,
            ),
            (
                f"open-breaker path costs at most {1 - MIN_OPEN_OVER_PROXY:.0%}: "
                f"{PROXY_OPEN}/{PROXY} req/s at {self.throughput.label} >= {MIN_OPEN_OVER_PROXY}",
                open_over,
                None if open_over is None else open_over >= MIN_OPEN_OVER_PROXY,
            ),
        ]

    def to_json(self) -> dict[str, object]:
        others = [name for name in (DIRECT, BARE, NGINX) if name in self.targets]
        ratios = {
            f"{PROXY}/{other}": {s.key: self.ratio(other, s) for s in self.scenarios}
            for other in others
        }
        if PROXY_OPEN in self.targets:
            ratios[f"{PROXY_OPEN}/{PROXY}"] = {
                s.key: self.open_over_proxy(s) for s in self.scenarios
            }
        return {
            "summary": self.summary,
            "meta": self.meta,
            "scenarios": [asdict(s) for s in self.scenarios],
            "targets": {
                name: {**asdict(t), "runs": {k: asdict(r) for k, r in t.runs.items()}}
                for name, t in self.targets.items()
            },
            "ratios": ratios,
            "added_p50_ms": {
                name: self.added_p50_ms(name) for name in self.targets if name != DIRECT
            },
            "checks": [
                {"check": text, "value": value, "passed": passed}
                for text, value, passed in self.checks()
            ],
        }


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _run_cells(run: LoadResult | None, scenario: Scenario) -> list[str]:
    if run is None:
        return ["-"] * (3 if scenario.metric == "rps" else 1)
    mark = "" if run.clean else "!"
    if scenario.metric == "rps":
        return [_num(run.rps) + mark, _num(run.p50_ms, 3), _num(run.p99_ms, 3)]
    return [_num(run.mib_per_s) + mark]


def _row(cells: list[str], first: int = 16, width: int = 11) -> str:
    return cells[0].ljust(first) + "".join(cell.rjust(width) for cell in cells[1:])


def render_table(report: Report) -> list[str]:
    header = [""]
    units = ["target"]
    for s in report.scenarios:
        if s.metric == "rps":
            header += ["", s.label, ""]
            units += ["req/s", "p50 ms", "p99 ms"]
        else:
            header.append(s.label)
            units.append("MiB/s")
    first = max([16, *(len(name) + 2 for name in report.targets)])
    lines = [_row(header, first), _row(units, first)]
    for target in report.targets.values():
        if target.status != "ok" and not target.runs:
            error = _first_line(target.error)
            lines.append(f"{target.name:<{first}}{target.status.upper()}: {error}")
            continue
        cells = [target.name]
        for s in report.scenarios:
            cells += _run_cells(target.runs.get(s.key), s)
        lines.append(_row(cells, first))
    return lines


def _first_line(text: str | None) -> str:
    return (text or "").splitlines()[0] if text else ""


def render_ratios(report: Report) -> list[str]:
    others = [n for n in (DIRECT, BARE, NGINX) if n in report.targets]
    heads = [f"{s.label} {s.unit}" for s in report.scenarios]
    lines = [_row([f"{PROXY} / ...", *heads], first=22, width=20)] if others else []
    for other in others:
        cells = [_num(report.ratio(other, s), 2) for s in report.scenarios]
        lines.append(_row([f"  {other}", *cells], first=22, width=20))
    if PROXY_OPEN in report.targets:
        parts = [
            f"{s.label} {s.unit} {_num(report.open_over_proxy(s), 3)}"
            for s in report.scenarios
            if s.metric == "rps"
        ]
        lines += [""] if lines else []
        lines.append(f"{PROXY_OPEN} / {PROXY} (open-breaker path): " + ", ".join(parts))
    return lines


def render_latency(report: Report) -> list[str]:
    parts = [
        f"{name} {_signed(report.added_p50_ms(name))}" for name in report.targets if name != DIRECT
    ]
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
    lines = ["performance targets (bench/README.md):"]
    for text, value, passed in report.checks():
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[passed]
        lines.append(f"  {verdict}  {text}: {_num(value, 3)}")
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
