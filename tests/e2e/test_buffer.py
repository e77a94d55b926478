"""The durable write buffer end to end: writes kept when every upstream is down, then
replayed in order to a ledger upstream that applies each Idempotency-Key once."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.app import ProxyApp
from proxy.buffer.journal import Journal
from proxy.http.server import StartupError
from tests.conftest import ADMIN_AUTH, ADMIN_TOKEN, LOOPBACK, free_port, route

TOKEN, AUTH = ADMIN_TOKEN, ADMIN_AUTH


class Ledger:
    """A cooperating upstream: applies each Idempotency-Key once, counts repeats."""

    def __init__(self) -> None:
        self.applied: dict[str, bytes] = {}
        self.order: list[bytes] = []
        self.duplicates = 0
        self.refuse: set[bytes] = set()  # bodies answered 400
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if body in self.refuse:
            return web.json_response({"error": "bad write"}, status=400)
        key = request.headers.get("Idempotency-Key", "")
        if key in self.applied:
            self.duplicates += 1
        else:
            self.applied[key] = body
            self.order.append(body)
        return web.json_response({"ok": True}, status=201)

    async def start(self, port: int) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, LOOPBACK, port, reuse_address=True).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def ledger() -> AsyncIterator[Ledger]:
    ledger = Ledger()
    yield ledger
    await ledger.stop()


def buffered_config(port: int, tmp_path: Path, **buffer: Any) -> dict[str, Any]:
    return {
        "upstreams": {
            "primary": {
                "url": f"http://{LOOPBACK}:{port}",
                "timeouts": {"connect": "200ms", "read": "1s"},
                "circuit_breaker": {"enabled": False},
            }
        },
        "routes": [route("events", ("primary",), on_failure="buffer")],
        "buffer": {
            "path": str(tmp_path / "buffer"),
            "replay_backoff": "20ms",
            "max_replay_backoff": "100ms",
            **buffer,
        },
    }


async def post(client: aiohttp.ClientSession, app: ProxyApp, body: bytes, **headers: str):
    async with client.post(f"http://{LOOPBACK}:{app.port}/events", data=body, headers=headers) as r:
        return r.status, dict(r.headers), await r.read()


async def drained(app: ProxyApp, timeout: float = 20.0) -> None:
    buffer = app.handler.buffer
    assert buffer is not None
    async with asyncio.timeout(timeout):
        while buffer.status().depth:
            await asyncio.sleep(0.02)


async def test_writes_kept_while_everything_is_down_arrive_once_in_order(
    start_app, ledger, client, tmp_path
):
    port = free_port()
    app = await start_app(buffered_config(port, tmp_path))
    bodies = [f"write-{n:03d}".encode() for n in range(500)]
    answers = []
    for body in bodies[:10]:  # the first ones one by one: their order is the arrival order
        answers.append(await post(client, app, body))
    answers += await asyncio.gather(*(post(client, app, body) for body in bodies[10:]))
    for status, headers, raw in answers:
        assert status == 202
        assert headers["X-Failover-Source"] == "buffer"
        assert headers["X-Failover-Health"] == "critical"
        document = json.loads(raw)
        assert document["buffered"] is True
        assert document["idempotency_key"]
    assert app.handler.buffer.status().depth == 500
    await ledger.start(port)
    await drained(app)
    assert sorted(ledger.order) == sorted(bodies)
    assert ledger.order[:10] == bodies[:10]
    assert ledger.duplicates == 0
    # each write reached the ledger with the key its 202 named
    keys = {json.loads(raw)["idempotency_key"] for _, _, raw in answers}
    assert set(ledger.applied) == keys


async def test_arrival_order_is_kept_per_route(start_app, ledger, client, tmp_path):
    port = free_port()
    app = await start_app(buffered_config(port, tmp_path))
    bodies = [f"{n}".encode() for n in range(50)]
    for body in bodies:
        assert (await post(client, app, body))[0] == 202
    await ledger.start(port)
    # strict ordering: while writes wait, a new one queues behind them, even though
    # the upstream is back
    assert (await post(client, app, b"late"))[0] == 202
    await drained(app)
    assert ledger.order == [*bodies, b"late"]


async def test_the_clients_idempotency_key_is_kept(start_app, ledger, client, tmp_path):
    port = free_port()
    app = await start_app(buffered_config(port, tmp_path))
    status, _, raw = await post(client, app, b"x", **{"Idempotency-Key": "client-key-1"})
    assert (status, json.loads(raw)["idempotency_key"]) == (202, "client-key-1")
    await ledger.start(port)
    await drained(app)
    assert ledger.applied == {"client-key-1": b"x"}


async def test_an_ambiguous_failure_is_buffered_only_with_a_key(
    start_app, http_upstream, client, tmp_path
):
    async def reset(request: web.Request) -> web.Response:
        await request.read()
        assert request.transport is not None
        request.transport.abort()  # read it, then vanished: it may have been applied
        return web.Response()

    upstream = await http_upstream(reset)
    config = buffered_config(1, tmp_path)
    config["upstreams"]["primary"]["url"] = upstream.url
    app = await start_app(config)
    status, headers, raw = await post(client, app, b"maybe-applied")
    assert status == 502
    assert headers["X-Failover-Source"] == "none"
    assert "may have reached an upstream" in json.loads(raw)["error"]
    status, _, _ = await post(client, app, b"safe", **{"Idempotency-Key": "k1"})
    assert status == 202


async def test_a_write_refused_with_400_becomes_a_dead_letter(start_app, ledger, client, tmp_path):
    port = free_port()
    app = await start_app(buffered_config(port, tmp_path))
    ledger.refuse.add(b"poison")
    for body in (b"a", b"poison", b"b"):
        assert (await post(client, app, body))[0] == 202
    await ledger.start(port)
    await drained(app)
    assert ledger.order == [b"a", b"b"]  # a dead letter does not block the ones behind it
    admin = f"http://{LOOPBACK}:{app.admin_port}"
    async with client.get(admin + "/admin/buffer", headers=AUTH) as response:
        status = await response.json()
    (dead,) = status["dead"]
    assert dead["answer"]["status"] == 400
    assert "bad write" in dead["answer"]["body"]
    assert status["dead_letters"] == 1
    async with client.get(admin + "/admin/buffer?limit=0", headers=AUTH) as response:
        listed = await response.json()
    assert (listed["dead"], listed["dead_letters"]) == ([], 1)
    ledger.refuse.clear()
    async with client.post(admin + f"/admin/buffer/dead/{dead['id']}/retry", headers=AUTH) as r:
        assert r.status == 200
    await drained(app)
    assert ledger.order == [b"a", b"b", b"poison"]
    async with client.get(admin + "/admin/buffer", headers=AUTH) as response:
        assert (await response.json())["dead"] == []


async def test_a_full_buffer_answers_503_and_keeps_what_it_has(start_app, ledger, client, tmp_path):
    port = free_port()
    app = await start_app(buffered_config(port, tmp_path, max_records=3))
    assert [(await post(client, app, b"w"))[0] for _ in range(3)] == [202, 202, 202]
    status, headers, _ = await post(client, app, b"one too many")
    assert status == 503
    assert headers["Retry-After"] == "30"
    await ledger.start(port)
    await drained(app)
    assert len(ledger.order) == 3


async def test_a_full_disk_answers_503_never_202(start_app, client, tmp_path, monkeypatch):
    port = free_port()
    app = await start_app(buffered_config(port, tmp_path))
    assert (await post(client, app, b"before"))[0] == 202
    journal = app.handler.buffer.journal

    def full(fd: int, data: bytes) -> int:
        os.write(fd, data[: len(data) // 2])  # half of it lands, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal, "_write", full)
    status, _, raw = await post(client, app, b"during")
    assert status == 503
    assert "cannot write" in json.loads(raw)["error"]
    monkeypatch.setattr(journal, "_write", os.write)
    assert (await post(client, app, b"after"))[0] == 202
    await app.stop()
    # the journal is whole: exactly the two acknowledged writes, nothing torn
    again = Journal(tmp_path / "buffer")
    again.open()
    assert sorted(again.body(i) for i in again.live) == [b"after", b"before"]
    again.close()


async def test_a_second_proxy_refuses_the_same_buffer_directory(start_app, tmp_path):
    port = free_port()
    await start_app(buffered_config(port, tmp_path))
    with pytest.raises(StartupError, match="in use by another failover-proxy"):
        await start_app(buffered_config(port, tmp_path))


async def test_shutdown_delivers_what_waits_when_an_upstream_takes_it(
    start_app, ledger, client, tmp_path
):
    port = free_port()
    config = buffered_config(port, tmp_path, replay_backoff="1m", max_replay_backoff="1m")
    app = await start_app(config)
    for n in range(5):
        assert (await post(client, app, f"w{n}".encode()))[0] == 202
    await asyncio.sleep(0.1)  # the first replay failed: the next is a minute away
    await ledger.start(port)
    assert ledger.order == []
    await app.stop()  # SIGTERM: the drain does not wait out the backoff
    assert ledger.order == [f"w{n}".encode() for n in range(5)]
    again = Journal(tmp_path / "buffer")
    again.open()
    assert again.live == {}
    again.close()
