"""The durable write buffer: how many writes per second it takes, and how fast it drains.

    python bench/buffer.py [--quick] [--json OUT] [--buffer-dir DIR]

failover-proxy runs with one route ``{match: {path_prefix: /}, upstreams: [primary],
on_failure: buffer}``, the journal (``buffer.path``) in a fresh directory, no access
log, and its admin listener on a free loopback port (the token is passed in
``FAILOVER_ADMIN_TOKEN``). wrk sends ``POST /write`` with a 100-byte JSON body
(``payloads.SMALL_BODY``) from a Lua script written into the run's temp directory; the
script counts every answer's status, so "every answer was 202" is checked, not assumed.

1. **Baseline, upstream up**: ``primary`` is a live upstream (nginx ``return 200``,
   else ``post_sink.py``), so every POST is proxied and answered 200, nothing buffered.
   Runs at -c 50 and -c 1. Then that proxy and the upstream are stopped.
2. **Buffered**: a new proxy with the same config (its own empty journal) while nothing
   listens on ``primary``'s port: the first POST is refused and buffered, and from then
   on, with ``ordering: strict`` (the default), every POST queues behind it without an
   upstream try. Every answer must be 202. At -c 1 every write waits for its own
   ``fdatasync``; at -c 50 the writes that arrive during one sync share the next
   (group commit).
3. **Replay**: the upstream is started on ``primary``'s port; the bench tells the proxy
   so through the admin API as an operator would (``PUT
   /admin/upstreams/primary/circuit {"state": "automatic"}``, which closes the circuit
   the failed replays opened, then ``POST /admin/buffer/flush``, which ends the replay
   backoff) and polls ``GET /admin/buffer`` until ``depth`` is 0. Rate = the depth at
   the flush over the time from the flush to depth 0. The upstream logs every write it
   receives; each buffered write must arrive exactly once, with its body and its own
   ``Idempotency-Key``, and none may end as a dead letter.

Ratios to the baseline in the same run make the figures comparable across runs on a
noisy host. ``df -T`` of the journal directory is printed, and a probe of what
``fdatasync`` of a small append costs there, right before and right after the buffered
runs: it is the floor under a write at -c 1, and on a shared VM it changes by an order
of magnitude from one hour to the next.

CPUs as in ``run.py``: the proxy on CPU 0, wrk and the upstream on CPU 1 (the upstream
on CPU 2 with 3+ CPUs). Everything started is stopped in ``finally``; exit status 2
when a server did not start, an answer was wrong, or a write went missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import evloop
import payloads
import targets
from measure import LoadError, LoadResult, parse_wrk, run_bounded, wrk_available, wrk_version
from procs import (
    HOST,
    Children,
    StartError,
    affinity,
    fetch_with_headers,
    free_ports,
    log_tail,
    wait_for_port,
)
from run import CpuPlan, choose, nginx_version, plan_cpus

BENCH_DIR = Path(__file__).resolve().parent
WRITE_PATH = "/write"
BODY = payloads.SMALL_BODY
CONTENT_TYPE = payloads.SMALL_CONTENT_TYPE
SINK_BODY = b'{"ok":true}\n'
TOKEN_ENV = "FAILOVER_ADMIN_TOKEN"
UPSTREAM = "primary"

# Each answer's status, counted in wrk's Lua state and printed after its report.
POST_LUA = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "{content_type}"

local threads = {{}}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {{}}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      io.write(string.format("status %d %d\\n", status, n))
    end
  end
end
"""
_STATUS = re.compile(r"^status (\d+) (\d+)$", re.MULTILINE)


class BenchError(RuntimeError):
    """An answer, a count or a delivery was not what it must be."""


@dataclass
class Run:
    label: str
    connections: int
    expect: int  # the status every answer must have
    load: LoadResult
    statuses: dict[int, int]

    @property
    def good(self) -> int:
        return self.statuses.get(self.expect, 0)

    def to_json(self) -> dict[str, object]:
        return {**asdict(self.load), "connections": self.connections, "expect": self.expect,
                "statuses": {str(k): v for k, v in self.statuses.items()}}  # fmt: skip


