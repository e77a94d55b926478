"""Active health checks open a circuit with no user traffic, and close it again."""

from __future__ import annotations

import asyncio

from aiohttp import web

from tests.conftest import route


async def until(predicate, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.02)


async def test_failing_checks_open_the_circuit_before_users_pay_and_passing_ones_close_it(
    http_upstream, start_proxy, client
):
    health = {"status": 503}

    async def app(request: web.Request) -> web.Response:
        if request.path == "/healthz":
            return web.Response(status=health["status"])
        return web.Response(text="primary")

    primary = await http_upstream(app)
    secondary = await http_upstream(lambda r: asyncio.sleep(0, web.Response(text="secondary")))
    check = {
        "path": "/healthz",
        "interval": "40ms",
        "timeout": "200ms",
        "unhealthy_threshold": 2,
        "healthy_threshold": 2,
    }
    config = {
        "upstreams": {
            "primary": {"url": primary.url, "health_check": check},
            "secondary": {"url": secondary.url},
        },
        "routes": [route()],
    }
    proxy = await start_proxy(config)

    def user_hits() -> int:
        return sum(r["path_qs"] != "/healthz" for r in primary.requests)

    async def checks_seen(n: int) -> bool:
        return primary.hits - user_hits() >= n

    await until(lambda: checks_seen(3))
    async with client.get(proxy + "/x") as response:
        assert await response.text() == "secondary"
        assert 'details="breaker_open"' in response.headers["Proxy-Status"]
    assert user_hits() == 0

    health["status"] = 200

    async def served_by_primary() -> bool:
        async with client.get(proxy + "/x") as response:
            return await response.text() == "primary"

    await until(served_by_primary)
    assert user_hits() == 1


async def test_checks_stop_when_the_proxy_stops(http_upstream, tmp_path):
    from proxy.app import ProxyApp
    from proxy.config.schema import Config

    upstream = await http_upstream(lambda r: asyncio.sleep(0, web.Response()))
    config = Config.model_validate(
        {
            "listen": {"host": "127.0.0.1", "port": 0},
            "upstreams": {"p": {"url": upstream.url, "health_check": {"interval": "20ms"}}},
            "routes": [route(upstreams=("p",))],
        }
    )
    app = ProxyApp(config, tmp_path)
    await app.start()
    await until(lambda: asyncio.sleep(0, upstream.hits >= 2))
    await app.stop()
    seen = upstream.hits
    await asyncio.sleep(0.15)
    assert upstream.hits == seen
