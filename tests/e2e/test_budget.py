"""The retry budget: retries may add at most a share of an upstream's recent requests."""

from __future__ import annotations

import asyncio
import itertools

from aiohttp import web

from tests.conftest import FakeClock, route


async def test_a_half_failing_upstream_gets_at_most_a_fifth_more_calls(
    http_upstream, start_proxy, client
):
    statuses = itertools.cycle([503, 200])
    primary = await http_upstream(lambda r: asyncio.sleep(0, web.Response(status=next(statuses))))
    secondary = await http_upstream(lambda r: asyncio.sleep(0, web.Response(text="secondary")))
    no_breaker = {"enabled": False}
    config = {
        "upstreams": {
            "primary": {
                "url": primary.url,
                "circuit_breaker": no_breaker,
                "retry_budget": {"ratio": "20%", "min_per_second": 0},
            },
            "secondary": {"url": secondary.url},
        },
        "routes": [route(retry={"attempts": 3, "backoff": "1ms"})],
    }
    proxy = await start_proxy(config, clock=FakeClock())
    for _ in range(50):
        async with client.get(proxy + "/x") as response:
            assert response.status == 200
    # Without the budget every 503 would be retried: about 75 calls.
    assert 50 < primary.hits <= 60
    failures, retries = (primary.hits + 1) // 2, primary.hits - 50
    assert secondary.hits == failures - retries  # every failure not retried moved on