@dataclass
class Drain:
    backlog: int  # the depth when the flush was sent
    seconds: float  # from the flush to the first poll that saw depth 0
    polls: int
    delivered: int  # distinct Idempotency-Keys the upstream received, in all
    upstream_seconds: float  # from the flush to the upstream's last delivery (its log)

    @property
    def rate(self) -> float:
        return self.backlog / self.seconds if self.seconds > 0 else 0.0

    @property
    def upstream_rate(self) -> float:
        return self.backlog / self.upstream_seconds if self.upstream_seconds > 0 else 0.0


@dataclass(frozen=True)
class SyncCost:
    """What ``fdatasync`` of a small append costs in the journal's directory, right now."""

    syncs: int
    median_ms: float
    p99_ms: float


@dataclass
class Result:
    summary: dict[str, str]
    connections: int  # of the group-commit run
    filesystem: str = ""
    sync_cost: dict[str, SyncCost] = field(default_factory=dict)  # "before", "after"
    runs: dict[str, Run] = field(default_factory=dict)
    accepted: int = 0  # writes in the journal after the buffered runs
    drain: Drain | None = None

    def ratios(self) -> dict[str, float | None]:
        """Rates over rates of the same run, keyed ``mine/theirs``."""
        c = self.connections
        rates = {label: run.load.rps for label, run in self.runs.items()}
        if self.drain is not None:
            rates[REPLAY] = self.drain.rate
        pairs = [(buffered(1), proxied(1)), (buffered(c), proxied(c)),
                 (buffered(c), buffered(1)), (REPLAY, proxied(1))]  # fmt: skip
        return {f"{a}/{b}": _ratio(rates.get(a), rates.get(b)) for a, b in pairs}

    def to_json(self) -> dict[str, object]:
        drain = None
        if self.drain is not None:
            drain = {**asdict(self.drain), "rate": self.drain.rate,
                     "upstream_rate": self.drain.upstream_rate}  # fmt: skip
        return {
            "summary": self.summary,
            "filesystem": self.filesystem,
            "fdatasync": {when: asdict(cost) for when, cost in self.sync_cost.items()},
            "runs": {name: run.to_json() for name, run in self.runs.items()},
            "accepted": self.accepted,
            "drain": drain,
            "ratios": self.ratios(),
        }


@dataclass
class Context:
    args: argparse.Namespace
    children: Children
    cpus: CpuPlan
    upstream_kind: str
    upstream_port: int
    token: str
    lua: Path


REPLAY = "replay"


def proxied(c: int) -> str:
    return f"proxied -c{c}"


def buffered(c: int) -> str:
    return f"buffered -c{c}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, help="seconds per load run (default 10)")
    parser.add_argument("--quick", action="store_true", help="3 s runs and a 1 s warm-up")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up per proxy (default 2)")
    parser.add_argument("--connections", type=int, default=50, help="for the group-commit run")
    parser.add_argument(
        "--buffer-dir",
        help="create the journal directory under this one (default: the run's temp "
        "directory, usually on /tmp); fdatasync costs what this filesystem makes it cost",
    )
    parser.add_argument("--upstream", choices=("auto", "nginx", "aiohttp"), default="auto")
    parser.add_argument(
        "--proxy-cmd",
        default=targets.DEFAULT_PROXY_CMD,
        help="command starting failover-proxy; {python} and {config} are filled in",
    )
    parser.add_argument(
        "--poll", type=float, default=0.5, help="seconds between depth polls (default 0.5)"
    )
    parser.add_argument("--drain-timeout", type=float, default=600.0, help="seconds")
    parser.add_argument("--start-timeout", type=float, default=20.0, help="seconds per server")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 3 if args.quick else 10
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.connections < 2 or args.duration < 1 or args.warmup < 0 or args.poll <= 0:
        parser.error("need --connections >= 2, --duration >= 1, --warmup >= 0, --poll > 0")
    return args


