"""Issue 12 item 8: the config cannot inject headers. Every header name the file sets or
matches must be an RFC 9110 token and no value may hold a control character but HTAB;
``check``, start-up and every reload refuse such a file with ``file:line``, instead of
the proxy failing (or splitting a header) at request time."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web

from proxy.app import ProxyApp
from proxy.config.loader import load_file
from proxy.ops.admin import TOKEN_ENV
from proxy.reloader import Reloader
from tests.conftest import ADMIN_AUTH, ADMIN_TOKEN, LOOPBACK


async def test_a_reload_with_an_injected_header_is_refused_and_the_old_config_serves(
    tmp_path: Path, http_upstream, client, monkeypatch
):
    monkeypatch.setenv(TOKEN_ENV, ADMIN_TOKEN)

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    upstream = await http_upstream(ok)
    config = {
        "listen": {"host": LOOPBACK, "port": 0},
        "admin": {"host": LOOPBACK, "port": 0},
        "reload": {"poll_interval": 0},
        "upstreams": {"primary": {"url": upstream.url}},
        "routes": [{"name": "r", "upstreams": ["primary"], "match": {"path_prefix": "/"}}],
    }
    config_file = tmp_path / "config.yaml"
    config_file.write_text(json.dumps(config))
    app = ProxyApp(load_file(config_file), tmp_path, config_file=config_file)
    await app.start()
    try:
        assert isinstance(app.reloader, Reloader)
        config["routes"][0]["default"] = {"headers": {"X-A": "a\r\nSet-Cookie: s=1"}}
        config_file.write_text(json.dumps(config))
        admin = f"http://{LOOPBACK}:{app.admin_port}"
        async with client.post(admin + "/admin/reload", headers=ADMIN_AUTH) as answer:
            assert answer.status == 400
            assert "routes[0].default.headers.X-A" in (await answer.json())["message"]
        async with client.get(f"http://{LOOPBACK}:{app.port}/x") as answer:
            assert answer.status == 200
            assert "X-A" not in answer.headers
    finally:
        await app.stop()
