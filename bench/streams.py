"""Streams and WebSockets through failover-proxy: how late an SSE event arrives, and how
many WebSocket messages a second cross, direct to the upstream and through the proxy.

    python bench/streams.py [--runs 5] [--json OUT] [--parts sse,ws] [--check]

Two loopback upstreams run in a process of their own (this script with ``--serve``):
an SSE endpoint (``GET /sse``: 40 events 50 ms apart by default, each carrying the
``time.monotonic()`` at which it was written) and a WebSocket echo (``/ws``). The proxy
runs as in ``run.py`` (a subprocess started with ``--proxy-cmd``, with a generated
config: one route per upstream, no access log). The client is this process:

- **SSE**: per run, one whole stream direct and one through the proxy, interleaved, plus
  ``--probes`` one-event streams each. *First event* is request sent to first event
  read; *event* is an event's own send time to the moment it was read (one monotonic
  clock for every process on Linux). Median and p99 over all runs.
- **WebSocket echo**: ``--ws-messages`` binary messages of 16 B to 64 KiB (log-uniform,
  the same seeded list for every target), each echo checked byte for byte: one at a
  time (send, wait for the echo), then pipelined with up to ``--window`` in flight.
  Messages per second, direct and through the proxy.

CPUs as in ``run.py``: the proxy on CPU 0; the client and the upstreams on CPU 1 (the
upstreams on CPU 2 with 3+ CPUs). The check: through the proxy, an event's p99 latency
is at most 5 ms. Exit status 0; 1 with ``--check`` when that is missed; 2 when a server
did not start or a part could not be measured (a WebSocket the proxy did not tunnel).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import aiohttp
import evloop
import targets
from aiohttp import web
from procs import (
    HOST,
    Children,
    StartError,
    affinity,
    fetch_with_headers,
    free_ports,
    wait_for_port,
)
from run import CpuPlan, plan_cpus

SSE_PATH = "/sse"
WS_PATH = "/ws"
SSE_TYPE = "text/event-stream"
DIRECT, PROXY = "direct", "failover-proxy"
EVENT_P99_TARGET_MS = 5.0
SMALLEST, LARGEST = 16, 64 * 1024
SIZES_SEED = 14
WARM_UP_MESSAGES = 50


class BenchError(RuntimeError):
    """An answer was not what it must be: the part is not measured."""


# --- the upstreams, in their own process (--serve) ----------------------------------


async def sse_stream(request: web.Request) -> web.StreamResponse:
    """``n`` events ``interval`` seconds apart, on an absolute schedule (no drift)."""
    count = int(request.query.get("n", "40"))
    interval = float(request.query.get("interval", "0.05"))
    response = web.StreamResponse(headers={"Content-Type": SSE_TYPE, "Cache-Control": "no-cache"})
    await response.prepare(request)
    start = time.monotonic()
    for n in range(count):
        delay = start + n * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await response.write(b"data: %s\n\n" % json.dumps({"n": n, "t": time.monotonic()}).encode())
    await response.write_eof()
    return response


async def ws_echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=4 * LARGEST)
    await ws.prepare(request)
    async for message in ws:
        if message.type is aiohttp.WSMsgType.BINARY:
            await ws.send_bytes(message.data)
        elif message.type is aiohttp.WSMsgType.TEXT:
            await ws.send_str(message.data)
    return ws


async def serve(sse_port: int, ws_port: int) -> None:
    runners: list[web.AppRunner] = []
    try:
        for path, handler, port in ((SSE_PATH, sse_stream, sse_port), (WS_PATH, ws_echo, ws_port)):
            app = web.Application()
            app.router.add_get(path, handler)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, HOST, port, backlog=1024).start()
        await asyncio.Event().wait()
    finally:
        for runner in runners:
            await runner.cleanup()


# --- the client ----------------------------------------------------------------------


@dataclass
class SseResult:
    first_event_s: list[float] = field(default_factory=list)
    event_s: list[float] = field(default_factory=list)
    error: str | None = None

    def figures_ms(self) -> dict[str, float | None]:
        return {
            "first_event_p50": _ms(percentile(self.first_event_s, 0.5)),
            "first_event_p99": _ms(percentile(self.first_event_s, 0.99)),
            "event_p50": _ms(percentile(self.event_s, 0.5)),
            "event_p99": _ms(percentile(self.event_s, 0.99)),
            "event_max": _ms(max(self.event_s, default=None)),
        }


@dataclass
class WsResult:
    messages_per_s: dict[str, float] = field(default_factory=dict)  # by mode
    error: str | None = None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


async def read_stream(
    session: aiohttp.ClientSession, url: str, count: int, timeout: float
) -> tuple[float, list[float]]:
    """(request sent to first event, each event's send time to its arrival), seconds."""
    sent, first, lags, pending = time.monotonic(), None, [], b""
    async with asyncio.timeout(timeout):
        async with session.get(url, headers={"Accept": SSE_TYPE}) as response:
            if response.status != 200:
                raise BenchError(f"GET {url}: {response.status}, want 200")
            async for data in response.content.iter_any():
                now = time.monotonic()
                pending += data
                while b"\n\n" in pending:
                    event, pending = pending.split(b"\n\n", 1)
                    first = now - sent if first is None else first
                    lags.append(now - json.loads(event.removeprefix(b"data: "))["t"])
    if first is None or len(lags) != count:
        raise BenchError(f"GET {url}: {len(lags)} events, want {count}")
    return first, lags


async def sse_run(
    session: aiohttp.ClientSession, base: str, args: argparse.Namespace, result: SseResult
) -> None:
    whole = args.events * args.interval + 10
    url = f"{base}{SSE_PATH}?n={args.events}&interval={args.interval}"
    first, lags = await read_stream(session, url, args.events, whole)
    result.first_event_s.append(first)
    result.event_s.extend(lags)
    for _ in range(args.probes):
        probe, _lags = await read_stream(session, f"{base}{SSE_PATH}?n=1&interval=0", 1, 10)
        result.first_event_s.append(probe)


def message_payloads(count: int) -> list[bytes]:
    """Sizes log-uniform between 16 B and 64 KiB; the same list on every run."""
    rng = random.Random(SIZES_SEED)
    blob = rng.randbytes(LARGEST)
    low, high = math.log(SMALLEST), math.log(LARGEST)
    return [blob[: int(math.exp(rng.uniform(low, high)))] for _ in range(count)]


def check_echo(message: aiohttp.WSMessage, payload: bytes) -> None:
    if message.type is not aiohttp.WSMsgType.BINARY:
        raise BenchError(f"expected the echo of {len(payload)} bytes, got {message.type.name}")
    if message.data != payload:
        raise BenchError(f"the echo of {len(payload)} bytes came back different")


async def echo_one_at_a_time(ws: aiohttp.ClientWebSocketResponse, payloads: list[bytes]) -> None:
    for payload in payloads:
        await ws.send_bytes(payload)
        check_echo(await ws.receive(), payload)


async def echo_pipelined(
    ws: aiohttp.ClientWebSocketResponse, payloads: list[bytes], window: int
) -> None:
    """Up to ``window`` messages in flight; echoes come back in order."""
    slots = asyncio.Semaphore(window)

    async def send() -> None:
        for payload in payloads:
            await slots.acquire()
            await ws.send_bytes(payload)

    sender = asyncio.create_task(send())
    try:
        for payload in payloads:
            check_echo(await ws.receive(), payload)
            slots.release()
        await sender
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender


async def echo_rate(
    session: aiohttp.ClientSession, url: str, payloads: list[bytes], window: int, timeout: float
) -> float:
    async with asyncio.timeout(timeout):
        async with session.ws_connect(url, max_msg_size=4 * LARGEST) as ws:
            await echo_one_at_a_time(ws, payloads[:WARM_UP_MESSAGES])
            started = time.perf_counter()
            if window == 1:
                await echo_one_at_a_time(ws, payloads)
            else:
                await echo_pipelined(ws, payloads, window)
            return len(payloads) / (time.perf_counter() - started)


def ws_failure(target: str, exc: BaseException) -> str:
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        why = f"the handshake got status {exc.status} ({exc.message}), not 101 Switching Protocols"
        if target == PROXY:
            why += " (does this build tunnel Upgrade?)"
        return why
    if isinstance(exc, TimeoutError):
        return "timed out: the echoes stopped coming back"
    return f"{type(exc).__name__}: {exc}"


@dataclass
class Measured:
    sse: dict[str, SseResult]
    ws: dict[str, WsResult]


async def measure(args: argparse.Namespace, endpoints: Endpoints) -> Measured:
    measured = Measured(
        {n: SseResult() for n in endpoints.sse}, {n: WsResult() for n in endpoints.ws}
    )
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        if "sse" in args.parts:
            for run in range(1, args.runs + 1):
                for name, base in endpoints.sse.items():
                    result = measured.sse[name]
                    if result.error:
                        continue
                    progress(f"SSE run {run} of {args.runs}: {name}")
                    try:
                        await sse_run(session, base, args, result)
                    except (BenchError, aiohttp.ClientError, TimeoutError) as exc:
                        result.error = f"{type(exc).__name__}: {exc}"
        if "ws" in args.parts:
            payloads = message_payloads(args.ws_messages)
            for name, url in endpoints.ws.items():
                for mode, window in zip(ws_modes(args), (1, args.window), strict=True):
                    progress(f"WebSocket echo, {mode.replace('_', ' ')}: {name}")
                    try:
                        rate = await echo_rate(session, url, payloads, window, args.ws_timeout)
                    except (BenchError, aiohttp.ClientError, TimeoutError) as exc:
                        measured.ws[name].error = ws_failure(name, exc)
                        progress(f"{name}: WebSocket FAILED: {measured.ws[name].error}")
                        break
                    measured.ws[name].messages_per_s[mode] = rate
    return measured


# --- the proxy -----------------------------------------------------------------------


def proxy_conf(port: int, sse_port: int, ws_port: int) -> str:
    return (
        f"listen: {{host: {HOST}, port: {port}}}\n"
        f"{targets.NO_ACCESS_LOG}"
        "upstreams:\n"
        f"  sse: {{url: 'http://{HOST}:{sse_port}', max_connections: 100}}\n"
        f"  echo: {{url: 'http://{HOST}:{ws_port}', max_connections: 100}}\n"
        "routes:\n"
        f"  - {{name: sse, match: {{path_prefix: {SSE_PATH}}}, upstreams: [sse]}}\n"
        f"  - {{name: ws, match: {{path_prefix: {WS_PATH}}}, upstreams: [echo]}}\n"
    )


def expect_stream(port: int, timeout: float) -> None:
    """One event through the proxy, from the upstream ``sse``, before any measurement."""
    deadline, problem = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            status, headers, body = fetch_with_headers(
                port, f"{SSE_PATH}?n=1&interval=0", headers={"Accept": SSE_TYPE}
            )
        except OSError as exc:
            problem = repr(exc)
        else:
            source = headers.get("X-Failover-Source", "")
            if status == 200 and source == "sse" and body.startswith(b"data: "):
                return
            problem = f"{status}, X-Failover-Source {source!r}, body {body[:100]!r}"
        time.sleep(0.2)
    raise StartError(f"GET {SSE_PATH} through the proxy never streamed an event: {problem}")


@dataclass(frozen=True)
class Endpoints:
    """Where the client goes for each part, by target."""

    sse: dict[str, str]  # base URLs
    ws: dict[str, str]  # ws:// URLs


def start_servers(
    args: argparse.Namespace, children: Children, cpus: CpuPlan
) -> tuple[Endpoints, dict[str, list[int] | None]]:
    """The upstreams and the proxy, each checked before any measurement."""
    sse_port, ws_port, proxy_port = free_ports(3)
    serve_argv = [
        sys.executable, str(Path(__file__).resolve()), "--serve",
        "--sse-port", str(sse_port), "--ws-port", str(ws_port),
    ]  # fmt: skip
    upstreams = children.start("upstreams", serve_argv, cpus.upstream)
    for port in (sse_port, ws_port):
        wait_for_port(upstreams, port, args.start_timeout, children.log_path("upstreams"))
    conf = proxy_conf(proxy_port, sse_port, ws_port)
    proxy = targets.start_failover(children, PROXY, conf, cpus.server, args.proxy_cmd)
    wait_for_port(proxy, proxy_port, args.start_timeout, children.log_path(PROXY))
    expect_stream(proxy_port, args.start_timeout)
    endpoints = Endpoints(
        sse={DIRECT: f"http://{HOST}:{sse_port}", PROXY: f"http://{HOST}:{proxy_port}"},
        ws={DIRECT: f"ws://{HOST}:{ws_port}{WS_PATH}", PROXY: f"ws://{HOST}:{proxy_port}{WS_PATH}"},
    )
    return endpoints, {"upstreams": affinity(upstreams.pid), PROXY: affinity(proxy.pid)}


# --- the report ----------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    value_ms: float | None
    passed: bool | None  # None: not measured

    @property
    def verdict(self) -> str:
        return {True: "met", False: "MISSED", None: "n/a"}[self.passed]


def checks(measured: Measured) -> list[Check]:
    p99 = measured.sse[PROXY].figures_ms()["event_p99"]
    name = f"an event's p99 latency through the proxy <= {EVENT_P99_TARGET_MS:g} ms"
    return [Check(name, p99, None if p99 is None else p99 <= EVENT_P99_TARGET_MS)]


def failures(measured: Measured) -> list[str]:
    found = [f"SSE {name}: {r.error}" for name, r in measured.sse.items() if r.error]
    return found + [f"WebSocket {name}: {r.error}" for name, r in measured.ws.items() if r.error]


def to_json(meta: dict[str, str], measured: Measured) -> dict[str, object]:
    return {
        "meta": meta,
        "sse_ms": {
            name: {**r.figures_ms(), "events": len(r.event_s), "error": r.error}
            for name, r in measured.sse.items()
        },
        "ws_messages_per_s": {
            name: {**r.messages_per_s, "error": r.error} for name, r in measured.ws.items()
        },
        "checks": [vars(check) for check in checks(measured)],
        "failed": failures(measured),
    }


def _cell(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


SSE_ROWS = {
    "first_event_p50": "first event p50",
    "first_event_p99": "first event p99",
    "event_p50": "event p50",
    "event_p99": "event p99",
    "event_max": "event max",
}


def render(args: argparse.Namespace, summary: dict[str, str], measured: Measured) -> str:
    lines = ["failover-proxy streams and WebSockets (bench/streams.py)"]
    lines += [f"  {key:<14}  {value}" for key, value in summary.items()]
    if "sse" in args.parts:
        direct, proxy = (measured.sse[name].figures_ms() for name in (DIRECT, PROXY))
        lines += ["", f"{'SSE latency, ms':<28}{DIRECT:>10}{PROXY:>16}{'added':>10}"]
        for key, label in SSE_ROWS.items():
            mine, theirs = proxy[key], direct[key]
            added = None if mine is None or theirs is None else mine - theirs
            lines.append(f"  {label:<26}{_cell(theirs):>10}{_cell(mine):>16}{_cell(added):>10}")
        lumped = proxy["event_p50"]
        if lumped is not None and lumped > 250 * args.events * args.interval:
            lines.append(
                "  (the proxy held the stream back: its events came in a lump, not as sent)"
            )
    if "ws" in args.parts:
        lines += ["", f"{'WebSocket echo, messages/s':<28}{DIRECT:>10}{PROXY:>16}{'ratio':>10}"]
        for mode in ws_modes(args):
            theirs = measured.ws[DIRECT].messages_per_s.get(mode)
            mine = measured.ws[PROXY].messages_per_s.get(mode)
            ratio = None if mine is None or not theirs else mine / theirs
            cells = f"{_cell(theirs, 0):>10}{_cell(mine, 0):>16}{_cell(ratio, 2):>10}"
            lines.append(f"  {mode.replace('_', ' '):<26}{cells}")
    lines += ["", "checks"]
    lines += [f"  {c.name}: {c.verdict} ({_cell(c.value_ms)} ms)" for c in checks(measured)]
    if problems := failures(measured):
        lines += ["", "FAILED (not measured):", *[f"  {problem}" for problem in problems]]
    return "\n".join(lines)


# --- the command ---------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="SSE runs, direct and proxy each")
    parser.add_argument("--events", type=int, default=40, help="events per SSE stream")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between events")
    parser.add_argument("--probes", type=int, default=20, help="one-event streams per run")
    parser.add_argument("--ws-messages", type=int, default=10_000, help="per WebSocket run")
    parser.add_argument("--window", type=int, default=32, help="messages in flight, pipelined")
    parser.add_argument("--ws-timeout", type=float, default=120.0, help="seconds per WebSocket run")
    parser.add_argument("--parts", default="sse,ws", help="comma-separated subset of sse,ws")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON here")
    parser.add_argument(
        "--proxy-cmd",
        default=targets.DEFAULT_PROXY_CMD,
        help="command starting failover-proxy; {python} and {config} are filled in",
    )
    parser.add_argument("--start-timeout", type=float, default=20.0, help="seconds per server")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sse-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ws-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    if not args.parts or set(args.parts) - {"sse", "ws"}:
        parser.error("--parts is a comma-separated subset of sse,ws")
    if min(args.runs, args.events, args.ws_messages, args.window) < 1 or args.probes < 0:
        parser.error("need --runs, --events, --ws-messages, --window >= 1 and --probes >= 0")
    if args.serve and (args.sse_port is None or args.ws_port is None):
        parser.error("--serve needs --sse-port and --ws-port")
    return args


def ws_modes(args: argparse.Namespace) -> tuple[str, str]:
    return "one_at_a_time", f"window_{args.window}"


def describe(args: argparse.Namespace, cpus: CpuPlan) -> dict[str, str]:
    megabytes = sum(map(len, message_payloads(args.ws_messages))) / 2**20
    return {
        "sse": f"{args.runs} runs of a {args.events}-event stream ({args.interval * 1000:g} ms "
        f"apart) and {args.probes} one-event probes, each direct then through the proxy",
        "websocket": f"{args.ws_messages} binary messages of {SMALLEST} B to {LARGEST // 1024} "
        f"KiB ({megabytes:.1f} MiB each way), one at a time, then {args.window} in flight",
        "cpus": f"proxy {_cpu(cpus.server)}, client {_cpu(cpus.load)}, "
        f"upstreams {_cpu(cpus.upstream)}",
        "python": f"{platform.python_version()}, {evloop.loop_name()} ({sys.executable})",
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def _cpu(cpu: int | None) -> str:
    return "unpinned" if cpu is None else f"CPU {cpu}"


def benchmark(args: argparse.Namespace, children: Children) -> tuple[dict[str, str], Measured]:
    cpus = plan_cpus(args.no_pin)
    progress("starting the upstreams and failover-proxy")
    endpoints, pinned = start_servers(args, children, cpus)
    if cpus.load is not None:
        os.sched_setaffinity(0, {cpus.load})
    pinned["client"] = affinity(os.getpid())
    summary = describe(args, cpus)
    summary["affinity"] = ", ".join(f"{name} {cpu_list}" for name, cpu_list in pinned.items())
    measured: Measured = evloop.run(measure(args, endpoints))
    return summary, measured


def progress(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that stops every child


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            evloop.run(serve(args.sse_port, args.ws_port))
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    with tempfile.TemporaryDirectory(prefix="failover-bench-streams-") as tmp:
        children = Children(Path(tmp))
        try:
            summary, measured = benchmark(args, children)
        except StartError as exc:
            print(f"a server did not start: {exc}", file=sys.stderr)
            return 2
        finally:
            children.stop_all()
    print(render(args, summary, measured))
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(summary, measured), indent=2) + "\n")
    if failures(measured):
        return 2
    return 1 if args.check and any(c.passed is False for c in checks(measured)) else 0


if __name__ == "__main__":
    sys.exit(main())
