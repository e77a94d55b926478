"""``failover-proxy demo``: run headless, fast, it shows every layer in order; Ctrl-C
stops everything it started."""

from __future__ import annotations

import asyncio
import io
import re
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from proxy.demo.runner import Clock, demo_config, failed_hops, run_demo

REPO = Path(__file__).resolve().parent.parent
LINE = re.compile(r"^t=\s*(\d+)s  .*?served: (.*?)(?: \((\w+)\))?\s+breakers: ")


def served(text: str) -> list[tuple[int, str, str]]:
    """``(second, the layer that served most, the latest health)`` per line."""
    rows = []
    for line in text.splitlines():
        match = LINE.match(line)
        if match:
            counts = Counter(
                {name: int(n) for name, n in re.findall(r"([\w ()]+?) x(\d+)", match[2])}
            )
            layer = counts.most_common(1)[0][0].strip() if counts else "-"
            rows.append((int(match[1]), layer, match[3] or "-"))
    return rows


def ports(text: str) -> list[int]:
    return [int(port) for port in re.findall(r"http://127\.0\.0\.1:(\d+)", text.split("\n\n")[0])]


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False


async def test_the_demo_shows_every_layer_in_order():
    """The whole schedule at 8x (under 6 s): primary -> secondary -> cache -> default ->
    primary again, with a breaker open on the way."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "demo",
        "--speed",
        "8",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    try:
        async with asyncio.timeout(40):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = stdout.decode()
    assert process.returncode == 0, text + stderr.decode()
    assert not stderr.decode().strip(), stderr.decode()  # the proxy's warnings are quiet
    rows = served(text)
    assert [second for second, _, _ in rows] == list(range(45)), text
    layers = [layer for _, layer, _ in rows]
    runs = [layer for i, layer in enumerate(layers) if i == 0 or layers[i - 1] != layer]
    expected = iter(runs)
    assert all(layer in expected for layer in ("primary", "secondary", "cache", "default")), runs
    assert "primary" in expected, f"no recovery back to primary: {runs}"
    health = dict.fromkeys(layers)
    for _, layer, state in rows:
        health[layer] = health[layer] or state
    assert health["primary"] == "healthy"
    assert health["secondary"] == "degraded"
    assert health["cache"] == health["default"] == "critical"
    assert "primary=open" in text
    assert "secondary=open" in text
    assert rows[-1][1:] == ("primary", "healthy")
    assert "failed: primary=500" in text
    assert re.search(r"done: \d+ requests: ", text)


async def test_ctrl_c_stops_everything_it_started():
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "demo",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        head = ""
        async with asyncio.timeout(20):
            while not head.startswith("t=") and "\nt=" not in head:
                line = (await process.stdout.readline()).decode()
                assert line, f"the demo exited early: {head}"
                head += line
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            rest, errors = await process.communicate()
        took = time.monotonic() - started
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 130, head + rest.decode() + errors.decode()
    assert took < 5, took
    assert "stopped at t=" in rest.decode()
    assert not errors.decode().strip(), errors.decode()
    listeners = ports(head)
    assert len(listeners) == 3, head  # the proxy and both demo upstreams
    for port in listeners:
        assert await refused(port), f"127.0.0.1:{port} still accepts connections"


async def test_an_in_process_run_closes_everything_it_opened():
    out = io.StringIO()
    before = {task for task in asyncio.all_tasks() if not task.done()}
    assert await run_demo(duration=3, speed=8, out=out) == 0
    text = out.getvalue()
    assert [second for second, _, _ in served(text)] == [0, 1, 2]
    assert {layer for _, layer, _ in served(text)} == {"primary"}
    for port in ports(text):
        assert await refused(port)
    assert {task for task in asyncio.all_tasks() if not task.done()} <= before | {
        asyncio.current_task()
    }


def test_the_bundled_config_is_pointed_at_the_demo_upstreams_and_sped_up():
    config = demo_config({"primary": 1234, "secondary": 1235}, speed=4)
    assert config.listen.host == "127.0.0.1"
    assert config.listen.port == 0
    assert config.upstreams["primary"].url == "http://127.0.0.1:1234"
    assert config.upstreams["secondary"].url == "http://127.0.0.1:1235"
    assert config.upstreams["primary"].timeouts.read == pytest.approx(0.25)
    assert config.upstreams["primary"].circuit_breaker.open_for == pytest.approx(0.25)
    route = config.routes[0]
    assert route.deadline == pytest.approx(0.75)
    assert route.cache is not None and route.cache.stale_for == pytest.approx(2.5)
    assert route.validate_ is not None and route.validate_.json_nonempty == "$.drivers"
    assert route.default is not None


def test_proxy_status_is_read_as_who_failed_and_why():
    header = (
        'failover-proxy; received-status=500; next-hop=primary; details="http_5xx", '
        "failover-proxy; error=destination_unavailable; next-hop=secondary; "
        'details="breaker_open", '
        'failover-proxy; received-status=200; next-hop=primary; details="invalid_response"'
    )
    assert list(failed_hops(header)) == [
        ("primary", "500"),
        ("secondary", "breaker_open"),
        ("primary", "invalid_response"),
    ]
    assert list(failed_hops("")) == []


def test_the_schedule_clock_runs_at_its_speed():
    clock = Clock(speed=10)
    assert clock.real(45) == 4.5
    assert clock.phase(0).label == "all healthy"
    assert clock.phase(16.5).primary == clock.phase(16.5).secondary == "error"
    assert clock.phase(44).label == "all recovered"
