"""Issue 12, items 10 and 11: a buffered write's replay does not take a half-open probe a
client could take, and an answer retrying cannot change (501, 505, most 4xx) makes the
write a dead letter at once without counting against the upstream's breaker."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from proxy.app import ProxyApp
from proxy.upstreams.breaker import State
from tests.conftest import LOOPBACK, FakeClock, route

# -- end to end ----------------------------------------------------------------------


def config(upstreams: dict[str, str], tmp_path: Path, **breaker_: Any) -> dict[str, Any]:
    names = tuple(upstreams)
    return {
        "upstreams": {
            name: {
                "url": url,
                "timeouts": {"connect": "200ms", "read": "1s"},
                "circuit_breaker": {"consecutive_failures": 1, "half_open_probes": 1, **breaker_},
            }
            for name, url in upstreams.items()
        },
        "routes": [
            {**route("events", names, on_failure="buffer"), "match": {"path_prefix": "/events"}},
            {**route("reads", names), "match": {"path_prefix": "/"}},
        ],
        "buffer": {
            "path": str(tmp_path / "buffer"),
            "replay_backoff": "20ms",
            "max_replay_backoff": "100ms",
        },
    }


async def post(client: aiohttp.ClientSession, app: ProxyApp, body: bytes) -> int:
    async with client.post(f"http://{LOOPBACK}:{app.port}/events", data=body) as response:
        await response.read()
        return response.status


async def test_a_write_answered_501_is_a_dead_letter_after_one_try_and_not_an_outage(
    start_app, http_upstream, client, tmp_path
):
    """http.server answers POST with 501: the write is the application's to refuse,
    retrying changes nothing, and the upstream is up (its breaker stays closed)."""

    async def not_implemented(request: web.Request) -> web.Response:
        return web.Response(status=501, text="Unsupported method ('POST')")

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    primary = await http_upstream(not_implemented)
    backup = await http_upstream(ok)
    app = await start_app(config({"primary": primary.url, "backup": backup.url}, tmp_path))
    guards = app.live.current.guards
    for g in guards.values():  # kept: every upstream skipped, so surely not applied
        g.pin(State.OPEN, "test")
    assert await post(client, app, b'{"n": 1}') == 202
    for g in guards.values():
        g.pin(None, "test")  # the replay may go now
    buffer = app.handler.buffer
    assert buffer is not None
    async with asyncio.timeout(5):
        while not buffer.dead_count():
            await asyncio.sleep(0.01)
    retried = buffer.totals.get(("events", "retry"), 0)  # while pinned open, perhaps
    await asyncio.sleep(0.2)  # several backoffs: a retried write would be sent again
    assert primary.hits == 1  # one delivery try
    assert backup.hits == 0  # the verdict ends the walk: it never goes on elsewhere
    assert buffer.totals.get(("events", "retry"), 0) == retried
    assert buffer.status().depth == 0
    (dead,) = buffer.dead_letters()
    assert dead["answer"]["status"] == 501
    assert dead["answer"]["upstream"] == "primary"
    assert "Unsupported method" in dead["answer"]["body"]
    # not an outage: a breaker that opens on one failure is still closed, no failure seen
    assert guards["primary"].breaker is not None
    assert guards["primary"].breaker.state is State.CLOSED
    stats = app.handler.stats.upstreams["primary"]
    assert stats.failure_rate() == (0.0, 1)
    assert stats.last_failure is None


async def test_a_replay_leaves_the_half_open_probe_to_a_client(
    start_app, http_upstream, client, tmp_path
):
    """The quick start's 84 s: the replay took the probe, failed, and the circuit opened
    again for twice as long while a client's read would have succeeded."""

    async def handler(request: web.Request) -> web.Response:
        if request.method == "POST":
            return web.Response(status=500, text="the write fails")
        if request.path == "/fail":
            return web.Response(status=500, text="down")
        return web.json_response({"drivers": [1]})

    upstream = await http_upstream(handler)
    clock = FakeClock()
    app = await start_app(config({"primary": upstream.url}, tmp_path, open_for="10s"), clock)
    base = f"http://{LOOPBACK}:{app.port}"
    async with client.get(base + "/fail") as response:
        assert response.status == 500  # one failure: the circuit opens
    primary = app.live.current.guards["primary"]
    assert primary.breaker is not None and primary.breaker.state is State.OPEN
    assert await post(client, app, b'{"n": 1}') == 202  # skipped (circuit open): buffered
    buffer = app.handler.buffer
    assert buffer is not None

    async def a_replay_pass() -> None:
        before = buffer.totals.get(("events", "retry"), 0)
        async with asyncio.timeout(5):
            while buffer.totals.get(("events", "retry"), 0) == before:
                await asyncio.sleep(0.005)

    clock.now += 12  # the open time (10 s +-10%) is up
    await a_replay_pass()
    assert [r["method"] for r in upstream.requests] == ["GET"]  # the replay did not probe
    async with client.get(base + "/drivers") as response:
        assert response.status == 200
        assert response.headers["X-Failover-Source"] == "primary"
        assert json.loads(await response.read()) == {"drivers": [1]}
    assert primary.breaker.state is State.CLOSED