def progress(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


# -- configs and servers -------------------------------------------------------------


def buffer_conf(port: int, upstream_port: int, admin_port: int, journal: Path) -> str:
    """``run.py``'s failover-proxy config with ``on_failure: buffer`` on its route (the
    config's last entry), a journal and an admin listener."""
    return (
        f"admin: {{host: {HOST}, port: {admin_port}}}\n"
        f"buffer: {{path: {json.dumps(str(journal))}}}\n"
        f"{targets.failover_proxy_conf(port, upstream_port)}"
        "    on_failure: buffer\n"
    )


def sink_conf(prefix: Path, port: int, log: Path) -> str:
    """nginx answering 200 to anything, logging each request as ``post_sink.py`` does."""
    return targets.nginx_main(
        prefix,
        "    log_format writes '$msec $request_method $content_length "
        "$http_idempotency_key';\n"
        f"    server {{\n        listen {HOST}:{port} backlog=1024;\n"
        f"        access_log {log} writes;\n"
        f"        location / {{\n            default_type {CONTENT_TYPE};\n"
        f"            return 200 '{SINK_BODY.decode().strip()}\\n';\n        }}\n    }}\n",
    )


def start_sink(ctx: Context, name: str, log: Path) -> targets.Proc:
    """The upstream that takes writes on ``primary``'s port; ready when it answers."""
    port, cpu = ctx.upstream_port, ctx.cpus.upstream
    if ctx.upstream_kind == "nginx":
        prefix = ctx.children.log_dir / name
        proc = targets.start_nginx(ctx.children, name, sink_conf(prefix, port, log), prefix, cpu)
    else:
        argv = [sys.executable, str(BENCH_DIR / "post_sink.py"), "--port", str(port),
                "--log", str(log)]  # fmt: skip
        proc = ctx.children.start(name, argv, cpu)
    timeout = ctx.args.start_timeout
    wait_for_port(proc, port, timeout, ctx.children.log_path(name))
    status, _, body = fetch_with_headers(port, "/ready", timeout)
    if status != 200 or body != SINK_BODY:
        raise StartError(f"{name}: GET /ready answered {status} {body[:200]!r}")
    return proc


def start_proxy(ctx: Context, name: str, port: int, admin_port: int) -> targets.Proc:
    journal = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=ctx.args.journal_parent))
    conf = buffer_conf(port, ctx.upstream_port, admin_port, journal / "buffer")
    proc = targets.start_failover(
        ctx.children, name, conf, ctx.cpus.server, ctx.args.proxy_cmd,
        extra_env={TOKEN_ENV: ctx.token},
    )  # fmt: skip
    wait_for_port(proc, port, ctx.args.start_timeout, ctx.children.log_path(name))
    wait_for_port(proc, admin_port, ctx.args.start_timeout, ctx.children.log_path(name))
    return proc


