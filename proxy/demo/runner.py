"""``failover-proxy demo``: every layer of failover, live, in under a minute.

Everything runs in this one process, on ephemeral ports of 127.0.0.1: two demo
upstreams (a primary that fails on a schedule, and a secondary), the proxy with the
bundled ``demo.yaml`` (its upstream URLs pointed at the demo upstreams), and a client
that sends a few requests a second. Once a second it prints one line: what served the
requests of that second (``X-Failover-Source``), their health (``X-Failover-Health``),
the circuit breakers, and why the upstreams that failed did (``Proxy-Status``).

The schedule runs on its own clock, ``--speed`` times faster than the wall clock; the
durations of the config are divided by the same factor, so a faster run tells the
same story. Ctrl-C (or SIGTERM) stops all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from aiohttp import web

from proxy.app import ProxyApp
from proxy.chain.errors import SKIPPED
from proxy.config.loader import parse_yaml
from proxy.config.schema import Config
from proxy.config.units import parse_duration
from proxy.demo.chat import CHAT_EVERY, CHAT_PATH, TOKEN_GAP, chat_stream, drive_chat
from proxy.demo.hops import failed_hops
from proxy.ops.health import circuit_state

LOOPBACK = "127.0.0.1"
PATH = "/api/drivers"
RATE = 5  # requests per second of the schedule
SLOW = 2.0  # how long the slow primary takes to answer; its read timeout is 1s
UPSTREAMS = ("primary", "secondary")
# Durations in demo.yaml that --speed divides.
SCALED_KEYS = frozenset(
    {
        "connect",
        "read",
        "open_for",
        "max_open_for",
        "deadline",
        "stale_for",
        "first_event_timeout",
        "idle_timeout",
    }
)
SKIP_CLASSES = frozenset(failure.value for failure in SKIPPED)
DRIVERS = [
    {"number": 1, "name": "Max Verstappen"},
    {"number": 4, "name": "Lando Norris"},
    {"number": 16, "name": "Charles Leclerc"},
]


@dataclass(frozen=True)
class Phase:
    """From ``start`` (seconds of the schedule) on, how each demo upstream behaves:
    ``ok``, ``error`` (500 from the primary, 503 from the secondary), ``slow`` (answers
    after ``SLOW``), ``empty`` (200 with ``{"drivers": []}``, which validation refuses),
    ``bad_stream`` (as ``ok``, but its chat stream's first event is an error event)."""

    start: float
    label: str
    primary: str
    secondary: str


SCHEDULE = (
    Phase(0, "all healthy", "ok", "ok"),
    Phase(4, "primary: chat errors", "bad_stream", "ok"),
    Phase(8, "primary: 500 errors", "error", "ok"),
    Phase(11, "primary: slow (2s)", "slow", "ok"),
    Phase(13.5, "primary: empty answers", "empty", "ok"),
    Phase(16, "both upstreams down", "error", "error"),
    Phase(35, "all recovered", "ok", "ok"),
)
LENGTH = 45.0  # seconds of the schedule in a whole run


class Clock:
    """The schedule's clock: ``speed`` schedule seconds per real second."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.started = time.monotonic()

    def restart(self) -> None:
        self.started = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self.started) * self.speed

    def real(self, seconds: float) -> float:
        """Schedule seconds as real seconds."""
        return seconds / self.speed

    def phase(self, at: float | None = None) -> Phase:
        at = self.now() if at is None else at
        return [phase for phase in SCHEDULE if phase.start <= at][-1]


def upstream_app(name: str, clock: Clock) -> web.Application:
    """A demo upstream that behaves as the current phase says."""

    async def handle(request: web.Request) -> web.StreamResponse:
        mode = getattr(clock.phase(), name)
        if request.path.startswith(CHAT_PATH):
            return await chat_stream(request, name, mode, clock.real(TOKEN_GAP))
        if mode == "error":
            status = 500 if name == "primary" else 503
            return web.json_response({"error": f"{name} is down"}, status=status)
        if mode == "empty":
            return web.json_response({"drivers": []})
        if mode == "slow":
            await asyncio.sleep(clock.real(SLOW))
        return web.json_response({"drivers": DRIVERS, "served_by": name})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def demo_config(ports: dict[str, int], speed: float) -> Config:
    """The bundled demo.yaml, pointed at the demo upstreams, its durations / ``speed``."""
    text = resources.files("proxy.demo").joinpath("demo.yaml").read_text(encoding="utf-8")
    data, _ = parse_yaml(text)
    for name, port in ports.items():
        data["upstreams"][name]["url"] = f"http://{LOOPBACK}:{port}"
    return Config.model_validate(_scaled(data, speed))


def _scaled(node: Any, speed: float) -> Any:
    if isinstance(node, dict):
        return {
            key: f"{parse_duration(value) / speed * 1000:.3f}ms"
            if key in SCALED_KEYS and isinstance(value, str)
            else _scaled(value, speed)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_scaled(item, speed) for item in node]
    return node


@dataclass
class Second:
    """What the answers of one second of the schedule said."""

    served: Counter[str] = field(default_factory=Counter)
    health: str | None = None  # of the latest answer
    failures: dict[str, str] = field(default_factory=dict)  # upstream -> why it failed


@dataclass
class Tally:
    current: Second = field(default_factory=Second)
    total: Counter[str] = field(default_factory=Counter)
    chats: list[str] = field(default_factory=list)  # one line per chat stream that ended

    def take(self) -> Second:
        second, self.current = self.current, Second()
        return second

    def add(self, source: str, health: str | None, proxy_status: str) -> None:
        self.current.served[source] += 1
        self.total[source] += 1
        if health is not None:
            self.current.health = health
        for upstream, why in failed_hops(proxy_status):
            seen = self.current.failures.get(upstream)
            # A real failure says more than a skip (the probe that found it still broken).
            if seen is None or (seen in SKIP_CLASSES and why not in SKIP_CLASSES):
                self.current.failures[upstream] = why


def line(at: int, phase: Phase, second: Second, breakers: dict[str, str]) -> str:
    served = ", ".join(f"{source} x{n}" for source, n in second.served.most_common()) or "-"
    if second.health:
        served += f" ({second.health})"
    states = " ".join(f"{name}={state}" for name, state in breakers.items())
    text = f"t={at:>2}s  {phase.label:<22}  served: {served:<34}  breakers: {states:<34}"
    if second.failures:
        text += "  failed: " + " ".join(f"{u}={why}" for u, why in second.failures.items())
    return text.rstrip()


async def _request(session: aiohttp.ClientSession, url: str, tally: Tally) -> None:
    try:
        async with session.get(url) as response:
            await response.read()
            source = response.headers.get("X-Failover-Source", "?")
            if source == "cache" and "collapsed" in response.headers.get("Cache-Status", ""):
                # It waited for a concurrent request's upstream call and shares its answer.
                source = "collapsed"
            tally.add(
                source,
                response.headers.get("X-Failover-Health"),
                response.headers.get("Proxy-Status", ""),
            )
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.add(f"client error ({type(exc).__name__})", None, "")


async def _drive(session: aiohttp.ClientSession, url: str, clock: Clock, tally: Tally) -> None:
    """``RATE`` requests a second of the schedule, each on its own: a slow answer does
    not hold back the next request."""
    pending: set[asyncio.Task[None]] = set()
    interval = clock.real(1 / RATE)
    due = time.monotonic()
    try:
        while True:
            task = asyncio.create_task(_request(session, url, tally))
            pending.add(task)
            task.add_done_callback(pending.discard)
            due += interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def _report(app: ProxyApp, clock: Clock, tally: Tally, seconds: int, out: TextIO) -> None:
    """One line at the end of every second of the schedule, about that second, and one
    per chat stream that ended in it."""
    for at in range(seconds):
        await asyncio.sleep(max(0.0, clock.started + clock.real(at + 1) - time.monotonic()))
        now = time.monotonic()
        breakers = {name: circuit_state(app.live.current.guards[name], now) for name in UPSTREAMS}
        print(line(at, clock.phase(at + 0.5), tally.take(), breakers), file=out, flush=True)
        chats = tally.chats[:]
        tally.chats.clear()  # in place: the chat driver holds this list
        for chat in chats:
            print(f"       chat stream: {chat}", file=out, flush=True)


async def _listen(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, 0).start()
    return runner, runner.addresses[0][1]


def _header(
    app: ProxyApp, ports: dict[str, int], config: Config, speed: float, out: TextIO
) -> None:
    url = f"http://{LOOPBACK}:{app.port}{PATH}"
    route = config.routes[0]
    stale_for = route.cache.stale_for * speed if route.cache else 0.0
    schedule = ", ".join(f"{phase.start:g}s {phase.label}" for phase in SCHEDULE)
    length = f"{LENGTH:g}s" if speed == 1 else f"{LENGTH:g}s, {LENGTH / speed:g}s at {speed:g}x"
    for text in (
        f"failover-proxy demo: the proxy listens on {url} (curl -i it too)",
        f"  upstreams: primary http://{LOOPBACK}:{ports['primary']} (fails on a schedule), "
        f"secondary http://{LOOPBACK}:{ports['secondary']}",
        f"  route {route.name}: primary -> secondary -> last good answer (cache, "
        f"stale_for {stale_for:g}s) -> default payload",
        f"  route chat: {CHAT_PATH}, a token stream (Server-Sent Events) every "
        f"{CHAT_EVERY}s that fails over before its first token (a primary that is down "
        "answers 200 with an error event first)",
        *textwrap.wrap(
            f"schedule ({length}): {schedule}. Ctrl-C stops it.",
            width=100,
            initial_indent="  ",
            subsequent_indent="    ",
        ),
        "",
    ):
        print(text, file=out, flush=True)


@contextlib.contextmanager
def _quiet_proxy_logs() -> Iterator[None]:
    """The lines say what the proxy's WARNINGs (breaker transitions) would; errors still
    show."""
    logger = logging.getLogger("failover_proxy")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


async def run_demo(
    *, duration: float | None = None, speed: float = 1.0, out: TextIO | None = None
) -> int:
    """Run the demo for ``duration`` seconds of the schedule (all of it by default).
    0 when it ran to the end; 128 + the signal's number when a signal stopped it."""
    out = out or sys.stdout
    loop = asyncio.get_running_loop()
    stopped: list[int] = []
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        stopped.append(signum)
        stop.set()

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)

    clock = Clock(speed)
    tally = Tally()
    runners: list[web.AppRunner] = []
    app: ProxyApp | None = None
    session: aiohttp.ClientSession | None = None
    tasks: list[asyncio.Task[Any]] = []
    try:
        with _quiet_proxy_logs():
            ports: dict[str, int] = {}
            for name in UPSTREAMS:
                runner, ports[name] = await _listen(upstream_app(name, clock))
                runners.append(runner)
            config = demo_config(ports, speed)
            app = ProxyApp(config, Path(__file__).parent)
            await app.start()
            _header(app, ports, config, speed, out)
            # The route's deadline bounds every answer; the client waits a little longer.
            wait = config.routes[0].deadline + 1.0
            session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=wait))
            seconds = math.ceil(LENGTH if duration is None else duration)
            clock.restart()
            url = f"http://{LOOPBACK}:{app.port}{PATH}"
            tasks.append(asyncio.create_task(_drive(session, url, clock, tally)))
            chat_url = f"http://{LOOPBACK}:{app.port}{CHAT_PATH}"
            tasks.append(
                asyncio.create_task(
                    drive_chat(session, chat_url, clock.real(CHAT_EVERY), tally.chats)
                )
            )
            report = asyncio.create_task(_report(app, clock, tally, seconds, out))
            waiter = asyncio.create_task(stop.wait())
            tasks += [report, waiter]
            await asyncio.wait((report, waiter), return_when=asyncio.FIRST_COMPLETED)
            if report.done():
                report.result()
    finally:
        with _quiet_proxy_logs():
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if session is not None:
                await session.close()
            if app is not None:
                await app.stop()
            for runner in runners:
                await runner.cleanup()
        for signum in installed:
            loop.remove_signal_handler(signum)
    served = ", ".join(f"{source} x{n}" for source, n in tally.total.most_common())
    ending = f"stopped at t={clock.now():.0f}s" if stopped else "done"
    print(f"\n{ending}: {sum(tally.total.values())} requests: {served or 'none'}", file=out)
    return 128 + stopped[0] if stopped else 0


def main(duration: float | None = None, speed: float = 1.0) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run_demo(duration=duration, speed=speed))
    return uvloop.run(run_demo(duration=duration, speed=speed))
