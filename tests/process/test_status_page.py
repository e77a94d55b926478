"""The status page, rendered by a real headless Chromium driven over the Chrome DevTools
Protocol (a websocket: aiohttp's client is all it takes). Only 127.0.0.1 is touched."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.app import ProxyApp
from proxy.ops.admin import TOKEN_ENV
from tests.conftest import LOOPBACK, route

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs a Chromium binary on PATH (Debian: apt-get install chromium)"
)

TOKEN = "status-page-test-token"
DEVTOOLS = re.compile(rb"DevTools listening on ws://[^/\s]+:(\d+)/")


class Page:
    """One page target, driven with CDP commands over its websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.last_id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.last_id += 1
        await self.ws.send_json({"id": self.last_id, "method": method, "params": params})
        async with asyncio.timeout(10):
            while True:  # events (no id) and nothing else arrive in between
                message = await self.ws.receive_json()
                if message.get("id") == self.last_id:
                    if "error" in message:
                        raise RuntimeError(f"{method}: {message['error']}")
                    result: dict[str, Any] = message["result"]
                    return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, expected: Any, timeout: float = 6.0) -> None:
        """Poll ``expression`` until it equals ``expected``: the page updates on its own."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                value = await self.evaluate(expression)
            except RuntimeError as exc:  # e.g. the document is still loading
                value = exc
            if value == expected:
                return
            if loop.time() > deadline:
                raise AssertionError(f"{expression} is {value!r}, not {expected!r}")
            await asyncio.sleep(0.1)

    async def open(self, url: str) -> None:
        """Navigate, and wait until that document (not the one before it) has loaded."""
        await self.call("Page.navigate", url=url)
        origin = url.split("/#")[0]
        await self.wait_for(
            f"location.origin === {origin!r} && document.readyState === 'complete'", True
        )


@pytest.fixture
async def browser() -> AsyncIterator[Page]:
    """A headless Chromium with a throwaway profile; killed (with its children) after."""
    assert CHROMIUM is not None
    # Its profile, and its TMPDIR (for its singleton socket: a short path, as sockets need).
    home = Path(tempfile.mkdtemp(prefix="failover-chromium-"))
    (home / "tmp").mkdir()
    process = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        f"--user-data-dir={home / 'profile'}",
        "about:blank",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(home / "tmp")},
        start_new_session=True,  # its own process group: teardown can end stragglers too
    )
    assert process.stderr is not None
    stderr = process.stderr
    drain: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(20):
            seen = b""
            while (found := DEVTOOLS.search(seen)) is None:
                line = await stderr.readline()
                if not line:
                    raise RuntimeError(f"chromium exited before DevTools listened: {seen!r}")
                seen += line

        async def discard() -> None:  # keep its stderr pipe from filling up
            while await stderr.read(65536):
                pass

        drain = asyncio.create_task(discard())
        port = int(found.group(1))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{LOOPBACK}:{port}/json/list") as answer:
                targets = await answer.json()
            page = next(t for t in targets if t["type"] == "page")
            async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield Page(ws)
    finally:
        if process.returncode is None:
            process.terminate()  # the browser shuts its renderers down itself
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever of its group is left
        if drain is not None:
            drain.cancel()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def proxy_apps(monkeypatch: pytest.MonkeyPatch) -> list[ProxyApp]:
    """Every ProxyApp started during the test (start_proxy returns only the main URL)."""
    apps: list[ProxyApp] = []
    original = ProxyApp.start

    async def start(self: ProxyApp) -> None:
        apps.append(self)
        await original(self)

    monkeypatch.setattr(ProxyApp, "start", start)
    return apps


@pytest.fixture
async def admin(
    monkeypatch, proxy_apps, start_proxy, http_upstream, refused_url, client
) -> dict[str, Any]:
    """A proxy with a live and a refusing upstream, and one request through each route."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    live = await http_upstream(ok)
    url = await start_proxy(
        {
            "upstreams": {"live": {"url": live.url}, "gone": {"url": refused_url}},
            "routes": [
                route("api", ("live", "gone"), match={"path_prefix": "/api"}),
                route("legacy", ("gone", "live"), match={"path_prefix": "/legacy"}),
            ],
            "admin": {"host": LOOPBACK, "port": 0},
        }
    )
    for path in ("/api/x", "/legacy/x"):
        async with client.get(url + path) as answer:
            assert answer.status == 200
    (app,) = proxy_apps
    return {"url": f"http://{LOOPBACK}:{app.admin_port}", "client": client}


STATES = (
    "Object.fromEntries([...document.querySelectorAll('[data-{0}]')]"
    ".map(row => [row.dataset.{0}, row.dataset.state]))"
)


async def test_page_shows_every_route_and_upstream_and_follows_changes(browser, admin):
    base, client = admin["url"], admin["client"]
    await browser.open(f"{base}/#token={TOKEN}")
    # "legacy" answered from its second upstream: degraded. "gone" failed once: not enough
    # to open its breaker.
    await browser.wait_for(STATES.format("route"), {"api": "healthy", "legacy": "degraded"})
    await browser.wait_for(STATES.format("upstream"), {"live": "closed", "gone": "closed"})
    await browser.wait_for("document.getElementById('status').dataset.state", "degraded")
    text = await browser.evaluate("document.body.innerText")
    assert "live → gone" in text
    assert "gone → live" in text
    assert "live 100%" in text  # the share "legacy" got from its second layer
    assert await browser.evaluate("document.getElementById('message').hidden") is True
    assert await browser.evaluate("location.hash") == ""  # the token left the address bar

    await browser.evaluate("window.notReloaded = true")
    async with client.put(
        f"{base}/admin/upstreams/live/circuit",
        json={"state": "open"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as answer:
        assert answer.status == 200
    await browser.wait_for(STATES.format("upstream"), {"live": "open", "gone": "closed"})
    assert await browser.evaluate("window.notReloaded") is True
    assert (
        await browser.evaluate("document.querySelector('[data-upstream=live]').dataset.forced")
        == "true"
    )
    await browser.wait_for(
        "[...document.querySelectorAll('#recommendations li')]"
        ".some(li => li.textContent.includes('forced open by an operator'))",
        True,
    )


async def test_wrong_token_shows_the_401_message(browser, admin):
    await browser.open(f"{admin['url']}/#token=not-the-token")
    await browser.wait_for("document.getElementById('message').dataset.kind", "unauthorized")
    message = await browser.evaluate("document.getElementById('message').textContent")
    assert "401" in message
    assert await browser.evaluate("document.getElementById('message').hidden") is False
    assert await browser.evaluate("document.querySelectorAll('[data-upstream]').length") == 0


async def test_cache_sizes_read_as_people_write_them(browser, admin):
    await browser.open(f"{admin['url']}/#token={TOKEN}")
    await browser.wait_for(
        "document.getElementById('cache').textContent.startsWith('0 entries, 0 B of 256 MiB;')",
        True,
    )
    for expression, expected in [
        ("size(714) + ' of ' + size(64 * 1024 ** 2)", "714 B of 64 MiB"),
        ("size(1536)", "1.5 KiB"),
        ("size(1024 ** 2 - 1)", "1 MiB"),
        ("count(1, 'entry', 'entries')", "1 entry"),
        ("count(2, 'entry', 'entries')", "2 entries"),
    ]:
        assert await browser.evaluate(expression) == expected, expression