def admin(ctx: Context, port: int, method: str, path: str, body: object = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {ctx.token}", "Content-Type": "application/json"}
    try:
        status, _, answer = fetch_with_headers(
            port, path, ctx.args.start_timeout, method=method, body=data, headers=headers
        )
    except OSError as exc:
        raise BenchError(f"admin API {method} {path} failed: {exc!r}") from exc
    if status != 200:
        raise BenchError(f"admin API {method} {path} answered {status}: {answer[:300]!r}")
    result: dict[str, Any] = json.loads(answer)
    return result


def expect_post(port: int, status: int, source: str, timeout: float, which: str) -> None:
    """One POST through the proxy: ``status``, ``X-Failover-Source: source``."""
    try:
        got, headers, body = fetch_with_headers(
            port, WRITE_PATH, timeout, method="POST", body=BODY,
            headers={"Content-Type": CONTENT_TYPE},
        )  # fmt: skip
    except OSError as exc:
        raise BenchError(f"{which}: POST {WRITE_PATH} failed: {exc!r}") from exc
    got_source = headers.get("X-Failover-Source", "")
    if got != status or got_source != source:
        raise BenchError(
            f"{which}: want {status} with X-Failover-Source: {source}; got {got}, "
            f"X-Failover-Source: {got_source!r}, body {body[:300]!r}"
        )


# -- load ------------------------------------------------------------------------------


def post_load(ctx: Context, port: int, connections: int, duration: int, expect: int) -> Run:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
            "-s", str(ctx.lua), f"http://{HOST}:{port}{WRITE_PATH}"]  # fmt: skip
    text = run_bounded(argv, duration, ctx.cpus.load)
    load = parse_wrk(text)
    statuses = {int(m[1]): int(m[2]) for m in _STATUS.finditer(text)}
    run = Run("", connections, expect, load, statuses)
    wrong = {s: n for s, n in statuses.items() if s != expect}
    if wrong or load.errors or run.good != load.requests:
        raise BenchError(
            f"-c{connections}: want every answer {expect}; statuses {statuses}, "
            f"{load.errors} socket errors, {load.requests} requests counted by wrk"
        )
    return run


def measure_runs(
    ctx: Context, port: int, kind: str, order: list[int], expect: int, result: Result
) -> int:
    """A warm-up, then one run per concurrency in ``order``; the answers counted."""
    answered = 0
    if ctx.args.warmup:
        progress(f"{kind}: warm-up -c{ctx.args.connections} for {ctx.args.warmup} s")
        answered += post_load(ctx, port, ctx.args.connections, ctx.args.warmup, expect).good
    for c in order:
        progress(f"{kind}: POST -c{c} for {ctx.args.duration} s")
        run = post_load(ctx, port, c, ctx.args.duration, expect)
        run.label = f"{kind} -c{c}"
        result.runs[run.label] = run
        answered += run.good
    return answered


# -- the three phases --------------------------------------------------------------------


def measure_baseline(ctx: Context, result: Result, port: int, admin_port: int) -> None:
    name = "failover-proxy-live"
    sink = start_sink(ctx, "upstream-live", ctx.children.log_dir / "upstream-live.log")
    proc = start_proxy(ctx, name, port, admin_port)
    try:
        result.summary["proxy affinity"] = f"CPUs {affinity(proc.pid)}"
        expect_post(port, 200, UPSTREAM, ctx.args.start_timeout, "baseline: first POST")
        many = ctx.args.connections
        measure_runs(ctx, port, "proxied", [many, 1], 200, result)
        depth = admin(ctx, admin_port, "GET", "/admin/buffer")["depth"]
        if depth:
            raise BenchError(f"baseline: {depth} writes were buffered with the upstream up")
    finally:
        ctx.children.stop(proc)
        ctx.children.stop(sink)


def measure_buffered(ctx: Context, result: Result, port: int, admin_port: int) -> None:
    name = "failover-proxy-buffering"
    proc = start_proxy(ctx, name, port, admin_port)
    journal_parent = ctx.args.journal_parent
    result.filesystem = filesystem(journal_parent)
    try:
        result.sync_cost["before"] = sync_cost(journal_parent)
        expect_post(port, 202, "buffer", ctx.args.start_timeout, "first POST (upstream down)")
        answered = 1 + measure_runs(ctx, port, "buffered", [1, ctx.args.connections], 202, result)
        result.sync_cost["after"] = sync_cost(journal_parent)
        result.accepted = settled_depth(ctx, admin_port)
        # wrk does not count answers still in flight when it stops; the proxy keeps them.
        if result.accepted < answered:
            raise BenchError(f"{answered} answers were 202 but only {result.accepted} kept")
        progress(f"{result.accepted} writes buffered; starting the upstream")
        result.drain = measure_drain(ctx, admin_port, result.accepted)
    finally:
        ctx.children.stop(proc)


