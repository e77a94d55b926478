"""The last known good answer: what is kept, and when it is served (fake clock)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import FakeClock, route


class Switch:
    """An upstream that answers well until it is told to fail."""

    def __init__(self, **headers: str) -> None:
        self.failing = False
        self.headers = headers
        self.served = 0

    async def __call__(self, request: web.Request) -> web.Response:
        if self.failing:
            return web.Response(status=503, text="down")
        self.served += 1
        return web.json_response({"n": self.served}, headers=self.headers)


async def proxy_with_cache(http_upstream, start_proxy, clock, switch, **route_extra):
    upstream = await http_upstream(switch)
    config = {
        "upstreams": {"primary": {"url": upstream.url, "circuit_breaker": {"enabled": False}}},
        "routes": [route(upstreams=("primary",), cache={"stale_for": "1h"}, **route_extra)],
    }
    return await start_proxy(config, clock=clock)


async def test_the_last_good_answer_is_served_stale_when_every_upstream_fails(
    http_upstream, start_proxy, client
):
    clock, switch = FakeClock(), Switch()
    proxy = await proxy_with_cache(http_upstream, start_proxy, clock, switch)
    async with client.get(proxy + "/drivers?b=2&a=1") as response:
        assert await response.json() == {"n": 1}
    switch.failing = True
    clock.now += 600
    async with client.get(proxy + "/drivers?a=1&b=2") as response:  # same query, reordered
        assert response.status == 200
        assert await response.json() == {"n": 1}
        assert response.headers["X-Failover-Source"] == "cache"
        assert response.headers["X-Failover-Health"] == "critical"
        assert response.headers["Age"] == "600"
        assert response.headers["Cache-Status"] == "failover-proxy; hit; stale"
        assert "received-status=503" in response.headers["Proxy-Status"]
    clock.now += 3001  # past stale_for
    async with client.get(proxy + "/drivers?a=1&b=2") as response:
        assert response.status == 503
        assert response.headers["X-Failover-Source"] == "primary"  # its own error, passed through


@pytest.mark.parametrize(
    ("response_headers", "request_headers"),
    [
        ({"Cache-Control": "no-store"}, {}),
        ({"Cache-Control": "private, max-age=60"}, {}),
        ({"Set-Cookie": "session=abc"}, {}),
        ({"Vary": "*"}, {}),
        ({"Vary": "X-User"}, {}),
        ({}, {"Authorization": "Bearer alice"}),
        ({}, {"Cookie": "session=alice"}),
    ],
)
async def test_private_or_unkeyable_answers_are_never_served_to_anyone_else(
    response_headers, request_headers, http_upstream, start_proxy, client
):
    clock, switch = FakeClock(), Switch(**response_headers)
    proxy = await proxy_with_cache(http_upstream, start_proxy, clock, switch)
    async with client.get(proxy + "/me", headers=request_headers) as response:
        assert response.status == 200
    switch.failing = True
    async with client.get(proxy + "/me") as response:
        assert response.status == 503
        assert response.headers["X-Failover-Source"] != "cache"


async def test_a_5xx_never_replaces_a_good_entry(http_upstream, start_proxy, client):
    clock, switch = FakeClock(), Switch()
    proxy = await proxy_with_cache(http_upstream, start_proxy, clock, switch)
    async with client.get(proxy + "/x"):
        pass
    switch.failing = True
    for _ in range(3):
        async with client.get(proxy + "/x") as response:
            assert await response.json() == {"n": 1}


async def test_the_key_keeps_apart_what_the_route_varies_on(http_upstream, start_proxy, client):
    async def by_language(request: web.Request) -> web.Response:
        if failing["now"]:
            return web.Response(status=503)
        return web.Response(
            text=request.headers["Accept-Language"], headers={"Vary": "Accept-Language"}
        )

    failing = {"now": False}
    upstream = await http_upstream(by_language)
    config = {
        "upstreams": {"primary": {"url": upstream.url}},
        "routes": [
            route(
                upstreams=("primary",),
                cache={"stale_for": "1h", "vary_headers": ["Accept-Language"]},
            )
        ],
    }
    proxy = await start_proxy(config, clock=FakeClock())
    for language in ("de", "fr"):
        async with client.get(proxy + "/greeting", headers={"Accept-Language": language}):
            pass
    failing["now"] = True
    for language in ("de", "fr"):
        async with client.get(proxy + "/greeting", headers={"Accept-Language": language}) as r:
            assert await r.text() == language
            assert r.headers["X-Failover-Source"] == "cache"
    await asyncio.sleep(0)


async def test_fresh_for_serves_without_asking_an_upstream(http_upstream, start_proxy, client):
    clock, switch = FakeClock(), Switch()
    upstream = await http_upstream(switch)
    config = {
        "upstreams": {"primary": {"url": upstream.url}},
        "routes": [route(upstreams=("primary",), cache={"stale_for": "1h", "fresh_for": "10s"})],
    }
    proxy = await start_proxy(config, clock=clock)
    async with client.get(proxy + "/x") as response:
        assert response.headers["X-Failover-Source"] == "primary"
    clock.now += 5
    for _ in range(3):
        async with client.get(proxy + "/x") as response:
            assert await response.json() == {"n": 1}
            assert response.headers["X-Failover-Source"] == "cache"
            assert response.headers["X-Failover-Health"] == "healthy"
            assert response.headers["Cache-Status"] == "failover-proxy; hit"
            assert response.headers["Age"] == "5"
    assert upstream.hits == 1
    clock.now += 6
    async with client.get(proxy + "/x") as response:
        assert await response.json() == {"n": 2}
    assert upstream.hits == 2


@pytest.mark.parametrize("expired", [False, True], ids=["missing", "expired"])
async def test_concurrent_misses_for_one_key_send_one_upstream_request(
    expired, http_upstream, start_proxy, client
):
    calls = 0
    delay = 0.0

    async def slow(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        await asyncio.sleep(delay)
        return web.json_response({"call": calls})

    clock = FakeClock()
    upstream = await http_upstream(slow)
    config = {
        "upstreams": {"primary": {"url": upstream.url, "max_connections": 300}},
        "routes": [route(upstreams=("primary",), cache={"stale_for": "1h", "fresh_for": "10s"})],
    }
    proxy = await start_proxy(config, clock=clock)
    if expired:  # a stored answer, past fresh_for: every request must go upstream
        async with client.get(proxy + "/hot"):
            pass
        clock.now += 11
    before = calls
    delay = 1.0  # long enough for all 200 to arrive while the one call is in flight

    async def one(session: aiohttp.ClientSession) -> tuple[int, dict, str]:
        async with session.get(proxy + "/hot") as response:
            return response.status, await response.json(), response.headers["X-Failover-Source"]

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        results = await asyncio.gather(*(one(session) for _ in range(200)))
    assert calls == before + 1
    assert {status for status, _, _ in results} == {200}
    assert {body["call"] for _, body, _ in results} == {calls}  # the new answer, for all
    assert sorted({source for _, _, source in results}) == ["cache", "primary"]


async def test_two_routes_on_one_url_keep_their_own_answers(http_upstream, start_proxy, client):
    async def v1(request: web.Request) -> web.Response:
        return web.json_response({"version": 1})

    async def v2(request: web.Request) -> web.Response:
        return web.json_response({"version": 2})

    one, two = await http_upstream(v1), await http_upstream(v2)
    cache = {"stale_for": "1h", "fresh_for": "1h"}
    config = {
        "upstreams": {"one": {"url": one.url}, "two": {"url": two.url}},
        "routes": [
            route("v2", ("two",), match={"headers": {"Accept-Version": "2"}}, cache=cache),
            route("v1", ("one",), cache=cache),
        ],
    }
    proxy = await start_proxy(config)
    async with client.get(proxy + "/api", headers={"Accept-Version": "2"}) as response:
        assert await response.json() == {"version": 2}
    async with client.get(proxy + "/api") as response:  # same URL, the other route
        assert await response.json() == {"version": 1}
        assert response.headers["X-Failover-Source"] == "one"


@pytest.mark.parametrize(("encoding", "kept"), [("gzip", False), ("identity", True), (None, True)])
async def test_vary_accept_encoding_is_kept_only_for_bodies_any_client_can_read(
    encoding, kept, http_upstream, start_proxy, client
):
    headers = {"Vary": "Accept-Encoding"}
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    clock, switch = FakeClock(), Switch(**headers)
    proxy = await proxy_with_cache(http_upstream, start_proxy, clock, switch)
    async with client.get(proxy + "/x", headers={"Accept-Encoding": "gzip"}):
        pass
    switch.failing = True
    async with client.get(proxy + "/x", headers={"Accept-Encoding": "identity"}) as response:
        assert (response.headers["X-Failover-Source"] == "cache") is kept
