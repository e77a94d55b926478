"""Issue 12, items 10 and 11: a buffered write's replay does not take a half-open probe a
client could take, and an answer retrying cannot change (501, 505, most 4xx) makes the
write a dead letter at once without counting against the upstream's breaker."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.app import ProxyApp
from proxy.buffer.rules import Verdict, final, verdict
from proxy.chain.errors import Failure
from proxy.config.runtime import upstream_settings
from proxy.config.schema import Upstream
from proxy.upstreams.breaker import BreakerSettings, CircuitBreaker, State
from proxy.upstreams.guard import Ticket, UpstreamGuard
from tests.conftest import LOOPBACK, FakeClock, route

# -- item 11: which answers end a replay ---------------------------------------------


@pytest.mark.parametrize("status", [400, 403, 404, 405, 410, 413, 422, 501, 505])
def test_an_answer_retrying_cannot_change_makes_a_dead_letter(status: int) -> None:
    assert final(status)
    assert verdict(status) is Verdict.DEAD


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502, 503, 504, 507, 599])
def test_an_answer_that_may_change_is_retried(status: int) -> None:
    assert not final(status)
    assert verdict(status) is Verdict.RETRY


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_a_2xx_delivers(status: int) -> None:
    assert not final(status)
    assert verdict(status) is Verdict.DELIVERED


# -- item 10: replay and half-open probes, on a fake clock --------------------------


def breaker(**settings: Any) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    defaults: dict[str, Any] = {"consecutive_failures": 1, "open_for": 10.0}
    cb = CircuitBreaker(
        BreakerSettings(**{**defaults, **settings}), clock, uniform=lambda low, high: 0.0
    )
    return cb, clock


def trip(cb: CircuitBreaker) -> None:
    permit = cb.acquire()
    assert permit is not None
    cb.record(permit, failed=True, duration=0.0)
    assert cb.state is State.OPEN


def test_a_background_call_goes_through_a_closed_circuit() -> None:
    cb, _ = breaker()
    permit = cb.acquire(background=True)
    assert permit is not None and not permit.probe


def test_a_background_call_leaves_the_first_probe_to_a_client() -> None:
    cb, clock = breaker(half_open_probes=1)
    trip(cb)
    clock.now += 10  # the open time is up: the next call would be the probe
    assert cb.acquire(background=True) is None
    assert cb.state is State.OPEN  # refusing a replay moved nothing
    permit = cb.acquire()
    assert permit is not None and permit.probe
    cb.record(permit, failed=False, duration=0.0)
    assert cb.state is State.CLOSED


def test_a_background_call_does_not_take_the_probes_left_while_clients_probe() -> None:
    cb, clock = breaker(half_open_probes=3)
    trip(cb)
    clock.now += 10
    client_probe = cb.acquire()
    assert client_probe is not None and client_probe.probe
    clock.now += 9  # clients probed 9 s ago: still theirs
    assert cb.acquire(background=True) is None
    assert cb.acquire() is not None  # a client still gets one of the two left


def test_a_background_call_probes_a_circuit_no_client_probed_for_open_for() -> None:
    cb, clock = breaker(half_open_probes=1)
    trip(cb)
    clock.now += 10 + 9.9  # open time up 9.9 s ago, nobody came
    assert cb.acquire(background=True) is None
    clock.now += 0.1  # up for open_for (10 s) with no client probing: a replay may
    permit = cb.acquire(background=True)
    assert permit is not None and permit.probe
    assert cb.state is State.HALF_OPEN
    assert cb.acquire() is None  # the one probe is in flight
    cb.record(permit, failed=False, duration=0.0)
    assert cb.state is State.CLOSED


def test_a_background_call_waits_open_for_after_the_last_client_probe() -> None:
    cb, clock = breaker(half_open_probes=2)
    trip(cb)
    clock.now += 10
    first = cb.acquire()
    assert first is not None
    clock.now += 5
    cb.release(first)  # the client went away: the circuit stays half-open
    clock.now += 4
    assert cb.acquire(background=True) is None  # 9 s since that client probe
    clock.now += 1
    assert cb.acquire(background=True) is not None


def guard(clock: FakeClock, **upstream: Any) -> UpstreamGuard:
    settings = upstream_settings(
        "p", Upstream.model_validate({"url": "http://127.0.0.1:1", **upstream}), Path()
    )
    return UpstreamGuard(settings, clock=clock, wall_clock=clock)


def test_the_guard_passes_background_to_the_breaker() -> None:
    clock = FakeClock()
    g = guard(clock, circuit_breaker={"consecutive_failures": 1, "open_for": "10s"})
    ticket = g.admit()
    assert isinstance(ticket, Ticket)
    g.finish(ticket, Failure.HTTP_5XX, status=500)
    clock.now += 12  # past the open time even with +10% jitter
    assert g.admit(background=True) is Failure.BREAKER_OPEN
    assert g.in_flight == 0
    assert isinstance(g.admit(), Ticket)


# -- end to end ----------------------------------------------------------------------


def config(upstreams: dict[str, str], tmp_path: Path, **breaker_: Any) -> dict[str, Any]:
    names = tuple(upstreams)
    return {
        "upstreams": {
            name: {
                "url": url,
                "timeouts": {"connect": "200ms", "read": "1s"},
                "circuit_breaker": {"consecutive_failures": 1, "half_open_probes": 1, **breaker_},
            }
            for name, url in upstreams.items()
        },
        "routes": [
            {**route("events", names, on_failure="buffer"), "match": {"path_prefix": "/events"}},
            {**route("reads", names), "match": {"path_prefix": "/"}},
        ],
        "buffer": {
            "path": str(tmp_path / "buffer"),
            "replay_backoff": "20ms",
            "max_replay_backoff": "100ms",
        },
    }


async def post(client: aiohttp.ClientSession, app: ProxyApp, body: bytes) -> int:
    async with client.post(f"http://{LOOPBACK}:{app.port}/events", data=body) as response:
        await response.read()
        return response.status


async def test_a_write_answered_501_is_a_dead_letter_after_one_try_and_not_an_outage(
    start_app, http_upstream, client, tmp_path
):
    """http.server answers POST with 501: the write is the application's to refuse,
    retrying changes nothing, and the upstream is up (its breaker stays closed)."""

    async def not_implemented(request: web.Request) -> web.Response:
        return web.Response(status=501, text="Unsupported method ('POST')")

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    primary = await http_upstream(not_implemented)
    backup = await http_upstream(ok)
    app = await start_app(config({"primary": primary.url, "backup": backup.url}, tmp_path))
    guards = app.handler.guards
    for g in guards.values():  # kept: every upstream skipped, so surely not applied
        g.pin(State.OPEN, "test")
    assert await post(client, app, b'{"n": 1}') == 202
    for g in guards.values():
        g.pin(None, "test")  # the replay may go now
    buffer = app.handler.buffer
    assert buffer is not None
    async with asyncio.timeout(5):
        while not buffer.dead_count():
            await asyncio.sleep(0.01)
    retried = buffer.totals.get(("events", "retry"), 0)  # while pinned open, perhaps
    await asyncio.sleep(0.2)  # several backoffs: a retried write would be sent again
    assert primary.hits == 1  # one delivery try
    assert backup.hits == 0  # the verdict ends the walk: it never goes on elsewhere
    assert buffer.totals.get(("events", "retry"), 0) == retried
    assert buffer.status()["depth"] == 0
    (dead,) = buffer.dead_letters()
    assert dead["answer"]["status"] == 501
    assert dead["answer"]["upstream"] == "primary"
    assert "Unsupported method" in dead["answer"]["body"]
    # not an outage: a breaker that opens on one failure is still closed, no failure seen
    assert guards["primary"].breaker is not None
    assert guards["primary"].breaker.state is State.CLOSED
    stats = app.handler.stats.upstreams["primary"]
    assert stats.failure_rate() == (0.0, 1)
    assert stats.last_failure is None


async def test_a_replay_leaves_the_half_open_probe_to_a_client(
    start_app, http_upstream, client, tmp_path
):
    """The quick start's 84 s: the replay took the probe, failed, and the circuit opened
    again for twice as long while a client's read would have succeeded."""

    async def handler(request: web.Request) -> web.Response:
        if request.method == "POST":
            return web.Response(status=500, text="the write fails")
        if request.path == "/fail":
            return web.Response(status=500, text="down")
        return web.json_response({"drivers": [1]})

    upstream = await http_upstream(handler)
    clock = FakeClock()
    app = await start_app(config({"primary": upstream.url}, tmp_path, open_for="10s"), clock)
    base = f"http://{LOOPBACK}:{app.port}"
    async with client.get(base + "/fail") as response:
        assert response.status == 500  # one failure: the circuit opens
    primary = app.handler.guards["primary"]
    assert primary.breaker is not None and primary.breaker.state is State.OPEN
    assert await post(client, app, b'{"n": 1}') == 202  # skipped (circuit open): buffered
    buffer = app.handler.buffer
    assert buffer is not None

    async def a_replay_pass() -> None:
        before = buffer.totals.get(("events", "retry"), 0)
        async with asyncio.timeout(5):
            while buffer.totals.get(("events", "retry"), 0) == before:
                await asyncio.sleep(0.005)

    clock.now += 12  # the open time (10 s +-10%) is up
    await a_replay_pass()
    assert [r["method"] for r in upstream.requests] == ["GET"]  # the replay did not probe
    async with client.get(base + "/drivers") as response:
        assert response.status == 200
        assert response.headers["X-Failover-Source"] == "primary"
        assert json.loads(await response.read()) == {"drivers": [1]}
    assert primary.breaker.state is State.CLOSED


