"""The upstream's Cache-Control, stale-while-revalidate and Cache-Status, end to end
against a real loopback upstream (fake clock)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from tests.conftest import FakeClock, route


class Origin:
    """Answers ``{"n": <count>}`` with the given headers until told to fail."""

    def __init__(self, **headers: str) -> None:
        self.headers = headers
        self.failing = False
        self.served = 0
        self.delay = 0.0

    async def __call__(self, request: web.Request) -> web.Response:
        if self.failing:
            return web.Response(status=503, text="down")
        await asyncio.sleep(self.delay)
        self.served += 1
        return web.json_response({"n": self.served}, headers=self.headers)


async def start(http_upstream, start_proxy, origin: Origin, clock: FakeClock, **cache: Any):
    upstream = await http_upstream(origin)
    config = {
        "upstreams": {"primary": {"url": upstream.url, "circuit_breaker": {"enabled": False}}},
        "routes": [route(upstreams=("primary",), cache={"stale_for": "1h", **cache})],
    }
    return await start_proxy(config, clock=clock)


async def get(client, url: str) -> tuple[int, Any, dict[str, str]]:
    async with client.get(url) as response:
        body = await response.json() if response.status == 200 else await response.text()
        return response.status, body, dict(response.headers)


async def test_stale_if_error_narrows_stale_for(http_upstream, start_proxy, client):
    clock, origin = FakeClock(), Origin(**{"Cache-Control": "max-age=0, stale-if-error=60"})
    proxy = await start(http_upstream, start_proxy, origin, clock)
    await get(client, proxy + "/x")
    origin.failing = True
    clock.now += 60
    status, body, headers = await get(client, proxy + "/x")
    assert (status, body, headers["X-Failover-Source"]) == (200, {"n": 1}, "cache")
    clock.now += 1
    status, _, headers = await get(client, proxy + "/x")
    assert (status, headers["X-Failover-Source"]) == (503, "primary")


async def test_a_route_may_override_the_upstream(http_upstream, start_proxy, client):
    clock, origin = FakeClock(), Origin(**{"Cache-Control": "max-age=0, must-revalidate"})
    proxy = await start(
        http_upstream, start_proxy, origin, clock, fresh_for="10s", honour_cache_control=False
    )
    await get(client, proxy + "/x")
    clock.now += 5
    _, body, headers = await get(client, proxy + "/x")
    assert (body, headers["Cache-Status"]) == ({"n": 1}, "failover-proxy; hit")
    origin.failing = True
    clock.now += 1000
    status, _, headers = await get(client, proxy + "/x")
    assert (status, headers["X-Failover-Source"]) == (200, "cache")


async def test_must_revalidate_is_never_served_past_its_lifetime(
    http_upstream, start_proxy, client
):
    clock, origin = FakeClock(), Origin(**{"Cache-Control": "max-age=10, must-revalidate"})
    proxy = await start(http_upstream, start_proxy, origin, clock, fresh_for="1h")
    await get(client, proxy + "/x")
    clock.now += 10
    assert (await get(client, proxy + "/x"))[2]["X-Failover-Source"] == "cache"  # fresh
    clock.now += 1
    _, body, headers = await get(client, proxy + "/x")  # max-age narrows fresh_for: asked
    assert (body, headers["X-Failover-Source"]) == ({"n": 2}, "primary")
    origin.failing = True
    clock.now += 11
    status, _, headers = await get(client, proxy + "/x")
    assert (status, headers["X-Failover-Source"]) == (503, "primary")


async def test_no_cache_is_neither_fresh_nor_stale(http_upstream, start_proxy, client):
    clock, origin = FakeClock(), Origin(**{"Cache-Control": "no-cache"})
    proxy = await start(http_upstream, start_proxy, origin, clock, fresh_for="1h")
    await get(client, proxy + "/x")
    _, body, _ = await get(client, proxy + "/x")
    assert body == {"n": 2}
    origin.failing = True
    assert (await get(client, proxy + "/x"))[0] == 503


async def test_age_counts_from_when_the_upstream_made_it(http_upstream, start_proxy, client):
    clock, origin = FakeClock(), Origin(Age="100")
    proxy = await start(http_upstream, start_proxy, origin, clock, fresh_for="1h")
    await get(client, proxy + "/x")
    clock.now += 5
    _, _, headers = await get(client, proxy + "/x")
    assert headers["Age"] == "105"


async def test_cache_status_says_what_was_forwarded_and_stored(http_upstream, start_proxy, client):
    clock, origin = FakeClock(), Origin()
    proxy = await start(http_upstream, start_proxy, origin, clock)
    _, _, headers = await get(client, proxy + "/x")
    assert headers["Cache-Status"] == "failover-proxy; fwd=uri-miss; fwd-status=200; stored"
    _, _, headers = await get(client, proxy + "/x")  # fresh_for 0: kept, but always asked
    assert headers["Cache-Status"] == "failover-proxy; fwd=stale; fwd-status=200; stored"
    origin.headers = {"Cache-Control": "no-store"}
    _, body, headers = await get(client, proxy + "/x")
    assert (body, headers["Cache-Status"]) == (
        {"n": 3},
        "failover-proxy; fwd=stale; fwd-status=200",
    )
    # an answer that may not be kept leaves the stored copy alone (issue 12): it is
    # still the last good one the next outage serves
    origin.failing = True
    status, body, headers = await get(client, proxy + "/x")
    assert (status, body, headers["X-Failover-Source"]) == (200, {"n": 2}, "cache")


async def test_stale_while_revalidate_serves_the_copy_and_refreshes_it_once(
    http_upstream, start_proxy, client
):
    clock, origin = FakeClock(), Origin()
    proxy = await start(
        http_upstream, start_proxy, origin, clock, fresh_for="10s", stale_while_revalidate="30s"
    )
    await get(client, proxy + "/x")
    clock.now += 15
    origin.delay = 0.2  # the refresh is still in flight while the next ones arrive
    answers = await asyncio.gather(*(get(client, proxy + "/x") for _ in range(20)))
    for status, body, headers in answers:
        assert (status, body, headers["X-Failover-Source"]) == (200, {"n": 1}, "cache")
        assert headers["Cache-Status"] == "failover-proxy; hit; stale; detail=revalidating"
        assert headers["Age"] == "15"
        assert headers["X-Failover-Health"] == "healthy"
    for _ in range(50):  # the one background refresh lands
        if origin.served == 2:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)
    assert origin.served == 2
    _, body, headers = await get(client, proxy + "/x")
    assert (body, headers["Cache-Status"]) == ({"n": 2}, "failover-proxy; hit")
    clock.now += 41  # past fresh_for + stale_while_revalidate: the client waits for upstream
    origin.delay = 0
    _, body, headers = await get(client, proxy + "/x")
    assert (body, headers["X-Failover-Source"]) == ({"n": 3}, "primary")


async def test_a_failed_background_refresh_keeps_the_copy(http_upstream, start_proxy, client):
    clock, origin = FakeClock(), Origin()
    proxy = await start(
        http_upstream, start_proxy, origin, clock, fresh_for="10s", stale_while_revalidate="30s"
    )
    await get(client, proxy + "/x")
    origin.failing = True
    clock.now += 15
    for _ in range(3):
        status, body, headers = await get(client, proxy + "/x")
        assert (status, body, headers["X-Failover-Source"]) == (200, {"n": 1}, "cache")
        await asyncio.sleep(0.05)
    clock.now += 100  # past the window: upstream fails, the stale copy is served
    _, body, headers = await get(client, proxy + "/x")
    assert (body, headers["Cache-Status"]) == ({"n": 1}, "failover-proxy; hit; stale")


async def test_a_copy_refreshed_behind_is_critical_when_no_upstream_can_refresh_it(
    http_upstream, start_proxy, client, refused_url
):
    clock, origin = FakeClock(), Origin()
    upstream = await http_upstream(origin)
    config = {
        "upstreams": {
            "primary": {"url": upstream.url, "circuit_breaker": {"consecutive_failures": 1}}
        },
        "routes": [
            route(
                upstreams=("primary",),
                cache={"stale_for": "1h", "fresh_for": "10s", "stale_while_revalidate": "1m"},
            )
        ],
    }
    proxy = await start_proxy(config, clock=clock)
    await get(client, proxy + "/x")
    origin.failing = True
    clock.now += 15
    _, _, headers = await get(client, proxy + "/x")  # served; the refresh behind fails
    assert headers["X-Failover-Health"] == "healthy"  # nothing known to be wrong yet
    await asyncio.sleep(0.1)  # the refresh got a 503: the breaker opened
    _, body, headers = await get(client, proxy + "/x")
    assert body == {"n": 1}
    assert headers["Cache-Status"] == "failover-proxy; hit; stale; detail=revalidating"
    assert headers["X-Failover-Health"] == "critical"


async def test_a_fresh_hit_is_degraded_while_the_first_upstream_is_skipped_never_critical(
    http_upstream, start_proxy, client
):
    """A fresh copy is an answer in hand: the primary's open breaker makes the route
    degraded, and every upstream skipped still does not make it critical."""
    clock = FakeClock()
    primary, secondary = Origin(), Origin()
    config = {
        "upstreams": {
            "primary": {
                "url": (await http_upstream(primary)).url,
                "circuit_breaker": {"consecutive_failures": 1, "open_for": "1h"},
            },
            "secondary": {
                "url": (await http_upstream(secondary)).url,
                "circuit_breaker": {"consecutive_failures": 1, "open_for": "1h"},
            },
        },
        "routes": [
            route(upstreams=("primary", "secondary"), cache={"stale_for": "1h", "fresh_for": "1h"})
        ],
    }
    proxy = await start_proxy(config, clock=clock)
    _, body, headers = await get(client, proxy + "/x")
    assert (body, headers["X-Failover-Health"]) == ({"n": 1}, "healthy")
    _, _, headers = await get(client, proxy + "/x")
    assert (headers["X-Failover-Source"], headers["X-Failover-Health"]) == ("cache", "healthy")

    primary.failing = True  # an uncached path opens the primary's breaker
    _, _, headers = await get(client, proxy + "/other")
    assert headers["X-Failover-Source"] == "secondary"
    _, body, headers = await get(client, proxy + "/x")
    assert (body, headers["X-Failover-Source"]) == ({"n": 1}, "cache")
    assert headers["X-Failover-Health"] == "degraded"

    secondary.failing = True  # now both breakers open
    status, _, _ = await get(client, proxy + "/third")
    assert status == 503
    _, body, headers = await get(client, proxy + "/x")
    assert (body, headers["X-Failover-Source"]) == ({"n": 1}, "cache")
    assert headers["X-Failover-Health"] == "degraded"
