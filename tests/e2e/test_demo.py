"""``failover-proxy demo``: run headless, fast, it shows every layer in order; Ctrl-C
stops everything it started."""

from __future__ import annotations

import asyncio
import io

from proxy.demo.runner import run_demo
from tests.helpers.demo import ports, refused, served


async def test_an_in_process_run_closes_everything_it_opened():
    out = io.StringIO()
    before = {task for task in asyncio.all_tasks() if not task.done()}
    assert await run_demo(duration=3, speed=8, out=out) == 0
    text = out.getvalue()
    assert [second for second, _, _ in served(text)] == [0, 1, 2]
    assert {layer for _, layer, _ in served(text)} == {"primary"}
    for port in ports(text):
        assert await refused(port)
    assert {task for task in asyncio.all_tasks() if not task.done()} <= before | {
        asyncio.current_task()
    }


async def test_the_chat_stream_fails_over_before_its_first_token():
    """The chat route: a healthy primary streams; a primary whose first event is an
    error event (from 4s) is left before the client sees a byte, for the secondary."""
    out = io.StringIO()
    assert await run_demo(duration=7, speed=8, out=out) == 0
    chats = [line.strip() for line in out.getvalue().splitlines() if "chat stream:" in line]
    assert chats[0].startswith("chat stream: 200 from primary, first token after"), chats
    assert chats[0].endswith(", 5 tokens"), chats
    assert any(
        chat.startswith("chat stream: 200 from secondary")
        and chat.endswith("failed first: primary=invalid_response")
        for chat in chats
    ), chats
