"""Configs, upstreams and waits for reload tests: shared by the e2e and process parts
of test_reload_traffic.py."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.conftest import LOOPBACK, Upstream

POLL = 0.2  # reload.poll_interval in these tests
SOURCE = "X-Failover-Source"


def write_atomically(path: Path, config: dict[str, Any]) -> None:
    """The way an editor or a deploy tool should write it: never half a file."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(config, indent=1))  # JSON is YAML
    os.replace(temporary, path)


def base_config(poll: str = "200ms") -> dict[str, Any]:
    return {
        "listen": {"host": LOOPBACK, "port": 0},
        "admin": {"host": LOOPBACK, "port": 0},
        "reload": {"poll_interval": poll},
    }


async def named(http_upstream, name: str, delay: float = 0.0) -> Upstream:
    """An upstream whose body is its own name (after ``delay`` seconds)."""

    async def answer(request: web.Request) -> web.Response:
        if delay:
            await asyncio.sleep(delay)
        return web.Response(text=name)

    return await http_upstream(answer)


async def answer_of(client: aiohttp.ClientSession, url: str) -> tuple[int, str, str]:
    async with client.get(url) as response:
        return response.status, response.headers.get(SOURCE, ""), await response.text()


async def eventually(check: Callable[[], bool | Awaitable[bool]], within: float) -> float:
    """Seconds until ``check`` holds; fails the test past ``within`` (times 3, so that
    a slow change is reported with how slow it was rather than as a hang)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not await _value(check()):
        elapsed = loop.time() - started
        assert elapsed < within * 3, f"not seen after {elapsed:.2f}s"
        await asyncio.sleep(0.01)
    return loop.time() - started


async def _value(result: bool | Awaitable[bool]) -> bool:
    return await result if inspect.isawaitable(result) else result
