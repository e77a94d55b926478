"""Benchmark failover-proxy against direct, a bare aiohttp proxy and nginx.

    python bench/run.py [--duration 10] [--quick] [--json OUT] [--check]

For each target (direct to the upstream; failover-proxy with the plain one-upstream
config; failover-proxy-full, every feature on as a user would configure it, and its
variants: first upstream's circuit open, ``fresh_for`` hits, access log on, 10, 1,000
and 10,000 routes; failover-proxy answering from its stale cache with its only upstream
down; ``bare_proxy.py``; nginx as a reverse proxy) it runs bounded load runs with wrk
(or, without wrk, the clearly labelled Python fallback ``loadgen.py``): the ~100-byte
``/small`` at -c 50 (how much a core can push) and at -c 1 (what one request pays), and
the 1 MiB ``/big`` at -c 4 (bytes per second; not for the open-breaker and cache
targets, which are about the per-request path; the access-log and many-routes targets
run -c 50 only). Around every run it reads the server's CPU time from /proc (CPU per
request), and its RSS after start-up and after the runs (``usage.py``). The targets
of issue 14 are in ``goals.py``. See bench/README.md for how to read the output.

Where things run, with 2+ CPUs (the machine this was written for has 2):

- CPU 0: the one server under test, alone. Targets run one after another, each
  started just before and stopped just after its runs, so every proxy gets a whole
  core to itself: the numbers are "per pinned core", and the ratios compare like
  with like.
- CPU 1: wrk (one thread) and the upstream. The upstream is nginx serving two files
  with sendfile, which costs a small fraction of any proxy's per-request work, so
  sharing wrk's core disturbs the measurement far less than sharing the proxy's core
  would. With 3+ CPUs the upstream gets CPU 2. The price of sharing: "direct" and
  "nginx" can be limited by CPU 1 rather than by the target, so proxy/direct and
  proxy/nginx are, if anything, flattering to failover-proxy; proxy/bare, the ratio
  with a target, is not affected (both Python proxies saturate CPU 0 long before
  CPU 1 is busy).
- One CPU or ``--no-pin``: nothing is pinned; expect noisier numbers.

Everything started goes into its own process group and is stopped in ``finally``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import cache_targets
import evloop
import full_targets
import payloads
import targets
import usage
from measure import LoadError, LoadResult, run_load, wrk_available, wrk_version
from names import (
    DIRECT,
    NGINX,
    PER_REQUEST,
    PROXY,
    PROXY_FRESH,
    PROXY_OPEN,
    PROXY_STALE,
    ROUTES,
    TARGETS,
    THROUGHPUT_ONLY,
)
from procs import HOST, Children, StartError, affinity, free_ports
from report import Report, Scenario, TargetResult, render

# Configured in full_targets.py: failover-proxy-full and its variants (admin listener).
FULL_FAMILY = tuple(n for n in TARGETS if n.startswith("failover-proxy-")
                    and n != PROXY_STALE)  # fmt: skip


@dataclass(frozen=True)
class CpuPlan:
    server: int | None  # the server under test
    load: int | None
    upstream: int | None


@dataclass
class Context:
    args: argparse.Namespace
    children: Children
    cpus: CpuPlan
    loadgen: str  # "wrk" or "python"
    upstream_kind: str  # "nginx" or "aiohttp"
    upstream: subprocess.Popen[bytes]  # the shared upstream: direct's server
    upstream_port: int
    refused_port: int  # nothing listens here: failover-proxy-open's first upstream
    stale_upstream_port: int  # failover-proxy-stale's upstream: up to warm its cache, then down
    ports: dict[str, int]
    admin_ports: dict[str, int]  # failover-proxy-full and its variants
    token: str  # their admin token
    scenarios: list[Scenario]

    def scenarios_of(self, name: str) -> list[Scenario]:
        """The open-breaker and cache targets are about the per-request path: no 1 MiB
        run; the access-log and many-routes targets are compared at -c 50 only."""
        if name in THROUGHPUT_ONLY:
            return self.scenarios[:1]
        if name in PER_REQUEST:
            return [s for s in self.scenarios if s.path != payloads.BIG_PATH]
        return self.scenarios

    def path_of(self, name: str, scenario: Scenario) -> str:
        """The many-routes targets are loaded under their last route."""
        return full_targets.routes_path(ROUTES[name]) if name in ROUTES else scenario.path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark failover-proxy against direct, a bare aiohttp proxy and nginx."
    )
    parser.add_argument("--duration", type=int, help="seconds per load run (default 10)")
    parser.add_argument("--quick", action="store_true", help="3 s runs and a 1 s warm-up")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up per target (default 2)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat all targets, report medians (noisy hosts)"
    )
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON here")
    parser.add_argument("--connections", type=int, default=50, help="for the throughput runs")
    parser.add_argument("--big-connections", type=int, default=4, help="for the 1 MiB runs")
    parser.add_argument(
        "--targets", default=",".join(TARGETS), help=f"comma-separated subset of {TARGETS}"
    )
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--upstream", choices=("auto", "nginx", "aiohttp"), default="auto")
    parser.add_argument(
        "--proxy-cmd",
        default=targets.DEFAULT_PROXY_CMD,
        help="command starting failover-proxy; {python} and {config} are filled in "
        "(e.g. 'failover-proxy run --config {config}')",
    )
    parser.add_argument("--start-timeout", type=float, default=20.0, help="seconds per server")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a performance target is missed"
    )
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 3 if args.quick else 10
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown --targets {sorted(unknown)}")
    if args.connections < 2 or args.duration < 1 or args.warmup < 0 or args.rounds < 1:
        parser.error("need --connections >= 2, --duration >= 1, --warmup >= 0, --rounds >= 1")
    return args


def plan_cpus(no_pin: bool) -> CpuPlan:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if no_pin or len(cpus) < 2:
        return CpuPlan(None, None, None)
    return CpuPlan(server=cpus[0], load=cpus[1], upstream=cpus[2] if len(cpus) > 2 else cpus[1])


def scenarios_for(args: argparse.Namespace) -> list[Scenario]:
    many, big = args.connections, args.big_connections
    return [
        Scenario(f"small_c{many}", f"small -c{many}", payloads.SMALL_PATH, many, "rps"),
        Scenario("small_c1", "small -c1", payloads.SMALL_PATH, 1, "rps"),
        Scenario(f"big_c{big}", f"1MiB -c{big}", payloads.BIG_PATH, big, "mib_per_s"),
    ]


def choose(wanted: str, preferred: str, available: bool, fallback: str) -> str:
    if wanted == "auto":
        return preferred if available else fallback
    if wanted == preferred and not available:
        raise SystemExit(f"{preferred} was asked for but is not installed")
    return wanted


def nginx_version() -> str:
    out = subprocess.run(["nginx", "-v"], check=False, capture_output=True, text=True, timeout=10)
    return (out.stderr or out.stdout).strip().removeprefix("nginx version: ")


def describe(
    args: argparse.Namespace, cpus: CpuPlan, loadgen: str, upstream: str
) -> dict[str, str]:
    if loadgen == "wrk":
        tool = f"{wrk_version()}, 1 thread"
    else:
        tool = (
            "PYTHON FALLBACK bench/loadgen.py (wrk is not installed): the client is the "
            "bottleneck, so numbers and ratios are NOT comparable with wrk's"
        )
    rounds = f", median of {args.rounds} rounds" if args.rounds > 1 else ""
    return {
        "load generator": tool,
        "upstream": nginx_version() if upstream == "nginx" else "bench/upstream.py (aiohttp)",
        "runs": f"{args.duration} s each after a {args.warmup} s warm-up per target{rounds}",
        "cpus": f"server under test {_cpu(cpus.server)}, load generator {_cpu(cpus.load)}, "
        f"upstream {_cpu(cpus.upstream)}",
        "cpu per request": "the server's user+system time (its process group, /proc) over "
        "each run / requests completed"
        if usage.available()
        else "not measured (no /proc)",
        "python": f"{platform.python_version()}, {evloop.loop_name()} ({sys.executable})",
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def machine_meta(
    args: argparse.Namespace, cpus: CpuPlan, loadgen: str, upstream: str
) -> dict[str, object]:
    return {
        "cpu_plan": {"server": cpus.server, "load": cpus.load, "upstream": cpus.upstream},
        "cpu_count": os.cpu_count(),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "loadgen": loadgen,
        "upstream": upstream,
        "proxy_cmd": args.proxy_cmd,
    }


def _cpu(cpu: int | None) -> str:
    return "unpinned" if cpu is None else f"CPU {cpu}"


def start_target(ctx: Context, name: str) -> subprocess.Popen[bytes]:
    port, up, cpu = ctx.ports[name], ctx.upstream_port, ctx.cpus.server
    if name == PROXY:
        return targets.start_failover_proxy(ctx.children, port, up, cpu, ctx.args.proxy_cmd)
    if name in FULL_FAMILY:
        conf = full_targets.conf_for(
            name, port, up, ctx.admin_ports[name], ctx.refused_port, ROUTES.get(name, 0)
        )
        return full_targets.start(ctx.children, name, conf, cpu, ctx.args.proxy_cmd, ctx.token)
    if name == PROXY_STALE:
        return cache_targets.start_failover_proxy_stale(
            ctx.children, name, port, ctx.stale_upstream_port, cpu, ctx.args.proxy_cmd
        )
    if name == NGINX:
        return targets.start_nginx_proxy(ctx.children, port, up, cpu)
    return targets.start_bare_proxy(ctx.children, port, up, cpu)


def ready_target(ctx: Context, name: str, proc: subprocess.Popen[bytes], port: int) -> None:
    """Serving correctly, and on the path the target is meant to measure, before any load."""
    children, timeout = ctx.children, ctx.args.start_timeout
    if name in FULL_FAMILY:  # open: the first requests open the circuit; fresh: store /small
        full_targets.ready(
            children, name, proc, port, ctx.admin_ports[name], ctx.token, timeout,
            ROUTES.get(name, 0),
        )  # fmt: skip
    elif name == PROXY_STALE:  # its upstream serves one request and stops
        cache_targets.ready_stale(
            children, name, proc, port, ctx.upstream_kind, ctx.stale_upstream_port,
            ctx.cpus.upstream, timeout,
        )  # fmt: skip
    else:
        targets.ready(children, name, proc, port, timeout)


def still_on_path(ctx: Context, name: str, port: int) -> None:
    """After the runs: still the path we meant to measure, all along."""
    timeout, which = ctx.args.start_timeout, "after the runs"
    if name == PROXY_OPEN:
        targets.expect_failover(port, "breaker_open", timeout, which)
    elif name == PROXY_STALE:
        cache_targets.expect_answer(port, "cache", cache_targets.STALE_HIT, timeout, which)
    elif name == PROXY_FRESH:
        cache_targets.expect_answer(port, "cache", cache_targets.FRESH_HIT, timeout, which)


def load(
    ctx: Context, name: str, port: int, scenario: Scenario, duration: int, server: int | None
) -> LoadResult:
    """One run; with ``server`` (its process group), the server's CPU time over it."""
    url = f"http://{HOST}:{port}{ctx.path_of(name, scenario)}"
    before = usage.group_usage(server) if server is not None else None
    run = run_load(ctx.loadgen, url, scenario.connections, duration, ctx.cpus.load)
    after = usage.group_usage(server) if server is not None else None
    return run.with_cpu(after.cpu_s - before.cpu_s if before and after else None)