def settled_depth(ctx: Context, admin_port: int) -> int:
    """The depth once the last writes in flight are synced: twice the same."""
    last = -1
    while True:
        depth = int(admin(ctx, admin_port, "GET", "/admin/buffer")["depth"])
        if depth == last:
            return depth
        last = depth
        time.sleep(0.3)


def measure_drain(ctx: Context, admin_port: int, accepted: int) -> Drain:
    log = ctx.children.log_dir / "upstream-returns.log"
    start_sink(ctx, "upstream-returns", log)
    admin(ctx, admin_port, "PUT", f"/admin/upstreams/{UPSTREAM}/circuit", {"state": "automatic"})
    flushed_at = time.time()
    started = time.monotonic()
    backlog = int(admin(ctx, admin_port, "POST", "/admin/buffer/flush", {})["flushing"])
    polls, deadline = 0, started + ctx.args.drain_timeout
    while True:
        status = admin(ctx, admin_port, "GET", "/admin/buffer")
        polls += 1
        if status["depth"] == 0:
            seconds = time.monotonic() - started
            break
        if time.monotonic() > deadline:
            left = status["depth"]
            raise BenchError(f"{left} writes still queued after {ctx.args.drain_timeout} s")
        time.sleep(ctx.args.poll)
    if status["dead_letters"]:
        raise BenchError(f"{status['dead_letters']} dead letters: {status['dead'][:3]}")
    times = deliveries(log, accepted)
    return Drain(backlog, seconds, polls, accepted, max(times) - flushed_at)


def deliveries(log: Path, accepted: int) -> list[float]:
    """When the upstream received each buffered write; each exactly once, whole."""
    times, keys = [], set()
    for line in log.read_text().splitlines():
        stamp, method, length, key = line.split()
        if key == "-":
            continue  # the readiness GET
        if method != "POST" or length != str(len(BODY)):
            raise BenchError(f"the upstream received {line!r}: want POST of {len(BODY)} bytes")
        times.append(float(stamp))
        keys.add(key)
    if len(times) != accepted or len(keys) != accepted:
        raise BenchError(
            f"{accepted} writes were buffered; the upstream received {len(times)} with "
            f"{len(keys)} distinct Idempotency-Keys"
        )
    return times


