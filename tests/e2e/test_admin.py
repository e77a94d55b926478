"""The admin API on its own listener: the token, and every action an operator takes,
seen through the main listener's answers (real loopback upstreams, real sockets)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from aiohttp import web

from proxy.app import ProxyApp
from proxy.ops.admin import TOKEN_ENV
from tests.conftest import ADMIN_AUTH, ADMIN_TOKEN, LOOPBACK, FakeClock, route

TOKEN, AUTH = ADMIN_TOKEN, ADMIN_AUTH


def urls(app: ProxyApp) -> tuple[str, str]:
    return f"http://{LOOPBACK}:{app.port}", f"http://{LOOPBACK}:{app.admin_port}"


async def named(http_upstream, name: str):
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"from": name})

    return await http_upstream(answer)


async def two_upstreams(http_upstream, **route_extra: Any) -> dict[str, Any]:
    primary, secondary = (
        await named(http_upstream, "primary"),
        await named(http_upstream, "secondary"),
    )
    return {
        "upstreams": {"primary": {"url": primary.url}, "secondary": {"url": secondary.url}},
        "routes": [route(**route_extra)],
    }


async def source(client, base: str, path: str = "/x") -> str:
    async with client.get(base + path) as response:
        return response.headers["X-Failover-Source"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}],
    ids=["none", "wrong", "no-scheme", "basic"],
)
async def test_every_call_needs_the_token(headers, start_app, http_upstream, client):
    app = await start_app(await two_upstreams(http_upstream))
    _, admin = urls(app)
    for method, path in [
        ("GET", "/health"),
        ("GET", "/metrics"),
        ("GET", "/admin/config"),
        ("PUT", "/admin/upstreams/primary/circuit"),
        ("POST", "/admin/cache/purge"),
        ("POST", "/admin/drills"),
    ]:
        async with client.request(method, admin + path, headers=headers, json={}) as response:
            assert response.status == 401, path
            assert response.headers["WWW-Authenticate"] == "Bearer"
    async with client.get(admin + "/health", headers=AUTH) as response:
        assert response.status == 200


async def test_without_a_token_the_admin_listener_does_not_start(
    start_app, http_upstream, monkeypatch, caplog
):
    monkeypatch.delenv(TOKEN_ENV)
    with caplog.at_level(logging.WARNING, logger="failover_proxy"):
        app = await start_app(await two_upstreams(http_upstream))
    assert app.admin_port is None
    assert "the admin listener is off" in caplog.text


async def test_the_token_may_come_from_a_file(
    start_app, http_upstream, client, monkeypatch, tmp_path
):
    monkeypatch.delenv(TOKEN_ENV)
    (tmp_path / "token").write_text("from-a-file\n")
    config = await two_upstreams(http_upstream)
    config["admin"] = {"host": LOOPBACK, "port": 0, "token_file": "token"}
    app = await start_app(config)
    _, admin = urls(app)
    async with client.get(admin + "/health", headers={"Authorization": "Bearer from-a-file"}) as r:
        assert r.status == 200


async def test_admin_calls_are_not_reachable_through_the_main_listener(
    start_app, http_upstream, client
):
    config = await two_upstreams(http_upstream)
    app = await start_app(config)
    main, _ = urls(app)
    async with client.put(
        main + "/admin/upstreams/primary/circuit", headers=AUTH, json={"state": "open"}
    ):
        pass
    assert await source(client, main) == "primary"  # proxied as any request, nothing forced


async def test_force_a_circuit_open_closed_and_back_to_automatic(
    start_app, http_upstream, client, caplog
):
    app = await start_app(await two_upstreams(http_upstream))
    main, admin = urls(app)
    circuit = admin + "/admin/upstreams/primary/circuit"
    with caplog.at_level(logging.WARNING, logger="failover_proxy"):
        async with client.put(circuit, headers=AUTH, json={"state": "open"}) as response:
            assert response.status == 200
    assert "circuit of primary set to open (was automatic)" in caplog.text
    assert await source(client, main) == "secondary"
    async with client.get(admin + "/health", headers=AUTH) as response:
        health = await response.json()
    assert health["upstreams"]["primary"]["circuit"] == {
        "state": "open",
        "forced": True,
        "since": health["upstreams"]["primary"]["circuit"]["since"],
    }
    assert any("forced open by an operator" in r for r in health["recommendations"])
    async with client.put(circuit, headers=AUTH, json={"state": "automatic"}):
        pass
    assert await source(client, main) == "primary"
    async with client.put(circuit, headers=AUTH, json={"state": "sideways"}) as response:
        assert response.status == 400
    async with client.put(
        admin + "/admin/upstreams/nobody/circuit", headers=AUTH, json={"state": "open"}
    ) as response:
        assert response.status == 404


async def test_forced_closed_calls_an_upstream_whose_breaker_is_open(
    start_app, http_upstream, client, refused_url
):
    secondary = await named(http_upstream, "secondary")
    config = {
        "upstreams": {
            "primary": {"url": refused_url, "circuit_breaker": {"consecutive_failures": 1}},
            "secondary": {"url": secondary.url},
        },
        "routes": [route()],
    }
    app = await start_app(config)
    main, admin = urls(app)
    await source(client, main)  # trips primary's breaker
    async with client.get(main + "/x") as response:
        assert "breaker_open" in response.headers["Proxy-Status"]  # skipped, not tried
    async with client.put(
        admin + "/admin/upstreams/primary/circuit", headers=AUTH, json={"state": "closed"}
    ):
        pass
    async with client.get(main + "/x") as response:  # tried again, and refused
        assert "error=connection_refused; next-hop=primary" in response.headers["Proxy-Status"]


async def test_reorder_a_routes_upstreams_until_the_next_reload(start_app, http_upstream, client):
    app = await start_app(await two_upstreams(http_upstream))
    main, admin = urls(app)
    order = admin + "/admin/routes/r/upstreams"
    async with client.put(order, headers=AUTH, json={"order": ["secondary", "primary"]}) as r:
        assert await r.json() == {
            "route": "r",
            "upstreams": ["secondary", "primary"],
            "was": ["primary", "secondary"],
        }
    assert await source(client, main) == "secondary"
    async with client.get(admin + "/admin/config", headers=AUTH) as response:
        assert (await response.json())["routes"][0]["upstreams"] == ["secondary", "primary"]
    for bad in (["secondary"], ["secondary", "nobody"], "primary"):
        async with client.put(order, headers=AUTH, json={"order": bad}) as response:
            assert response.status == 400
    assert await source(client, main) == "secondary"


async def test_purge_the_cache_by_key_route_and_all(start_app, http_upstream, client):
    up = {"failing": False}

    async def origin(request: web.Request) -> web.Response:
        if up["failing"]:
            return web.Response(status=503)
        return web.json_response({"path": request.path_qs})

    upstream = await http_upstream(origin)
    config = {
        "upstreams": {"primary": {"url": upstream.url, "circuit_breaker": {"enabled": False}}},
        "routes": [
            route("a", ("primary",), match={"path_prefix": "/a"}, cache={"stale_for": "1h"}),
            route("b", ("primary",), match={"path_prefix": "/b"}, cache={"stale_for": "1h"}),
        ],
    }
    app = await start_app(config)
    main, admin = urls(app)
    for path in ("/a/1?x=1&y=2", "/a/2", "/b/1"):
        await source(client, main, path)
    up["failing"] = True
    purge = admin + "/admin/cache/purge"
    host = f"{LOOPBACK}:{app.port}"
    key = {"key": {"target": "/a/1?y=2&x=1", "host": host}}  # the same key, query reordered
    async with client.post(purge, headers=AUTH, json=key) as response:
        assert await response.json() == {"purged": 1}
    assert [await source(client, main, p) for p in ("/a/1?x=1&y=2", "/a/2", "/b/1")] == [
        "primary",  # its 503, passed through: no stale copy left
        "cache",
        "cache",
    ]
    async with client.post(purge, headers=AUTH, json={"route": "a"}) as response:
        assert await response.json() == {"purged": 1}
    assert await source(client, main, "/a/2") == "primary"
    async with client.post(purge, headers=AUTH) as response:
        assert await response.json() == {"purged": 1}
    assert await source(client, main, "/b/1") == "primary"
    async with client.post(purge, headers=AUTH, json={"key": {"target": "/../x"}}) as response:
        assert response.status == 400


async def test_a_drill_fails_a_healthy_upstream_over_then_ends_by_itself(
    start_app, http_upstream, client
):
    clock = FakeClock()
    config = await two_upstreams(http_upstream)
    config["upstreams"]["primary"]["circuit_breaker"] = {"enabled": False}
    app = await start_app(config, clock=clock)
    main, admin = urls(app)
    drill = {
        "upstream": "primary",
        "kind": "error",
        "status": 503,
        "percent": 100,
        "duration": "2m",
    }
    async with client.post(admin + "/admin/drills", headers=AUTH, json=drill) as response:
        assert response.status == 201
    for _ in range(3):
        async with client.get(main + "/x") as response:
            assert response.headers["X-Failover-Source"] == "secondary"
            assert response.headers["X-Failover-Health"] == "degraded"
            assert "received-status=503" in response.headers["Proxy-Status"]
    async with client.get(admin + "/health", headers=AUTH) as response:
        health = await response.json()
    assert health["upstreams"]["primary"]["drill"]["what"] == "100% of calls answered 503"
    assert any(
        "failover drill is running on upstream primary" in r for r in health["recommendations"]
    )
    clock.now += 121
    assert await source(client, main) == "primary"
    async with client.get(admin + "/admin/drills", headers=AUTH) as response:
        assert await response.json() == []


@pytest.mark.parametrize(
    ("kind", "extra", "failure"),
    [("abort", {}, "connection_reset"), ("error", {"status": 429}, "http_429")],
)
async def test_drill_kinds(kind, extra, failure, start_app, http_upstream, client):
    config = await two_upstreams(http_upstream)
    app = await start_app(config)
    main, admin = urls(app)
    body = {"upstream": "primary", "kind": kind, "duration": "1m", **extra}
    async with client.post(admin + "/admin/drills", headers=AUTH, json=body) as response:
        assert response.status == 201
    assert await source(client, main) == "secondary"
    async with client.delete(admin + "/admin/drills/primary", headers=AUTH) as response:
        assert response.status == 200
    assert await source(client, main) == "primary"


async def test_a_latency_drill_delays_calls(start_app, http_upstream, client):
    config = await two_upstreams(http_upstream)
    app = await start_app(config)
    main, admin = urls(app)
    body = {"upstream": "primary", "kind": "latency", "latency": "300ms", "duration": "1m"}
    async with client.post(admin + "/admin/drills", headers=AUTH, json=body):
        pass
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await source(client, main) == "primary"
    assert loop.time() - started >= 0.3


@pytest.mark.parametrize(
    "body",
    [
        {"upstream": "nobody", "kind": "abort"},
        {"upstream": "primary", "kind": "fire"},
        {"upstream": "primary", "kind": "abort", "percent": 0},
        {"upstream": "primary", "kind": "error", "status": 404},
        {"upstream": "primary", "kind": "abort", "duration": "soon"},
    ],
)
async def test_a_bad_drill_is_refused(body, start_app, http_upstream, client):
    app = await start_app(await two_upstreams(http_upstream))
    _, admin = urls(app)
    async with client.post(admin + "/admin/drills", headers=AUTH, json=body) as response:
        assert response.status == 400
        assert "error" in await response.json()


async def test_the_effective_config_has_no_secrets(start_app, http_upstream, client):
    app = await start_app(await two_upstreams(http_upstream))
    _, admin = urls(app)
    async with client.get(admin + "/admin/config", headers=AUTH) as response:
        text = await response.text()
    assert TOKEN not in text
    assert json.loads(text)["routes"][0]["name"] == "r"


async def test_a_token_that_is_not_utf8_is_a_401(start_app, http_upstream):
    from tests.conftest import raw_exchange

    app = await start_app(await two_upstreams(http_upstream))
    _, admin = urls(app)
    answer = await raw_exchange(
        admin,
        b"GET /health HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer \xff\xfe\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 401")
