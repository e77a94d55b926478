"""Quotas: a token bucket per second and fixed UTC windows, spent before the provider
refuses; the fake clock is wall-clock seconds."""

from __future__ import annotations

import asyncio

from aiohttp import web

from tests.conftest import FakeClock, route


async def test_a_spent_quota_moves_traffic_to_the_next_upstream(http_upstream, start_proxy, client):
    primary = await http_upstream(lambda r: asyncio.sleep(0, web.Response(text="primary")))
    secondary = await http_upstream(lambda r: asyncio.sleep(0, web.Response(text="secondary")))
    clock = FakeClock()
    config = {
        "upstreams": {
            "primary": {"url": primary.url, "quota": {"per_second": 2, "per_minute": 3}},
            "secondary": {"url": secondary.url},
        },
        "routes": [route()],
    }
    proxy = await start_proxy(config, clock=clock)
    sources = []
    for _ in range(5):
        async with client.get(proxy + "/x") as response:
            sources.append(await response.text())
            if sources[-1] == "secondary":
                assert 'details="quota_exhausted"' in response.headers["Proxy-Status"]
    assert sources == ["primary", "primary", "secondary", "secondary", "secondary"]
    clock.now += 1
    async with client.get(proxy + "/x") as response:
        assert await response.text() == "primary"  # the third of the minute's three
    async with client.get(proxy + "/x") as response:
        assert await response.text() == "secondary"
    assert primary.hits == 3
