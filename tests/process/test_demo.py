"""``failover-proxy demo``: run headless, fast, it shows every layer in order; Ctrl-C
stops everything it started."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time

from tests.conftest import REPO
from tests.helpers.demo import ports, refused, served


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