def rss(server: int) -> int | None:
    found = usage.group_usage(server)
    return found.rss_bytes if found else None


def measure_target(ctx: Context, result: TargetResult) -> None:
    """One round for one target: start it, warm it up, run every scenario, stop it."""
    name, proc = result.name, None
    try:
        port, server = ctx.upstream_port, ctx.upstream.pid  # direct: the upstream's CPU
        if name != DIRECT:
            port, proc = ctx.ports[name], start_target(ctx, name)
            ready_target(ctx, name, proc, port)
            result.affinity, server = affinity(proc.pid), proc.pid
            _append(result.rss_idle, rss(server))
        if ctx.args.warmup:
            load(ctx, name, port, ctx.scenarios[0], ctx.args.warmup, None)
        for scenario in ctx.scenarios_of(name):
            progress(f"{name}: {scenario.label} for {ctx.args.duration} s")
            result.add(scenario, load(ctx, name, port, scenario, ctx.args.duration, server))
        if proc is not None:
            _append(result.rss_loaded, rss(server))
        still_on_path(ctx, name, port)
    except (StartError, LoadError) as exc:
        result.status, result.error = "failed", str(exc)
        progress(f"{name}: FAILED: {exc}")
    finally:
        if proc is not None:
            ctx.children.stop(proc)


