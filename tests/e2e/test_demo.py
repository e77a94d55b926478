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
