"""The process: start-up checks, the bundled config, and a graceful drain."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import REPO, route


async def test_in_flight_requests_finish_during_shutdown(http_upstream, start_proxy, client):
    from proxy.app import ProxyApp
    from proxy.config.schema import Config

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.5)
        return web.Response(text="finished")

    upstream = await http_upstream(slow)
    config = Config.model_validate(
        {
            "listen": {"host": "127.0.0.1", "port": 0},
            "upstreams": {"primary": {"url": upstream.url}},
            "routes": [route(upstreams=("primary",))],
        }
    )
    app = ProxyApp(config, REPO)
    await app.start()
    in_flight = asyncio.create_task(client.get(f"http://127.0.0.1:{app.port}/slow"))
    await asyncio.sleep(0.1)
    await app.stop()
    response = await in_flight
    assert response.status == 200
    assert await response.text() == "finished"
    with pytest.raises(aiohttp.ClientConnectorError):
        await client.get(f"http://127.0.0.1:{app.port}/after")
