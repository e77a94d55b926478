"""Instructions per request, counted by callgrind: the deterministic companion to run.py.

    python bench/instructions.py [--requests 200,2200] [--concurrency 10] [--json OUT]

Wall-clock req/s on a shared VM varies by tens of percent from run to run, far more
than the 15% margin the throughput target is about. The number of instructions a
server executes per request barely varies at all, and for two Python proxies on the
same interpreter, event loop and aiohttp it is a good proxy for CPU time per request.

For each of failover-proxy and ``bare_proxy.py`` (both forwarding to the same fast
upstream, nginx when installed) and for each of two request counts N1 < N2:

1. start the server under ``valgrind --tool=callgrind --callgrind-out-file=FILE``;
2. wait until it accepts connections and answers ``GET /small`` correctly (start-up
   under valgrind is slow, so this polls for up to ``--start-timeout`` seconds);
3. send exactly N ``GET /small`` with an aiohttp client keeping ``--concurrency``
   requests in flight on keep-alive connections, checking every answer;
4. SIGTERM it (failover-proxy drains and exits; bare_proxy.py has no SIGTERM handler
   and dies of it, and callgrind still writes its totals; SIGINT is not used because
   a child of a non-interactive shell's background job inherits SIGINT as ignored),
   wait for it to exit and read the ``summary:`` line of FILE.

Instructions per request = (I(N2) - I(N1)) / (N2 - N1): start-up, the readiness check,
connection set-up and shutdown cost the same in both runs and cancel out. The ratio
bare/proxy estimates failover-proxy's throughput as a share of the bare proxy's, the
figure the issue's target (>= 0.85) is about. See bench/README.md.

Everything started lives in its own process group and is stopped in ``finally``; the
whole run is bounded by ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

import aiohttp
import payloads
import targets
from procs import HOST, Children, StartError, expect_body, free_ports, log_tail, wait_for_port
from report import BARE, MIN_PROXY_OVER_BARE, PROXY
from run import choose, nginx_version, plan_cpus

TARGETS = (PROXY, BARE)
SUMMARY = re.compile(rb"^summary:\s*(\d+)\s*$", re.MULTILINE)


class MeasureError(RuntimeError):
    """A run could not be counted: wrong answers, no exit, no callgrind totals."""


class RunTimeout(Exception):
    """The whole run exceeded --timeout."""


class Deadline:
    """What is left of --timeout; every wait in the run is cut to it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def left(self, at_most: float) -> float:
        left = self._end - time.monotonic()
        if left <= 0:
            raise RunTimeout
        return min(at_most, left)

    def expired(self) -> bool:
        return time.monotonic() >= self._end


@dataclass
class Count:
    """One callgrind run: the server's total instructions for ``requests`` requests."""

    target: str
    requests: int
    instructions: int
    load_s: float  # wall time of the requests under valgrind
    total_s: float  # start to exit
    exit_code: int


@dataclass
class Context:
    args: argparse.Namespace
    children: Children
    deadline: Deadline
    tmp: Path
    upstream_port: int
    server_cpu: int | None


@dataclass
class Result:
    summary: dict[str, str]
    meta: dict[str, object]
    counts: dict[str, list[Count]]
    per_request: dict[str, float]

    @property
    def bare_over_proxy(self) -> float:
        return self.per_request[BARE] / self.per_request[PROXY]

    def to_json(self) -> dict[str, object]:
        return {
            "summary": self.summary,
            "meta": self.meta,
            "counts": {name: [asdict(c) for c in runs] for name, runs in self.counts.items()},
            "instructions_per_request": self.per_request,
            "bare_over_proxy": self.bare_over_proxy,
            "goal_met": self.bare_over_proxy >= MIN_PROXY_OVER_BARE,
        }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Count instructions per request (callgrind) for failover-proxy and "
        "the bare aiohttp proxy."
    )
    parser.add_argument(
        "--requests", default="200,2200", metavar="N1,N2", help="the two request counts"
    )
    parser.add_argument("--concurrency", type=int, default=10, help="requests in flight")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON here")
    parser.add_argument("--upstream", choices=("auto", "nginx", "aiohttp"), default="auto")
    parser.add_argument(
        "--proxy-cmd",
        default=targets.DEFAULT_PROXY_CMD,
        help="command starting failover-proxy; {python} and {config} are filled in",
    )
    parser.add_argument(
        "--start-timeout", type=float, default=60.0, help="seconds for a server under valgrind"
    )
    parser.add_argument(
        "--stop-timeout", type=float, default=60.0, help="seconds to exit after SIGTERM"
    )
    parser.add_argument(
        "--request-timeout", type=float, default=30.0, help="seconds per request under valgrind"
    )
    parser.add_argument("--timeout", type=int, default=600, help="seconds for the whole run")
    args = parser.parse_args(argv)
    try:
        n1, n2 = (int(n) for n in args.requests.split(","))
    except ValueError:
        parser.error("--requests wants two integers, e.g. 200,2200")
    if not 0 < n1 < n2:
        parser.error("--requests wants 0 < N1 < N2")
    if args.concurrency < 1 or args.concurrency > n1:
        parser.error("--concurrency must be between 1 and N1")
    if args.timeout < 1:
        parser.error("--timeout must be at least 1")
    args.counts = (n1, n2)
    return args


