"""The process: start-up checks, the bundled config, and a graceful drain."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from proxy.http import server
from proxy.http.server import StartupError, require_strict_parser
from tests.conftest import route

REPO = Path(__file__).resolve().parent.parent


def test_the_strict_c_parser_is_in_use():
    require_strict_parser()


def test_refuses_to_start_on_the_pure_python_parser(monkeypatch):
    from aiohttp import http_parser

    monkeypatch.setattr(server.web_protocol, "HttpRequestParser", http_parser.HttpRequestParserPy)
    with pytest.raises(StartupError, match="pure-Python"):
        require_strict_parser()


def test_refuses_an_aiohttp_older_than_the_pin(monkeypatch):
    monkeypatch.setattr(server.aiohttp, "__version__", "3.8.6")
    with pytest.raises(StartupError, match="too old"):
        require_strict_parser()


async def test_in_flight_requests_finish_during_shutdown(http_upstream, start_proxy, client):
    from proxy.app import ProxyApp
    from proxy.config.schema import Config

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.5)
        return web.Response(text="finished")

    upstream = await http_upstream(slow)
    config = Config.model_validate(
        {
            "listen": {"host": "127.0.0.1", "port": 0},
            "upstreams": {"primary": {"url": upstream.url}},
            "routes": [route(upstreams=("primary",))],
        }
    )
    app = ProxyApp(config, REPO)
    await app.start()
    in_flight = asyncio.create_task(client.get(f"http://127.0.0.1:{app.port}/slow"))
    await asyncio.sleep(0.1)
    await app.stop()
    response = await in_flight
    assert response.status == 200
    assert await response.text() == "finished"
    with pytest.raises(aiohttp.ClientConnectorError):
        await client.get(f"http://127.0.0.1:{app.port}/after")


async def test_bundled_config_serves_its_default_with_nothing_running(tmp_path):
    """The README's quick start: run config.yaml with no backend up, get the default."""
    text = (REPO / "config.yaml").read_text()
    text = re.sub(
        r"listen: \{host: 127.0.0.1, port: 8080\}", "listen: {host: 127.0.0.1, port: 0}", text
    )
    assert "port: 0" in text
    (tmp_path / "config.yaml").write_text(text)
    shutil.copytree(REPO / "defaults", tmp_path / "defaults")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "run",
        "--config",
        str(tmp_path / "config.yaml"),
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    try:
        async with asyncio.timeout(10):
            line = b""
            while b"listening on" not in line:
                line = await process.stderr.readline()
                assert line, "the proxy exited before listening"
        assert b"(event loop: uvloop)" in line
        port = int(line.split(b"listening on ", 1)[1].split()[0].rsplit(b":", 1)[1])
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/api/telemetry/drivers") as response:
                assert response.status == 200
                assert response.headers["X-Failover-Source"] == "default"
                assert (await response.json())["drivers"] == []
            async with session.get(f"http://127.0.0.1:{port}/anything") as response:
                assert response.status == 503
            async with session.post(f"http://127.0.0.1:{port}/api/events", data=b"{}") as r:
                assert r.status == 202
                assert r.headers["X-Failover-Source"] == "buffer"
        assert list((tmp_path / "buffer").glob("journal-*.log"))  # next to the config
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
