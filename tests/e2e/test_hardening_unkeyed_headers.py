"""Unkeyed inputs do not reach a cached route's upstream (issue 12, item 3): headers that
frameworks read as the host, scheme, port, path or method, but that are not in the
cache key, would let one client choose what everyone is served from the cache."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from tests.conftest import FakeClock, raw_exchange, route

UNKEYED = {
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Scheme": "nothttps",
    "X-Forwarded-Proto": "nothttps",
    "X-Forwarded-Port": "1337",
    "X-Forwarded-Server": "evil.example",
    "Forwarded": "for=192.0.2.1;host=evil.example;proto=https",
    "X-Host": "evil.example",
    "X-Original-URL": "/admin",
    "X-Rewrite-URL": "/admin",
    "X-HTTP-Method-Override": "DELETE",
    "X-HTTP-Method": "DELETE",
    "X-Method-Override": "DELETE",
}


async def links(request: web.Request) -> web.Response:
    """An origin that builds absolute links from what a framework would trust."""
    scheme = request.headers.get("X-Forwarded-Scheme", "https")
    host = request.headers.get("X-Forwarded-Server", "api.example.com")
    port = request.headers.getall("X-Forwarded-Port", ["443"])[-1]  # the last line wins
    return web.Response(text=f"<script src='{scheme}://{host}:{port}/app.js'></script>")


async def start(http_upstream, start_proxy, cache: dict[str, Any] | None, **headers: Any):
    upstream = await http_upstream(links)
    extra = {"cache": {"stale_for": "1h", "fresh_for": "1h", **cache}} if cache is not None else {}
    config = {
        "upstreams": {"primary": {"url": upstream.url}},
        "routes": [route(upstreams=("primary",), **extra)],
        "headers": headers,
    }
    return upstream, await start_proxy(config, clock=FakeClock())


def _raw_get(headers: list[tuple[str, str]]) -> bytes:
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return (
        f"GET /page HTTP/1.1\r\nHost: api.example.com\r\n{lines}Connection: close\r\n\r\n".encode()
    )


@pytest.mark.parametrize("forwarded", [True, False], ids=["forwarded", "not-forwarded"])
async def test_a_cached_route_strips_unkeyed_inputs(forwarded, http_upstream, start_proxy):
    upstream, proxy = await start(http_upstream, start_proxy, {}, forwarded=forwarded)
    # exact bytes: names in any case, some repeated
    sent = [
        (name.upper() if i % 2 else name.lower(), value)
        for i, (name, value) in enumerate(UNKEYED.items())
    ]
    sent += [("X-Forwarded-Port", "1338"), ("X-Forwarded-For", "203.0.113.9")]
    answer = await raw_exchange(proxy, _raw_get(sent))
    assert answer.startswith(b"HTTP/1.1 200")
    got = upstream.requests[0]["headers"]
    reached = {name for name in UNKEYED if name in got}
    if forwarded:  # the proxy's own, from the client's Host
        assert reached == {"X-Forwarded-Host", "X-Forwarded-Proto"}
        assert got.getall("X-Forwarded-Host") == ["api.example.com"]
        assert got.getall("X-Forwarded-Proto") == ["http"]
        assert got["X-Forwarded-For"] == "203.0.113.9, 127.0.0.1"
    else:
        assert reached == set()
        assert got["X-Forwarded-For"] == "203.0.113.9"


async def test_one_client_cannot_poison_what_the_next_is_served(http_upstream, start_proxy, client):
    upstream, proxy = await start(http_upstream, start_proxy, {})
    async with client.get(proxy + "/page", headers=UNKEYED) as response:
        assert await response.text() == "<script src='https://api.example.com:443/app.js'></script>"
    async with client.get(proxy + "/page") as response:  # a victim, served from the cache
        assert response.headers["X-Failover-Source"] == "cache"
        assert "evil" not in await response.text()
    assert upstream.hits == 1


async def test_a_kept_header_is_forwarded_and_keyed(http_upstream, start_proxy, client):
    upstream, proxy = await start(
        http_upstream, start_proxy, {"keep_headers": ["X-Forwarded-Port"]}
    )
    bodies = []
    for port in ("443", "8443", "443", "8443"):
        async with client.get(proxy + "/page", headers={"X-Forwarded-Port": port}) as response:
            bodies.append((await response.text(), response.headers["X-Failover-Source"]))
    assert [port for port in (r["headers"]["X-Forwarded-Port"] for r in upstream.requests)] == [
        "443",
        "8443",
    ]
    assert bodies == [
        ("<script src='https://api.example.com:443/app.js'></script>", "primary"),
        ("<script src='https://api.example.com:8443/app.js'></script>", "primary"),
        ("<script src='https://api.example.com:443/app.js'></script>", "cache"),
        ("<script src='https://api.example.com:8443/app.js'></script>", "cache"),
    ]
    # the others are still stripped
    async with client.get(proxy + "/other", headers=UNKEYED) as response:
        assert response.status == 200
    assert "X-Forwarded-Scheme" not in upstream.requests[-1]["headers"]


async def test_a_kept_header_is_keyed_on_every_line(http_upstream, start_proxy, client):
    _, proxy = await start(http_upstream, start_proxy, {"keep_headers": ["X-Forwarded-Port"]})
    twice = _raw_get([("X-Forwarded-Port", "443"), ("X-Forwarded-Port", "1337")])
    assert b":1337/app.js" in await raw_exchange(proxy, twice)
    clean = {"Host": "api.example.com", "X-Forwarded-Port": "443"}
    async with client.get(proxy + "/page", headers=clean) as response:
        assert response.headers["X-Failover-Source"] == "primary"
        assert await response.text() == "<script src='https://api.example.com:443/app.js'></script>"


async def test_writes_on_a_cached_route_are_stripped_too(http_upstream, start_proxy, client):
    upstream, proxy = await start(http_upstream, start_proxy, {})
    async with client.post(proxy + "/page", headers=UNKEYED, data=b"x") as response:
        assert response.status == 200
    assert "X-HTTP-Method-Override" not in upstream.requests[0]["headers"]


async def test_an_uncached_route_forwards_them(http_upstream, start_proxy, client):
    upstream, proxy = await start(http_upstream, start_proxy, None)
    async with client.get(proxy + "/page", headers=UNKEYED) as response:
        assert response.status == 200
    got = upstream.requests[0]["headers"]
    for name, value in UNKEYED.items():
        if name not in ("X-Forwarded-Host", "X-Forwarded-Proto"):  # the proxy's own, as always
            assert got[name] == value