def progress(text: str) -> None:
    print(f"[instructions] {text}", file=sys.stderr, flush=True)


def valgrind_version() -> str:
    out = subprocess.run(
        ["valgrind", "--version"], check=False, capture_output=True, text=True, timeout=30
    )
    return out.stdout.strip()


async def send(url: str, requests: int, concurrency: int, timeout: float) -> None:
    """Exactly ``requests`` GETs, ``concurrency`` in flight over keep-alive connections;
    any wrong answer or error aborts the run (the count would not be for N requests)."""
    left = requests

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            try:
                async with session.get(url) as resp:
                    body = await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise MeasureError(f"GET {url} failed: {exc!r}") from exc
            if resp.status != 200 or body != payloads.SMALL_BODY:
                raise MeasureError(
                    f"GET {url}: status {resp.status}, {len(body)} bytes: {body[:200]!r}"
                )

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=timeout),
        auto_decompress=False,
    )
    async with session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))


def start(ctx: Context, target: str, port: int, out: Path) -> subprocess.Popen[bytes]:
    wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    up, cpu = ctx.upstream_port, ctx.server_cpu
    if target == PROXY:
        cmd = ctx.args.proxy_cmd
        return targets.start_failover_proxy(ctx.children, port, up, cpu, cmd, wrapper)
    return targets.start_bare_proxy(ctx.children, port, up, cpu, wrapper)


def read_summary(out: Path, log: Path) -> int:
    try:
        match = SUMMARY.search(out.read_bytes())
    except OSError as exc:
        raise MeasureError(f"no callgrind output: {exc}\n{log_tail(log)}") from exc
    if match is None:
        raise MeasureError(f"no 'summary:' line in {out.name}\n{log_tail(log)}")
    return int(match.group(1))


def measure(ctx: Context, target: str, requests: int, port: int) -> Count:
    """One server under callgrind, from start to exit, serving ``requests`` requests."""
    args, children, deadline = ctx.args, ctx.children, ctx.deadline
    out = ctx.tmp / f"callgrind.{target}.{requests}.out"
    log = children.log_path(target)
    began = time.monotonic()
    proc = start(ctx, target, port, out)
    try:
        wait_for_port(proc, port, deadline.left(args.start_timeout), log)
        body, small = payloads.SMALL_BODY, payloads.SMALL_PATH
        expect_body(port, small, body, deadline.left(args.start_timeout))
        url, budget = f"http://{HOST}:{port}{small}", deadline.left(deadline.seconds)
        load_began = time.monotonic()
        client = send(url, requests, args.concurrency, args.request_timeout)
        try:
            asyncio.run(asyncio.wait_for(client, budget))
        except TimeoutError:
            raise RunTimeout from None
        load_s = time.monotonic() - load_began
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        wait = deadline.left(args.stop_timeout)
        try:
            code = proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            raise MeasureError(
                f"did not exit within {wait:g}s of SIGTERM\n{log_tail(log)}"
            ) from None
    finally:
        children.stop(proc)
    if code not in (0, -signal.SIGTERM):
        raise MeasureError(f"exited with code {code} after SIGTERM\n{log_tail(log)}")
    total_s = time.monotonic() - began
    return Count(target, requests, read_summary(out, log), load_s, total_s, code)


def per_request(low: Count, high: Count) -> float:
    if high.instructions <= low.instructions:
        raise MeasureError(
            f"{high.target}: I({high.requests}) = {high.instructions} is not above "
            f"I({low.requests}) = {low.instructions}"
        )
    return (high.instructions - low.instructions) / (high.requests - low.requests)


