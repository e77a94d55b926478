"""End to end: which upstreams are tried at all. A sick upstream behind an open circuit,
a cooldown or a concurrency limit gets no connection, and the route answers from the
next one at once. The breaker's clock is faked; the network is real."""

from __future__ import annotations

import asyncio

from aiohttp import web

from tests.conftest import FakeClock, route

FAST = {"connect": "300ms", "read": "2s"}


def pair(primary: str, secondary: str, **primary_extra: object) -> dict[str, object]:
    return {
        "primary": {"url": primary, "timeouts": FAST, **primary_extra},
        "secondary": {"url": secondary, "timeouts": FAST},
    }


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="from secondary")


async def test_open_breaker_skips_the_sick_upstream_without_a_connection(
    http_upstream, start_proxy, client
):
    health = {"status": 500}
    primary = await http_upstream(lambda r: asyncio.sleep(0, web.Response(status=health["status"])))
    secondary = await http_upstream(ok)
    breaker = {"consecutive_failures": 3, "open_for": "30s", "half_open_probes": 1}
    clock = FakeClock()
    config = {
        "upstreams": pair(primary.url, secondary.url, circuit_breaker=breaker),
        "routes": [route()],
    }
    proxy = await start_proxy(config, clock=clock)
    for _ in range(3):
        async with client.get(proxy + "/x") as response:
            assert response.headers["X-Failover-Source"] == "secondary"
    assert primary.hits == 3
    for _ in range(5):
        async with client.get(proxy + "/x") as response:
            assert await response.text() == "from secondary"
            assert 'details="breaker_open"' in response.headers["Proxy-Status"]
            assert "error=destination_unavailable" in response.headers["Proxy-Status"]
    assert primary.hits == 3

    health["status"] = 200
    clock.now += 33.1  # open_for 30s plus at most 10% jitter
    async with client.get(proxy + "/x") as response:
        assert response.headers["X-Failover-Source"] == "primary"  # the half-open probe
        assert response.headers["X-Failover-Health"] == "healthy"
    async with client.get(proxy + "/x") as response:
        assert response.headers["X-Failover-Source"] == "primary"  # closed again
    assert primary.hits == 5


async def test_4xx_answers_do_not_trip_the_breaker(http_upstream, start_proxy, client):
    primary = await http_upstream(lambda r: asyncio.sleep(0, web.Response(status=404)))
    secondary = await http_upstream(ok)
    breaker = {"consecutive_failures": 2}
    config = {
        "upstreams": pair(primary.url, secondary.url, circuit_breaker=breaker),
        "routes": [route()],
    }
    proxy = await start_proxy(config, clock=FakeClock())
    for _ in range(6):
        async with client.get(proxy + "/missing") as response:
            assert response.status == 404
            assert response.headers["X-Failover-Source"] == "primary"
    assert primary.hits == 6


async def test_retry_after_cools_the_upstream_down_without_tripping_it(
    http_upstream, start_proxy, client
):
    answers = {"status": 503}

    async def busy(request: web.Request) -> web.Response:
        return web.Response(status=answers["status"], headers={"Retry-After": "20"})

    primary = await http_upstream(busy)
    secondary = await http_upstream(ok)
    clock = FakeClock()
    breaker = {"consecutive_failures": 1}
    config = {
        "upstreams": pair(primary.url, secondary.url, circuit_breaker=breaker),
        "routes": [route()],
    }
    proxy = await start_proxy(config, clock=clock)
    async with client.get(proxy + "/x") as response:
        assert response.headers["X-Failover-Source"] == "secondary"
    async with client.get(proxy + "/x") as response:
        assert 'details="cooling_down"' in response.headers["Proxy-Status"]
    assert primary.hits == 1
    answers["status"] = 200
    clock.now += 21
    async with client.get(proxy + "/x") as response:
        assert response.headers["X-Failover-Source"] == "primary"  # not tripped: closed
    assert primary.hits == 2


async def test_a_cooldown_is_capped_by_max_cooldown(http_upstream, start_proxy, client):
    primary = await http_upstream(
        lambda r: asyncio.sleep(0, web.Response(status=429, headers={"Retry-After": "86400"}))
    )
    secondary = await http_upstream(ok)
    clock = FakeClock()
    config = {
        "upstreams": pair(primary.url, secondary.url, max_cooldown="10s"),
        "routes": [route()],
    }
    proxy = await start_proxy(config, clock=clock)
    async with client.get(proxy + "/x"):
        pass
    clock.now += 11
    async with client.get(proxy + "/x"):
        pass
    assert primary.hits == 2


async def test_concurrency_limit_sends_the_overflow_to_the_next_upstream(
    http_upstream, start_proxy, client
):
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="from primary")

    primary = await http_upstream(slow)
    secondary = await http_upstream(ok)
    config = {"upstreams": pair(primary.url, secondary.url, max_concurrent=1), "routes": [route()]}
    proxy = await start_proxy(config, clock=FakeClock())
    first = asyncio.create_task(client.get(proxy + "/a"))
    while primary.hits == 0:
        await asyncio.sleep(0.01)
    async with client.get(proxy + "/b") as response:
        assert await response.text() == "from secondary"
        assert 'details="overloaded"' in response.headers["Proxy-Status"]
        assert "error=connection_limit_reached" in response.headers["Proxy-Status"]
    release.set()
    response = await first
    assert await response.text() == "from primary"
    assert primary.hits == 1


async def test_an_upstream_that_dies_mid_stream_counts_against_its_breaker(
    raw_upstream, start_proxy, client
):
    import aiohttp
    import pytest

    from tests.conftest import read_request_head

    async def big_then_reset(reader, writer):
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2097152\r\n\r\n" + b"y" * 524288)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()

    primary = await raw_upstream(big_then_reset)
    config = {
        "upstreams": {
            "primary": {"url": primary.url, "circuit_breaker": {"consecutive_failures": 1}}
        },
        "routes": [route(upstreams=("primary",))],
    }
    proxy = await start_proxy(config, clock=FakeClock())
    async with client.get(proxy + "/big") as response:
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    async with client.get(proxy + "/big") as response:
        assert response.status == 503
        assert 'details="breaker_open"' in response.headers["Proxy-Status"]
    assert primary.connections == 1