def sync_cost(directory: Path, count: int = 200, budget: float = 2.0) -> SyncCost:
    """Append a frame-sized record and ``fdatasync`` it, ``count`` times or for ``budget``
    seconds: the floor under one buffered write at -c 1, measured next to its runs."""
    path = directory / "sync-probe"
    record = b"x" * (len(BODY) + 200)  # about one journal frame of a small write
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
    took: list[float] = []
    try:
        deadline = time.monotonic() + budget
        while len(took) < count and time.monotonic() < deadline:
            started = time.perf_counter()
            os.write(fd, record)
            os.fdatasync(fd)
            took.append((time.perf_counter() - started) * 1e3)
    finally:
        os.close(fd)
        path.unlink()
    took.sort()
    return SyncCost(
        len(took), statistics.median(took), took[min(len(took) - 1, len(took) * 99 // 100)]
    )


def filesystem(path: Path) -> str:
    out = subprocess.run(
        ["df", "-T", str(path)], check=False, capture_output=True, text=True, timeout=10
    )
    return (out.stdout or out.stderr).strip()


# -- report ------------------------------------------------------------------------------


def render(result: Result) -> str:
    lines = ["failover-proxy write buffer (bench/buffer.py)"]
    lines += [f"  {k:<16}{v}" for k, v in result.summary.items()]
    lines += ["  journal on      " + result.filesystem.replace("\n", "\n" + " " * 18)]
    for when, cost in result.sync_cost.items():
        lines.append(
            f"  fdatasync       {cost.median_ms:.3f} ms median, {cost.p99_ms:.3f} ms p99 of "
            f"{cost.syncs} {len(BODY) + 200}-byte appends, {when} the buffered runs"
        )
    lines.append("")
    lines.append(f"{'':<34}{'writes/s':>10}{'p50 ms':>10}{'p99 ms':>10}   answers")
    for label, run in result.runs.items():
        load = run.load
        what = "proxied, upstream up" if label.startswith("proxied") else "buffered, upstream down"
        lines.append(
            f"{what + f' -c{run.connections}':<34}{load.rps:>10.1f}{_ms(load.p50_ms):>10}"
            f"{_ms(load.p99_ms):>10}   all {run.expect} ({run.good})"
        )
    drain = result.drain
    if drain is not None:
        lines += [
            f"{'replay, upstream back':<34}{drain.rate:>10.1f}{'':>20}   "
            f"{drain.backlog} writes in {drain.seconds:.2f} s ({drain.polls} polls)",
            f"  upstream's log: the last of {drain.delivered} writes (each once, with its own "
            f"Idempotency-Key) {drain.upstream_seconds:.2f} s after the flush: "
            f"{drain.upstream_rate:.1f}/s",
        ]
    lines += ["", "same-run ratios (writes/s over writes/s):"]
    for pair, ratio in result.ratios().items():
        lines.append(f"  {pair.replace('/', ' / '):<34}{'-' if ratio is None else f'{ratio:.2f}'}")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


# -- main --------------------------------------------------------------------------------


def benchmark(args: argparse.Namespace, children: Children) -> Result:
    cpus = plan_cpus(args.no_pin)
    kind = choose(args.upstream, "nginx", shutil.which("nginx") is not None, "aiohttp")
    upstream_port, live_port, live_admin, port, admin_port = free_ports(5)
    lua = children.log_dir / "post.lua"
    lua.write_text(POST_LUA.format(body=BODY.decode(), content_type=CONTENT_TYPE))
    ctx = Context(args, children, cpus, kind, upstream_port, secrets.token_hex(16), lua)
    plan = f"proxy {_cpu(cpus.server)}, wrk {_cpu(cpus.load)}"
    summary = {
        "load generator": f"{wrk_version()}, 1 thread, POST {WRITE_PATH} with a "
        f"{len(BODY)}-byte {CONTENT_TYPE} body (wrk -s post.lua)",
        "upstream": (nginx_version() if kind == "nginx" else "bench/post_sink.py (aiohttp)")
        + " answering 200",
        "runs": f"{args.duration} s each after a {args.warmup} s warm-up per proxy",
        "cpus": f"{plan}, upstream {_cpu(cpus.upstream)}",
        "python": f"{platform.python_version()}, {evloop.loop_name()} ({sys.executable})",
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    result = Result(summary, args.connections)
    progress(f"baseline: upstream ({kind}) up on port {upstream_port}")
    measure_baseline(ctx, result, live_port, live_admin)
    progress(f"buffering: nothing listens on port {upstream_port}")
    measure_buffered(ctx, result, port, admin_port)
    return result


def _cpu(cpu: int | None) -> str:
    return "unpinned" if cpu is None else f"CPU {cpu}"


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that stops every child


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not wrk_available():
        print("wrk is not installed; it sends the POSTs (apt-get install wrk)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="failover-bench-buffer-"))
        args.journal_parent = Path(tmp)
        if args.buffer_dir:  # removed at the end too
            args.journal_parent = Path(
                stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="failover-bench-", dir=args.buffer_dir)
                )
            )
        children = Children(Path(tmp))
        try:
            result = benchmark(args, children)
        except (StartError, LoadError, BenchError) as exc:
            print(f"buffer benchmark failed: {exc}", file=sys.stderr)
            for log in sorted(Path(tmp).glob("failover-proxy-*.log")):
                print(f"--- {log.name}\n{log_tail(log)}", file=sys.stderr)
            return 2
        finally:
            children.stop_all()
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
