"""The cache survives the process: kill -9 the proxy, restart it with every upstream
down, and the last good answers are still served. A proxy process of its own, real
sockets, a real file."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web

from tests.conftest import route
from tests.helpers.cache_persistence import rows_on_disk


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
