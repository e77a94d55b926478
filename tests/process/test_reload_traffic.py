"""Hot reload seen from outside while the proxy serves: ten reloads under continuous
traffic with no failed or mis-routed request, a breaker that stays open across an
unrelated change, the ConfigMap ``..data`` symlink swap, SIGHUP in a proxy process of
its own, and a removed upstream drained before its pool is closed. Real loopback
upstreams and sockets; the config is a real file, rewritten atomically."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from proxy.ops.admin import TOKEN_ENV
from tests.conftest import route
from tests.helpers.reload_traffic import (
    POLL,
    answer_of,
    base_config,
    eventually,
    named,
    write_atomically,
)
from tests.procs import ProxyProcess, spawn


@pytest.fixture
async def proxy_process() -> AsyncIterator[Callable[[Path], Awaitable[ProxyProcess]]]:
    started: list[ProxyProcess] = []

    async def run(config_file: Path) -> ProxyProcess:
        env = {key: value for key, value in os.environ.items() if key != TOKEN_ENV}
        proxy = await spawn(config_file, env)
        started.append(proxy)
        await proxy.wait_listening()
        return proxy

    yield run
    for proxy in started:
        await proxy.kill()


async def test_sighup_reloads_the_file(tmp_path, proxy_process, http_upstream, client):
    first, second = await named(http_upstream, "first"), await named(http_upstream, "second")
    config = {
        **base_config(poll="0s"),  # no polling: only SIGHUP (or the admin API) reloads
        "logging": {"format": "text", "access_log": False},
        "upstreams": {"first": {"url": first.url}, "second": {"url": second.url}},
        "routes": [route("r", ("first", "second"))],
    }
    config_file = tmp_path / "config.yaml"
    write_atomically(config_file, config)
    proxy = await proxy_process(config_file)
    base = proxy.url

    async def ready() -> bool:
        async with client.get(base + "/_failover/readyz") as response:
            return response.status == 200  # and the SIGHUP handler is installed by then

    await eventually(ready, 5)
    assert (await answer_of(client, base + "/x"))[1] == "first"

    config["routes"] = [route("r", ("second", "first"))]
    write_atomically(config_file, config)
    await asyncio.sleep(3 * POLL)
    assert (await answer_of(client, base + "/x"))[1] == "first"  # not polled: not applied

    proxy.process.send_signal(signal.SIGHUP)

    async def applied() -> bool:
        return (await answer_of(client, base + "/x"))[1] == "second"

    await eventually(applied, 2)
    assert proxy.process.returncode is None
    assert b"config reloaded (SIGHUP)" in proxy.log
