"""The cache survives the process: kill -9 the proxy, restart it with every upstream
down, and the last good answers are still served. A proxy process of its own, real
sockets, a real file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import LOOPBACK, route
from tests.helpers.cache_persistence import rows_on_disk
from tests.procs import ProxyProcess, spawn


@pytest.fixture
async def run_proxy(tmp_path: Path) -> AsyncIterator[Callable[[dict], Awaitable[ProxyProcess]]]:
    started: list[ProxyProcess] = []

    async def run(config: dict) -> ProxyProcess:
        config_file = tmp_path / "config.yaml"
        config_file.write_text(json.dumps(config))  # JSON is YAML
        proxy = await spawn(config_file)
        started.append(proxy)
        await proxy.wait_listening()
        return proxy

    yield run
    for proxy in started:
        await proxy.kill()


async def start_origin() -> tuple[web.AppRunner, str]:
    async def drivers(request: web.Request) -> web.Response:
        return web.json_response({"drivers": ["ada", "lin"], "path": request.path})

    app = web.Application()
    app.router.add_get("/{tail:.*}", drivers)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, 0).start()
    return runner, f"http://{LOOPBACK}:{runner.addresses[0][1]}"


def config_for(upstream_url: str, cache_file: Path) -> dict:
    return {
        "listen": {"host": LOOPBACK, "port": 0},
        "upstreams": {"primary": {"url": upstream_url}},
        "routes": [route(upstreams=("primary",), cache={"stale_for": "1h"})],
        "cache": {"path": str(cache_file), "flush_interval": "50ms"},
    }


async def test_answers_survive_kill_9_and_are_served_with_every_upstream_down(
    run_proxy, client, tmp_path: Path
):
    runner, origin = await start_origin()
    cache_file = tmp_path / "state" / "cache.db"
    proxy = await run_proxy(config_for(origin, cache_file))
    # the key holds the Host; a sidecar is restarted on its own port, here a fresh one
    host = {"Host": "localhost:8080"}
    for path in ("/drivers/1", "/drivers/2"):
        async with client.get(proxy.url + path, headers=host) as response:
            assert response.headers["X-Failover-Source"] == "primary"
    async with asyncio.timeout(10):
        while rows_on_disk(cache_file) < 2:
            await asyncio.sleep(0.02)
    await proxy.kill()
    await runner.cleanup()  # every upstream is down now

    restarted = await run_proxy(config_for(origin, cache_file))
    for path in ("/drivers/1", "/drivers/2"):
        async with client.get(restarted.url + path, headers=host) as response:
            assert response.status == 200
            assert await response.json() == {"drivers": ["ada", "lin"], "path": path}
            assert response.headers["X-Failover-Source"] == "cache"
            assert response.headers["Cache-Status"] == "failover-proxy; hit; stale"
    async with client.get(restarted.url + "/never-fetched") as response:
        assert response.status == 503
    assert b"cache: 2 answers loaded" in restarted.log
