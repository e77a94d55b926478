"""SIGTERM drains like Envoy: ``/_failover/readyz`` answers 503 at once while the
listener keeps accepting and answering, requests in flight finish, and the listener
closes once the proxy is idle or ``shutdown_grace`` is over. The proxy runs as its own
process (tests/procs.py), so the signal, the listener and the log are the real ones."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import LOOPBACK, route
from tests.procs import ProxyProcess, spawn

Start = Callable[[dict[str, Any]], Awaitable[ProxyProcess]]


@pytest.fixture
async def proxy_process(tmp_path: Path) -> AsyncIterator[Start]:
    started: list[ProxyProcess] = []

    async def start(config: dict[str, Any]) -> ProxyProcess:
        config_file = tmp_path / "config.yaml"
        config_file.write_text(json.dumps({"listen": {"host": LOOPBACK, "port": 0}, **config}))
        proxy = await spawn(config_file)
        started.append(proxy)
        await proxy.wait_listening()
        return proxy

    yield start
    for proxy in started:
        await proxy.kill()


async def exit_code(proxy: ProxyProcess, timeout: float) -> int:
    """Wait for the process to exit by itself; its whole log is read by then."""
    async with asyncio.timeout(timeout):
        code = await proxy.process.wait()
        assert proxy._reading is not None
        await proxy._reading
    return code


async def until_ready(session: aiohttp.ClientSession, proxy: ProxyProcess) -> None:
    """The port opens a moment before readyz turns 200 (the admin side starts last)."""
    async with asyncio.timeout(5):
        while await readyz(session, proxy) != 200:
            await asyncio.sleep(0.02)


async def readyz(session: aiohttp.ClientSession, proxy: ProxyProcess) -> int:
    """One probe on a new connection, as the kubelet sends it."""
    async with session.get(
        f"{proxy.url}/_failover/readyz", headers={"Connection": "close"}
    ) as response:
        return response.status


async def test_readyz_answers_503_while_a_request_in_flight_finishes(http_upstream, proxy_process):
    arrived = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        if request.path == "/slow":
            arrived.set()
            await asyncio.sleep(1.5)
        return web.Response(text=f"done {request.path}")

    upstream = await http_upstream(slow)
    proxy = await proxy_process(
        {
            "shutdown_grace": "5s",
            "upstreams": {"primary": {"url": upstream.url}},
            "routes": [route(upstreams=("primary",))],
        }
    )
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        await until_ready(session, proxy)
        in_flight = asyncio.create_task(session.get(f"{proxy.url}/slow"))
        await arrived.wait()
        proxy.process.send_signal(signal.SIGTERM)
        signalled = loop.time()
        await asyncio.sleep(0.05)
        statuses = []
        while not in_flight.done():
            statuses.append(await readyz(session, proxy))  # refused would raise
            await asyncio.sleep(0.1)
        # still accepting and proxying new requests while it drains
        async with session.get(f"{proxy.url}/new", headers={"Connection": "close"}) as late:
            assert (late.status, await late.text()) == (200, "done /new")
        async with await in_flight as response:
            assert (response.status, await response.text()) == (200, "done /slow")
    assert len(statuses) >= 5
    assert set(statuses) == {503}
    assert await exit_code(proxy, timeout=8) == 0
    # idle for a second after the last request: closed well before shutdown_grace
    assert loop.time() - signalled < 4.5
    log = proxy.log.decode()
    assert "draining: readyz answers 503; 1 requests in flight" in log, log
    assert re.search(r"draining: closing the listener after [\d.]+s \(idle\); 0 requests", log)


async def test_an_idle_proxy_answers_503_then_exits_without_waiting_out_the_grace(
    http_upstream, proxy_process
):
    upstream = await http_upstream(lambda r: asyncio.sleep(0, web.Response(text="ok")))
    proxy = await proxy_process(
        {
            "shutdown_grace": "30s",
            "upstreams": {"primary": {"url": upstream.url}},
            "routes": [route(upstreams=("primary",))],
        }
    )
    loop = asyncio.get_running_loop()
    proxy.process.send_signal(signal.SIGTERM)
    signalled = loop.time()
    await asyncio.sleep(0.1)
    async with aiohttp.ClientSession() as session:
        assert await readyz(session, proxy) == 503
    assert await exit_code(proxy, timeout=10) == 0
    assert loop.time() - signalled < 5


async def test_a_second_sigterm_ends_the_drain_at_once(http_upstream, proxy_process):
    release = asyncio.Event()

    async def never(request: web.Request) -> web.Response:
        await release.wait()  # until the test is over
        return web.Response(text="late")

    upstream = await http_upstream(never)
    proxy = await proxy_process(
        {
            "shutdown_grace": "30s",
            "upstreams": {"primary": {"url": upstream.url}},
            "routes": [route(upstreams=("primary",), deadline="60s")],
        }
    )
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        stuck = asyncio.create_task(session.get(f"{proxy.url}/stuck"))
        while not upstream.requests and not stuck.done():
            await asyncio.sleep(0.01)
        proxy.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        assert await readyz(session, proxy) == 503
        proxy.process.send_signal(signal.SIGTERM)
        signalled = loop.time()
        assert await exit_code(proxy, timeout=10) == 0
        assert loop.time() - signalled < 4
        with pytest.raises(aiohttp.ClientError):
            await stuck
    release.set()
    assert "(a second signal)" in proxy.log.decode()


async def test_the_buffer_log_says_how_long_replay_really_ran(
    tmp_path: Path, refused_url: str, proxy_process
):
    proxy = await proxy_process(
        {
            "shutdown_grace": "20s",
            "buffer": {"path": str(tmp_path / "buffer")},
            "upstreams": {"primary": {"url": refused_url}},
            "routes": [route(upstreams=("primary",), on_failure="buffer")],
        }
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{proxy.url}/orders", data=b"{}") as response,
    ):
        assert response.status == 202
    loop = asyncio.get_running_loop()
    proxy.process.send_signal(signal.SIGTERM)
    signalled = loop.time()
    assert await exit_code(proxy, timeout=15) == 0
    took = loop.time() - signalled
    log = proxy.log.decode()
    found = re.search(r"buffer: 1 writes still wait after ([\d.]+)s of replay at shutdown", log)
    assert found is not None, log
    assert float(found[1]) <= took < 10  # not "after 20.0s" a second after SIGTERM
    assert "(a pass where no upstream took a write)" in log
