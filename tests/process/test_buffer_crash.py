"""The write buffer survives SIGKILL: a proxy process of its own is killed at random
points while it accepts writes (group-commit fdatasync before the 202) and while it
replays them, then restarted on the same buffer directory, round after round (seeded).
At the end every acknowledged write has reached the ledger upstream exactly once, and
the ledger never saw a write no client sent."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.ops.admin import TOKEN_ENV
from tests.conftest import LOOPBACK, route
from tests.procs import ProxyProcess
from tests.procs import spawn as spawn_process

SEED = int(os.environ.get("BUFFER_CRASH_SEED", "20240611"))  # to replay a failure
ROUNDS = 24
TOKEN = "crash-token"


class Ledger:
    """The upstream of record: applies each Idempotency-Key once; a key seen again is a
    duplicate (a harmless retry). It can be stopped (connections refused) and started
    again on the same port, keeping what it applied."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.applied: dict[str, bytes] = {}  # key -> body, first arrival
        self.arrivals: list[tuple[str | None, bytes]] = []  # every request, in order
        self.duplicates: dict[str, int] = {}  # key -> arrivals after the first
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        key = request.headers.get("Idempotency-Key")
        self.arrivals.append((key, body))
        if key is not None:
            if key in self.applied:
                self.duplicates[key] = self.duplicates.get(key, 0) + 1
            else:
                self.applied[key] = body
        return web.json_response({"ok": True}, status=201)

    @property
    def up(self) -> bool:
        return self.runner is not None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, LOOPBACK, self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


