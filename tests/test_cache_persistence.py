"""The cache survives the process: kill -9 the proxy, restart it with every upstream
down, and the last good answers are still served. A proxy process of its own, real
sockets, a real file."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import LOOPBACK, route
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


def rows_on_disk(path: Path) -> int:
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT count(*) FROM entries").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


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


async def test_a_corrupt_cache_file_never_stops_the_proxy(
    start_proxy, http_upstream, client, tmp_path: Path, caplog
):
    cache_file = tmp_path / "cache.db"
    cache_file.write_bytes(b"\x00garbage" * 512)
    upstream = await http_upstream(lambda request: _json({"ok": True}))
    config = {
        "upstreams": {"primary": {"url": upstream.url}},
        "routes": [route(upstreams=("primary",), cache={"stale_for": "1h"})],
        "cache": {"path": str(cache_file), "flush_interval": "50ms"},
    }
    with caplog.at_level(logging.ERROR, logger="failover_proxy"):
        proxy = await start_proxy(config)
    assert "is unreadable" in caplog.text
    assert len(list(tmp_path.glob("cache.db.corrupt-*"))) == 1
    async with client.get(proxy + "/x") as response:
        assert await response.json() == {"ok": True}
    async with asyncio.timeout(10):
        while rows_on_disk(cache_file) < 1:  # the new file is written to
            await asyncio.sleep(0.02)


async def test_an_unusable_cache_path_keeps_the_cache_in_memory(
    start_proxy, client, refused_url, tmp_path: Path, caplog
):
    (tmp_path / "plain").write_text("a file, not a directory")
    config = {
        "upstreams": {"primary": {"url": refused_url}},
        "routes": [route(upstreams=("primary",), cache={"stale_for": "1h"})],
        "cache": {"path": str(tmp_path / "plain" / "cache.db")},
    }
    with caplog.at_level(logging.ERROR, logger="failover_proxy"):
        proxy = await start_proxy(config)
    assert "the cache is kept in memory only" in caplog.text
    async with client.get(proxy + "/x") as response:
        assert response.status == 503


async def _json(body: dict) -> web.Response:
    return web.json_response(body)
