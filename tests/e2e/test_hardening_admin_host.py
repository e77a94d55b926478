"""Issue 12 item 7: the admin listener answers only to a ``Host`` that names it, before
the token is looked at, so a browser tricked by DNS rebinding (it sends the attacker's
name as ``Host``) cannot reach the API or the status page. Real requests on loopback:
aiohttp with an explicit ``Host``, and a raw socket for what a client library won't send.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web

from proxy.app import ProxyApp
from proxy.config.loader import load_file
from proxy.ops.admin import TOKEN_ENV
from tests.conftest import ADMIN_AUTH, ADMIN_TOKEN, LOOPBACK, route


async def _config(http_upstream, **admin: Any) -> dict[str, Any]:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    upstream = await http_upstream(ok)
    return {
        "upstreams": {"primary": {"url": upstream.url}},
        "routes": [route(upstreams=("primary",), cache={"stale_for": "1h"})],
        "admin": {"host": LOOPBACK, "port": 0, **admin},
    }


def _admin(app: ProxyApp) -> str:
    return f"http://{LOOPBACK}:{app.admin_port}"


async def _raw(app: ProxyApp, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(LOOPBACK, app.admin_port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read(-1)
    finally:
        writer.close()


CALLS = [
    ("GET", "/", None),  # the status page shell: no token needed, but the Host is checked
    ("GET", "/health", None),
    ("GET", "/metrics", None),
    ("GET", "/admin/config", None),
    ("PUT", "/admin/upstreams/primary/circuit", {"state": "open"}),
    ("POST", "/admin/cache/purge", {}),
    ("POST", "/admin/reload", None),
]


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:9901", "rebind.attacker.test.", "localhost.evil.example"],
)
async def test_a_foreign_host_gets_421_even_with_the_right_token(
    host, start_app, http_upstream, client
):
    app = await start_app(await _config(http_upstream))
    for method, path, body in CALLS:
        headers = {**ADMIN_AUTH, "Host": host}
        async with client.request(method, _admin(app) + path, headers=headers, json=body) as got:
            assert got.status == 421, (method, path)
            assert "admin.allowed_hosts" in (await got.json())["error"]
    # The refused PUT changed nothing: the circuit is not forced open.
    async with client.get(_admin(app) + "/health", headers=ADMIN_AUTH) as answer:
        assert (await answer.json())["upstreams"]["primary"]["circuit"]["forced"] is False


async def test_the_host_is_checked_before_the_token(start_app, http_upstream, client):
    app = await start_app(await _config(http_upstream))
    async with client.get(_admin(app) + "/health", headers={"Host": "evil.example"}) as answer:
        assert answer.status == 421  # not 401: nothing about the token is revealed either
    async with client.get(_admin(app) + "/health") as answer:
        assert answer.status == 401


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.0.0.1:9901", "localhost", "LocalHost:1", "localhost.", "[::1]:9901"],
)
async def test_the_listeners_own_names_are_answered(host, start_app, http_upstream, client):
    app = await start_app(await _config(http_upstream))
    headers = {**ADMIN_AUTH, "Host": host}
    async with client.get(_admin(app) + "/health", headers=headers) as answer:
        assert answer.status == 200
    async with client.get(_admin(app) + "/", headers={"Host": host}) as answer:
        assert answer.status == 200
        assert "<html" in (await answer.text()).lower()


async def test_admin_allowed_hosts_adds_names(start_app, http_upstream, client):
    config = await _config(http_upstream, allowed_hosts=["Failover-Admin.prod.svc"])
    app = await start_app(config)
    for host, status in [
        ("failover-admin.prod.svc", 200),
        ("failover-admin.prod.svc:9901", 200),
        ("other.prod.svc", 421),
    ]:
        headers = {**ADMIN_AUTH, "Host": host}
        async with client.get(_admin(app) + "/health", headers=headers) as answer:
            assert answer.status == status, host


async def test_purge_of_a_route_the_config_does_not_have_is_404(start_app, http_upstream, client):
    # Item 13, through the same listener: a typo is not "0 purged".
    app = await start_app(await _config(http_upstream))
    purge = _admin(app) + "/admin/cache/purge"
    async with client.post(purge, headers=ADMIN_AUTH, json={"route": "nope"}) as answer:
        assert answer.status == 404
        assert (await answer.json())["error"] == "no route named 'nope'"
    async with client.post(purge, headers=ADMIN_AUTH, json={"route": "r"}) as answer:
        assert answer.status == 200
        assert await answer.json() == {"purged": 0}


AUTH_LINE = f"Authorization: Bearer {ADMIN_TOKEN}\r\n".encode()


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (b"GET /health HTTP/1.1\r\n" + AUTH_LINE + b"Connection: close\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", b"400"),
        (b"GET /health HTTP/1.0\r\n" + AUTH_LINE + b"\r\n", b"421"),
        (b"GET /health HTTP/1.0\r\nHost: localhost\r\n" + AUTH_LINE + b"\r\n", b"200"),
        (b"GET /health HTTP/1.0\r\nHost: evil.example\r\n" + AUTH_LINE + b"\r\n", b"421"),
        (b"GET /health HTTP/1.0\r\nHost: a@b\r\n" + AUTH_LINE + b"\r\n", b"400"),
        (b"GET /health HTTP/1.0\r\nHost: [::1\r\n" + AUTH_LINE + b"\r\n", b"400"),
    ],
    ids=[
        "http11-no-host",
        "http11-no-host-page",
        "http10-no-host",
        "http10-localhost",
        "http10-foreign",
        "userinfo",
        "broken-ipv6",
    ],
)
async def test_raw_requests_without_a_usable_host(request_head, status, start_app, http_upstream):
    app = await start_app(await _config(http_upstream))
    answer = await _raw(app, request_head)
    assert answer.split(b" ", 2)[1] == status, answer[:200]


async def test_two_host_headers_are_refused(start_app, http_upstream):
    app = await start_app(await _config(http_upstream))
    answer = await _raw(
        app,
        b"GET /health HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n"
        + AUTH_LINE
        + b"Connection: close\r\n\r\n",
    )
    assert answer.split(b" ", 2)[1] in (b"400", b"421"), answer[:200]
    assert b'"upstreams"' not in answer


async def test_a_reload_applies_admin_allowed_hosts(tmp_path, http_upstream, client, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, ADMIN_TOKEN)
    config = {**(await _config(http_upstream)), "listen": {"host": LOOPBACK, "port": 0}}
    config["reload"] = {"poll_interval": 0}
    config_file = tmp_path / "config.yaml"
    config_file.write_text(json.dumps(config))
    app = ProxyApp(load_file(config_file), tmp_path, config_file=config_file)
    await app.start()
    try:
        headers = {**ADMIN_AUTH, "Host": "failover-admin.svc"}
        async with client.get(_admin(app) + "/health", headers=headers) as answer:
            assert answer.status == 421
        config["admin"]["allowed_hosts"] = ["failover-admin.svc"]
        config_file.write_text(json.dumps(config))
        async with client.post(_admin(app) + "/admin/reload", headers=ADMIN_AUTH) as answer:
            assert answer.status == 200
        async with client.get(_admin(app) + "/health", headers=headers) as answer:
            assert answer.status == 200
    finally:
        await app.stop()