def stable_port() -> int:
    """A free loopback port below the kernel's ephemeral range: the ledger stops and
    starts again on it many times, and while it is down a listener started on port 0
    (a proxy's own, or its admin listener) must not be handed the same port, or a replay
    would reach the proxy instead of the ledger."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, min(low, 32768))
        with socket.socket() as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


@dataclass
class Sent:
    """One write a client sent, and what it heard back."""

    body: bytes
    key: str | None  # the Idempotency-Key the client sent, if any
    status: int | None = None  # None: no answer (refused, reset by the kill, timed out)
    answered_key: str | None = None  # from a 202's JSON body


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Callable[[dict[str, Any]], Awaitable]]:
    started: list[ProxyProcess] = []
    config_file = tmp_path / "config.yaml"

    async def run(config: dict[str, Any]) -> ProxyProcess:
        config_file.write_text(json.dumps(config))  # JSON is YAML
        proxy = await spawn_process(config_file, {**os.environ, TOKEN_ENV: TOKEN})
        started.append(proxy)
        return proxy

    yield run
    for proxy in started:
        await proxy.kill()


def crash_config(ledger_port: int, buffer_dir: Path) -> dict[str, Any]:
    return {
        "listen": {"host": LOOPBACK, "port": 0},
        "admin": {"host": LOOPBACK, "port": 0},
        "logging": {"access_log": False},
        "upstreams": {
            "ledger": {
                "url": f"http://{LOOPBACK}:{ledger_port}",
                "timeouts": {"connect": "200ms", "read": "2s"},
                "circuit_breaker": {"enabled": False},
            }
        },
        "routes": [route("events", ("ledger",), on_failure="buffer")],
        "buffer": {
            "path": str(buffer_dir),
            "replay_backoff": "20ms",
            "max_replay_backoff": "100ms",
        },
    }


async def writer(
    session: aiohttp.ClientSession,
    url: str,
    name: str,
    with_keys: bool,
    stop: asyncio.Event,
    sent: list[Sent],
) -> None:
    """Post writes one after another, each with a unique body, until the proxy is gone."""
    n = 0
    while not stop.is_set():
        body = f"{name}-{n}".encode()
        key = f"key-{name}-{n}" if with_keys else None
        write = Sent(body, key)
        sent.append(write)
        n += 1
        headers = {"Idempotency-Key": key} if key else {}
        try:
            async with session.post(url, data=body, headers=headers) as response:
                raw = await response.read()
                if response.status == 202:
                    write.answered_key = json.loads(raw)["idempotency_key"]
                write.status = response.status
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
            return  # the proxy was killed: no answer, so not acknowledged


async def drained(session: aiohttp.ClientSession, proxy: ProxyProcess, timeout: float) -> dict:
    admin = f"http://{LOOPBACK}:{proxy.admin_port}/admin/buffer"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status: dict[str, Any] = {}
    async with asyncio.timeout(timeout):
        while True:
            async with session.get(admin, headers=auth) as response:
                status = await response.json()
            if status["depth"] == 0:
                return status
            await asyncio.sleep(0.05)


async def test_acknowledged_writes_arrive_exactly_once_across_sigkills(spawn, tmp_path: Path):
    rng = random.Random(SEED)
    ledger = Ledger(stable_port())
    config = crash_config(ledger.port, tmp_path / "buffer")
    sent: list[Sent] = []
    kills = 0
    logs: list[bytes] = []
    timeout = aiohttp.ClientTimeout(total=5)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for round_no in range(ROUNDS):
                want_up = rng.random() < 0.4
                if want_up and not ledger.up:
                    await ledger.start()
                elif not want_up and ledger.up:
                    await ledger.stop()
                proxy = await spawn(config)
                if rng.random() < 0.15:
                    # killed while starting: reading the journal, the first replays
                    await asyncio.sleep(rng.uniform(0.0, 0.6))
                    await proxy.kill()
                    kills += 1
                    logs.append(bytes(proxy.log))
                    continue
                await proxy.wait_listening(admin=True)
                url = f"http://{LOOPBACK}:{proxy.port}/events/{round_no}"
                stop = asyncio.Event()
                writers = [
                    asyncio.create_task(
                        writer(session, url, f"r{round_no}w{w}", rng.random() < 0.5, stop, sent)
                    )
                    for w in range(rng.randint(1, 8))
                ]
                await asyncio.sleep(rng.uniform(0.0, 0.15))
                await proxy.kill()
                kills += 1
                stop.set()
                await asyncio.gather(*writers)
                logs.append(bytes(proxy.log))

            # the end: the ledger up, one last proxy replays whatever is left
            if not ledger.up:
                await ledger.start()
            final = await spawn(config)
            await final.wait_listening(admin=True)
            status = await drained(session, final, timeout=20.0)
            dead_letters: Any = None
            if status["dead_letters"]:  # what answered them, for the failure message
                admin = f"http://{LOOPBACK}:{final.admin_port}/admin/buffer?limit=5"
                auth = {"Authorization": f"Bearer {TOKEN}"}
                async with session.get(admin, headers=auth) as response:
                    dead_letters = (await response.json()).get("dead")
            logs.append(bytes(final.log))
    finally:
        await ledger.stop()

    acknowledged = [w for w in sent if w.status == 202]
    forwarded = [w for w in sent if w.status == 201]  # the ledger answered it directly
    other = [w for w in sent if w.status not in (None, 201, 202)]
    unanswered_arrived = {b for _, b in ledger.arrivals} - {w.body for w in acknowledged}
    torn = sum(text.count(b"cutting a torn record") for text in logs)
    print(
        f"\nseed={SEED} rounds={ROUNDS} kills={kills} sent={len(sent)} "
        f"acknowledged(202)={len(acknowledged)} forwarded(201)={len(forwarded)} "
        f"unanswered={sum(w.status is None for w in sent)} other={len(other)} "
        f"unanswered-but-delivered={len(unanswered_arrived - {w.body for w in forwarded})} "
        f"torn-tails-cut={torn} "
        f"ledger arrivals={len(ledger.arrivals)} "
        f"duplicates={sum(ledger.duplicates.values())}"
    )
    assert status["dead_letters"] == 0, (status, dead_letters)
    assert not other, [(w.body, w.status) for w in other]
    assert len(acknowledged) > 100  # the rounds did exercise the buffer

    # a 202 names the client's own key when it sent one, else one the proxy made
    for w in acknowledged:
        assert w.answered_key is not None
        if w.key is not None:
            assert w.answered_key == w.key

    # the ledger saw nothing a client did not send, under the key it was sent with
    by_body = {w.body: w for w in sent}
    assert len(by_body) == len(sent)
    applications: dict[bytes, set[str | None]] = {}
    for key, body in ledger.arrivals:
        assert body in by_body, f"the ledger got a write no client sent: {body!r}"
        w = by_body[body]
        if w.key is not None or w.answered_key is not None:
            assert key == (w.key or w.answered_key), (body, key)
        if key is not None:
            assert ledger.applied[key] == body, (key, body)
        applications.setdefault(body, set()).add(key)
    # applied at most once: one key per body (a keyless one only straight through)
    twice = {body: keys for body, keys in applications.items() if len(keys) > 1}
    assert not twice, f"written to the ledger under two keys: {twice}"
    for key, body in ledger.arrivals:
        if key is None:
            assert sum(b == body for _, b in ledger.arrivals) == 1, body

    # every acknowledged write arrived, exactly once, with its body
    missing = [w for w in acknowledged if ledger.applied.get(w.answered_key or "") != w.body]
    assert not missing, (
        f"seed {SEED}: {len(missing)} acknowledged writes never reached the ledger: "
        f"{[w.body for w in missing[:10]]}"
    )
    assert all(w.body in applications for w in forwarded)

    # repeats only as retries: at most one in-flight replay per kill
    assert sum(ledger.duplicates.values()) <= kills, ledger.duplicates

    # no replay crashed, nothing unreadable, no start-up failure
    for text in logs:
        for line in text.splitlines():
            assert line.startswith(b"{"), f"not a log line (a traceback?): {text.decode()}"
            record = json.loads(line)
            assert record["level"] not in ("error", "critical"), record