# -- the README's quick start, as a process -------------------------------------------

REPO = Path(__file__).resolve().parent.parent


async def source_of(session: aiohttp.ClientSession, url: str) -> tuple[str, str, bytes]:
    async with session.get(url) as response:
        return (
            response.headers["X-Failover-Source"],
            response.headers.get("Proxy-Status", ""),
            await response.read(),
        )


async def both_down(session: aiohttp.ClientSession, base: str) -> bool:
    async with session.get(f"{base}/_failover/health") as response:
        upstreams = (await response.json())["upstreams"]
    return all(up["health_check"]["state"] == "down" for up in upstreams.values())


async def test_the_quick_start_shows_the_source_change_within_seconds(tmp_path):
    """README "Quick start" on the bundled config.yaml (ports made free): its curls open
    both circuits, then `python3 -m http.server` with a drivers file is the backup
    within a few seconds; its 501 to the buffered POST makes a dead letter; stopped,
    the drivers route serves the backup's answer from the cache."""
    from tests.procs import spawn
    from tests.test_buffer import free_port

    primary_port, backup_port = free_port(), free_port()
    text = (REPO / "config.yaml").read_text()
    for old, new in (
        ("port: 8080", "port: 0"),
        ("127.0.0.1:8000", f"127.0.0.1:{primary_port}"),
        ("127.0.0.1:8001", f"127.0.0.1:{backup_port}"),
    ):
        assert old in text
        text = text.replace(old, new)
    (tmp_path / "config.yaml").write_text(text)
    shutil.copytree(REPO / "defaults", tmp_path / "defaults")
    proxy = await spawn(tmp_path / "config.yaml")
    server: asyncio.subprocess.Process | None = None
    try:
        await proxy.wait_listening()
        drivers = f"{proxy.url}/api/telemetry/drivers"
        async with aiohttp.ClientSession() as session:
            assert (await source_of(session, drivers))[0] == "default"
            async with session.post(f"{proxy.url}/api/events", data=b'{"n":1}') as response:
                assert response.status == 202
            async with session.get(f"{proxy.url}/anything") as response:
                assert response.status == 503
            # As long as a newcomer takes to type the next command: the curls and the
            # replays open both circuits, and the health checks see both upstreams down.
            async with asyncio.timeout(6):
                while (await source_of(session, drivers))[1].count("breaker_open") < 2:
                    await asyncio.sleep(0.1)
                while not await both_down(session, proxy.url):
                    await asyncio.sleep(0.1)
            served = tmp_path / "backup"
            (served / "api" / "telemetry").mkdir(parents=True)
            (served / "api" / "telemetry" / "drivers").write_text('{"drivers": [{"id": 7}]}\n')
            server = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "http.server",
                str(backup_port),
                "-d",
                str(served),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            started = asyncio.get_running_loop().time()
            async with asyncio.timeout(5):  # the README says "about two seconds"
                while (await source_of(session, drivers))[0] != "backup":
                    await asyncio.sleep(0.1)
            assert asyncio.get_running_loop().time() - started < 4
            async with asyncio.timeout(5):
                while b"is a dead letter" not in proxy.log:
                    await asyncio.sleep(0.05)
            assert b"'status': 501" in proxy.log
            server.terminate()
            await server.wait()
            source, _, body = await source_of(session, drivers)
            assert (source, body) == ("cache", b'{"drivers": [{"id": 7}]}\n')
        proxy.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await proxy.process.wait() == 0
    finally:
        if server is not None and server.returncode is None:
            server.kill()
            await server.wait()
        await proxy.kill()