def _append(values: list[int], value: int | None) -> None:
    if value is not None:
        values.append(value)


def progress(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def benchmark(args: argparse.Namespace, children: Children) -> Report:
    cpus = plan_cpus(args.no_pin)
    loadgen = choose(args.loadgen, "wrk", wrk_available(), "python")
    upstream_kind = choose(args.upstream, "nginx", shutil.which("nginx") is not None, "aiohttp")
    summary = describe(args, cpus, loadgen, upstream_kind)
    meta = machine_meta(args, cpus, loadgen, upstream_kind)
    upstream_port, refused_port, stale_upstream_port, *ports = free_ports(
        3 + len(TARGETS) + len(FULL_FAMILY)
    )
    progress(f"starting upstream ({upstream_kind}) on port {upstream_port}")
    upstream = targets.start_upstream(children, upstream_kind, upstream_port, cpus.upstream)
    targets.ready(children, "upstream", upstream, upstream_port, args.start_timeout)
    ctx = Context(
        args, children, cpus, loadgen, upstream_kind, upstream, upstream_port, refused_port,
        stale_upstream_port, dict(zip(TARGETS, ports[: len(TARGETS)], strict=True)),
        dict(zip(FULL_FAMILY, ports[len(TARGETS):], strict=True)), secrets.token_hex(16),
        scenarios_for(args),
    )  # fmt: skip
    pinned: dict[str, list[int] | None] = {"upstream": affinity(upstream.pid)}
    results = {name: TargetResult(name) for name in args.targets}
    if NGINX in results and not shutil.which("nginx"):
        results[NGINX].status, results[NGINX].error = "skipped", "nginx is not installed"
    for round_no in range(1, args.rounds + 1):
        if args.rounds > 1:
            progress(f"round {round_no} of {args.rounds}")
        for result in results.values():
            if result.status == "ok":
                measure_target(ctx, result)
    pinned.update({n: r.affinity for n, r in results.items() if r.affinity})
    meta["affinity"] = pinned
    return Report(summary, meta, ctx.scenarios, results)


def exit_code(report: Report, check: bool) -> int:
    if any(t.status == "failed" for t in report.targets.values()):
        return 2
    if check and any(c.passed is False for c in report.checks()):
        return 1
    return 0


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that stops every child


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    with tempfile.TemporaryDirectory(prefix="failover-bench-") as tmp:
        children = Children(Path(tmp))
        try:
            report = benchmark(args, children)
        except StartError as exc:
            print(f"upstream did not start: {exc}", file=sys.stderr)
            return 2
        finally:
            children.stop_all()
    print(render(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return exit_code(report, args.check)


if __name__ == "__main__":
    sys.exit(main())
