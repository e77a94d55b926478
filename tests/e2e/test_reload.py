"""Hot reload, decided and applied: what carries over, what is refused, what needs a
restart (the plan as a pure function, and the running proxy through its answers)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from proxy.app import ProxyApp
from proxy.config.schema import Config
from proxy.ops.admin import TOKEN_ENV
from tests.conftest import LOOPBACK, FakeClock, route

TOKEN = "reload-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# -- the running proxy -------------------------------------------------------------


@pytest.fixture
async def running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., Awaitable[tuple[ProxyApp, Path]]]]:
    apps: list[ProxyApp] = []
    monkeypatch.setenv(TOKEN_ENV, TOKEN)

    async def start(config: dict[str, Any], clock: FakeClock | None = None):
        config = {
            "listen": {"host": LOOPBACK, "port": 0},
            "admin": {"host": LOOPBACK, "port": 0},
            "reload": {"poll_interval": 0},  # these tests reload through the admin API
            **config,
        }
        path = tmp_path / "config.yaml"
        path.write_text(json.dumps(config))
        extra = {"clock": clock, "wall_clock": clock} if clock else {}
        app = ProxyApp(Config.model_validate(config), tmp_path, config_file=path, **extra)
        await app.start()
        apps.append(app)
        return app, path

    yield start
    for app in apps:
        await app.stop()


async def named(http_upstream, name: str, state: dict[str, bool] | None = None):
    async def answer(request: web.Request) -> web.Response:
        if state is not None and state.get("down"):
            return web.Response(status=503)
        return web.json_response({"from": name})

    return await http_upstream(answer)


async def reload(client, app: ProxyApp, path: Path, config: dict[str, Any]) -> dict[str, Any]:
    config = {
        "listen": {"host": LOOPBACK, "port": 0},
        "admin": {"host": LOOPBACK, "port": 0},
        "reload": {"poll_interval": 0},
        **config,
    }
    path.write_text(json.dumps(config))
    return await admin_reload(client, app)


async def admin_reload(client, app: ProxyApp) -> dict[str, Any]:
    url = f"http://{LOOPBACK}:{app.admin_port}/admin/reload"
    async with client.post(url, headers=AUTH) as response:
        return {"status": response.status, **await response.json()}


async def health(client, app: ProxyApp) -> dict[str, Any]:
    async with client.get(f"http://{LOOPBACK}:{app.port}/_failover/health") as response:
        return await response.json()


async def served_by(client, app: ProxyApp, path: str = "/x") -> str:
    async with client.get(f"http://{LOOPBACK}:{app.port}{path}") as response:
        return response.headers["X-Failover-Source"]


async def test_an_invalid_file_is_refused_and_the_old_config_keeps_serving(
    running, http_upstream, client, caplog
):
    a = await named(http_upstream, "a")
    config = {"upstreams": {"a": {"url": a.url}}, "routes": [route("r", ("a",))]}
    app, path = await running(config)
    path.write_text("routes:\n  - name: r\n    upstreams: [nowhere]\n")
    with caplog.at_level(logging.ERROR, logger="failover_proxy"):
        result = await admin_reload(client, app)
    assert result["status"] == 400
    assert result["message"].endswith("config.yaml:1: upstreams: required key is missing")
    assert "config reload refused (admin API)" in caplog.text
    assert await served_by(client, app) == "a"
    body = await health(client, app)
    assert body["config"]["last_reload_error"] == result["message"]
    assert body["config"]["reloads"] == {"failure": 1}
    assert any("the last config reload failed" in r for r in body["recommendations"])
    for bad in ("a: [unclosed\n", "x: &a [1]\ny: *a\n", "#" * (1024 * 1024 + 1)):
        path.write_text(bad)
        assert (await admin_reload(client, app))["status"] == 400
    assert await served_by(client, app) == "a"
    assert (await reload(client, app, path, config))["status"] == 200  # a good file again
    body = await health(client, app)
    assert body["config"]["last_reload_error"] is None
    assert body["config"]["reloads"] == {"failure": 4, "success": 1}


async def test_a_missing_body_file_is_refused(running, http_upstream, client, refused_url):
    config = {"upstreams": {"a": {"url": refused_url}}, "routes": [route("r", ("a",))]}
    app, path = await running(config)
    bad = dict(config, routes=[route("r", ("a",), default={"body_file": "missing.json"})])
    result = await reload(client, app, path, bad)
    assert result["status"] == 400
    assert "missing.json" in result["message"]


async def test_a_new_listen_port_is_reported_not_half_applied(running, http_upstream, client):
    a = await named(http_upstream, "a")
    config = {"upstreams": {"a": {"url": a.url}}, "routes": [route("r", ("a",))]}
    app, path = await running(config)
    port = app.port
    changed = dict(config, routes=[route("r", ("a",), deadline="3s")])
    admin = {"host": LOOPBACK, "port": 0}
    path.write_text(
        json.dumps({**changed, "admin": admin, "listen": {"host": LOOPBACK, "port": 1}})
    )
    result = await admin_reload(client, app)
    assert result["status"] == 200
    assert result["needs_restart"] == [f"listen (running on {LOOPBACK}:0)"]
    assert app.port == port
    assert await served_by(client, app) == "a"  # still on the old listener
    body = await health(client, app)
    assert any("that takes a restart" in r for r in body["recommendations"])


async def test_cache_entries_carry_over_unless_their_key_rules_change(
    running, http_upstream, client
):
    state = {"down": False}
    a = await named(http_upstream, "a", state)
    upstream = {"url": a.url, "circuit_breaker": {"enabled": False}}
    config = {
        "upstreams": {"a": upstream},
        "routes": [route("r", ("a",), cache={"stale_for": "1h"})],
    }
    app, path = await running(config)
    await served_by(client, app)  # stored
    state["down"] = True
    longer = dict(config, routes=[route("r", ("a",), cache={"stale_for": "2h"})])
    assert (await reload(client, app, path, longer))["status"] == 200
    assert await served_by(client, app) == "cache"  # same key rules: still there
    rekeyed = dict(
        config, routes=[route("r", ("a",), cache={"stale_for": "2h", "ignore_params": ["t"]})]
    )
    assert (await reload(client, app, path, rekeyed))["status"] == 200
    assert await served_by(client, app) == "a"  # gone: the 503 passes through


async def test_pins_drills_and_reorders_after_a_reload(running, http_upstream, client):
    a, b = await named(http_upstream, "a"), await named(http_upstream, "b")
    config = {
        "upstreams": {"a": {"url": a.url}, "b": {"url": b.url}},
        "routes": [route("r", ("a", "b"))],
    }
    app, path = await running(config)
    admin = f"http://{LOOPBACK}:{app.admin_port}"
    async with client.put(
        admin + "/admin/upstreams/a/circuit", headers=AUTH, json={"state": "open"}
    ):
        pass
    async with client.put(
        admin + "/admin/routes/r/upstreams", headers=AUTH, json={"order": ["b", "a"]}
    ):
        pass
    assert (await reload(client, app, path, dict(config, shutdown_grace="5s")))["status"] == 200
    assert await served_by(client, app) == "b"  # a is still pinned open: its guard carried over
    async with client.put(
        admin + "/admin/upstreams/a/circuit", headers=AUTH, json={"state": "automatic"}
    ):
        pass
    assert await served_by(client, app) == "a"  # the reorder lasted until the reload


async def test_a_ca_file_that_is_not_pem_is_refused_not_a_500(
    running, http_upstream, client, tmp_path
):
    a = await named(http_upstream, "a")
    config = {"upstreams": {"a": {"url": a.url}}, "routes": [route("r", ("a",))]}
    app, path = await running(config)
    (tmp_path / "ca.pem").write_text("not a certificate")
    bad = dict(
        config,
        upstreams={
            "a": {"url": a.url},
            "b": {"url": "https://127.0.0.1:1", "tls": {"ca_file": "ca.pem"}},
        },
    )
    result = await reload(client, app, path, bad)
    assert result["status"] == 400
    assert "upstreams.b.tls.ca_file: not a PEM CA bundle" in result["message"]
    assert await served_by(client, app) == "a"
    assert (await health(client, app))["config"]["reloads"] == {"failure": 1}


async def test_new_cache_bounds_apply_at_once(running, http_upstream, client):
    a = await named(http_upstream, "a")
    config = {
        "upstreams": {"a": {"url": a.url}},
        "routes": [route("r", ("a",), cache={"stale_for": "1h"})],
    }
    app, path = await running(config)
    for n in range(5):
        await served_by(client, app, f"/x{n}")
    assert len(app.handler.store) == 5
    smaller = dict(config, cache={"max_entries": 2})
    result = await reload(client, app, path, smaller)
    assert (result["status"], result.get("needs_restart")) == (200, None)
    assert len(app.handler.store) == 2  # the two most recently used stay
