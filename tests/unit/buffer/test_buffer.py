"""The durable write buffer end to end: writes kept when every upstream is down, then
replayed in order to a ledger upstream that applies each Idempotency-Key once."""

from __future__ import annotations

import asyncio
import json

import pytest

from proxy.buffer.journal import Journal


async def test_buffering_needs_a_buffer_path():
    from proxy.config.loader import ConfigError, load_text

    text = json.dumps(
        {
            "upstreams": {"a": {"url": "http://127.0.0.1:1"}},
            "routes": [{"name": "w", "upstreams": ["a"], "on_failure": "buffer"}],
        }
    )
    with pytest.raises(ConfigError, match=r"routes\[0\]\.on_failure: buffering writes needs"):
        load_text(text)


async def test_retrying_a_dead_letter_during_a_replay_does_not_wedge_the_route(tmp_path):
    from proxy.buffer.buffer import BufferSettings, WriteBuffer
    from proxy.buffer.rules import Verdict

    settings = BufferSettings(10**6, 100, True, "Idempotency-Key", 0.01, 0.05)
    clock = asyncio.get_running_loop().time
    buffer = WriteBuffer(Journal(tmp_path / "b"), settings, clock=clock, wall_clock=clock)
    await buffer.open(["r"])
    delivered: list[bytes] = []
    release = asyncio.Event()

    async def deliver(write, body: bytes):
        if body == b"poison" and not release.is_set():
            return Verdict.DEAD, {"status": 400}
        if body == b"slow":
            await release.wait()
        delivered.append(body)
        return Verdict.DELIVERED, None

    for body in (b"poison", b"slow", b"after"):
        await buffer.accept("r", "POST", "/x", [], body, None, None)
    buffer.start(deliver)
    async with asyncio.timeout(5):
        while buffer.dead_count() == 0:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # "slow" is being delivered now
    (dead,) = buffer.dead_letters()
    assert await buffer.retry_dead(dead["id"])
    assert not await buffer.retry_dead(dead["id"])  # already queued again
    release.set()
    async with asyncio.timeout(5):
        while buffer.status().depth:
            await asyncio.sleep(0.01)
    assert sorted(delivered) == [b"after", b"poison", b"slow"]
    await buffer.close()