def render(result: Result) -> str:
    counts, ipr = result.counts, result.per_request
    n1, n2 = (c.requests for c in counts[PROXY])
    lines = [f"{key:<12} {value}" for key, value in result.summary.items()]
    lines += [
        "",
        f"{'target':<16}{f'I({n1})':>16}{f'I({n2})':>16}{'instr/request':>16}"
        f"{'req/s in valgrind':>20}",
    ]
    for name in TARGETS:
        low, high = counts[name]
        rate = high.requests / high.load_s if high.load_s > 0 else float("nan")
        lines.append(
            f"{name:<16}{low.instructions:>16,}{high.instructions:>16,}"
            f"{round(ipr[name]):>16,}{rate:>20.1f}"
        )
    ratio = result.bare_over_proxy
    verdict = "met" if ratio >= MIN_PROXY_OVER_BARE else "NOT met"
    lines += [
        "",
        f"bare/proxy (instructions per request): {ratio:.3f}; failover-proxy executes "
        f"{1 / ratio:.2f}x the bare proxy's instructions per request",
        f"goal bare/proxy >= {MIN_PROXY_OVER_BARE} (throughput at least "
        f"{MIN_PROXY_OVER_BARE:.0%} of the bare proxy's): {verdict}",
    ]
    return "\n".join(lines)


def benchmark(
    args: argparse.Namespace, children: Children, tmp: Path, deadline: Deadline
) -> Result:
    cpus = plan_cpus(no_pin=False)
    upstream_kind = choose(args.upstream, "nginx", shutil.which("nginx") is not None, "aiohttp")
    upstream_port, *ports = free_ports(1 + len(TARGETS) * len(args.counts))
    progress(f"starting upstream ({upstream_kind}) on port {upstream_port}")
    upstream = targets.start_upstream(children, upstream_kind, upstream_port, cpus.upstream)
    targets.ready(children, "upstream", upstream, upstream_port, deadline.left(20.0))
    ctx = Context(args, children, deadline, tmp, upstream_port, cpus.server)
    counts: dict[str, list[Count]] = {}
    for name in TARGETS:
        counts[name] = []
        for requests in args.counts:
            progress(f"{name}: {requests} requests under callgrind")
            count = measure(ctx, name, requests, ports.pop())
            progress(
                f"{name}: {count.instructions:,} instructions; {count.load_s:.1f} s of "
                f"requests, {count.total_s:.1f} s from start to exit"
            )
            counts[name].append(count)
    per_req = {name: per_request(*counts[name]) for name in TARGETS}
    n1, n2 = args.counts
    summary = {
        "counter": f"{valgrind_version()} --tool=callgrind: Ir, user-space instructions",
        "requests": f"GET {payloads.SMALL_PATH} x N1={n1} and N2={n2}, concurrency "
        f"{args.concurrency}, keep-alive; per request = (I(N2) - I(N1)) / (N2 - N1)",
        "upstream": nginx_version() if upstream_kind == "nginx" else "bench/upstream.py",
        "server cpu": "unpinned" if cpus.server is None else f"CPU {cpus.server}",
        "python": f"{platform.python_version()} ({sys.executable}), PYTHONHASHSEED=0",
    }
    meta: dict[str, object] = {
        "requests": list(args.counts),
        "concurrency": args.concurrency,
        "upstream": upstream_kind,
        "proxy_cmd": args.proxy_cmd,
        "server_cpu": cpus.server,
        "goal_bare_over_proxy": MIN_PROXY_OVER_BARE,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    return Result(summary, meta, counts, per_req)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that stops every child


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("valgrind") is None:
        print(
            "valgrind is not installed; it does the counting "
            "(Debian/Ubuntu: apt-get install valgrind)",
            file=sys.stderr,
        )
        return 2
    # One hash seed for every server run, so that start-up work is the same and cancels.
    os.environ["PYTHONHASHSEED"] = "0"
    signal.signal(signal.SIGTERM, _terminate)
    with tempfile.TemporaryDirectory(prefix="failover-instr-") as tmp:
        children, deadline = Children(Path(tmp)), Deadline(args.timeout)
        try:
            result = benchmark(args, children, Path(tmp), deadline)
        except (StartError, MeasureError, RunTimeout) as exc:
            if deadline.expired():
                print(f"the run did not finish within --timeout {args.timeout} s", file=sys.stderr)
            what = "a server did not start" if isinstance(exc, StartError) else "measurement failed"
            if str(exc):
                print(f"{what}: {exc}", file=sys.stderr)
            return 2
        finally:
            children.stop_all()
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
