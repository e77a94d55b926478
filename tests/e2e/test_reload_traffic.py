"""Hot reload seen from outside while the proxy serves: ten reloads under continuous
traffic with no failed or mis-routed request, a breaker that stays open across an
unrelated change, the ConfigMap ``..data`` symlink swap, SIGHUP in a proxy process of
its own, and a removed upstream drained before its pool is closed. Real loopback
upstreams and sockets; the config is a real file, rewritten atomically."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.app import ProxyApp
from proxy.config.loader import load_file
from proxy.ops.admin import TOKEN_ENV
from tests.conftest import LOOPBACK, route
from tests.helpers.reload_traffic import (
    POLL,
    SOURCE,
    answer_of,
    base_config,
    eventually,
    named,
    write_atomically,
)

VISIBLE_WITHIN = POLL + 0.8  # the poll interval, plus slack for loading the file under load


@pytest.fixture
async def start_reloading(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Callable[[Path], Awaitable[ProxyApp]]]:
    """Start the proxy in-process from a config file, as ``failover-proxy run`` does
    (the file's path is kept as given, not resolved), so that it reloads that file."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)  # no admin listener
    apps: list[ProxyApp] = []

    async def start(config_file: Path) -> ProxyApp:
        app = ProxyApp(load_file(config_file), config_file.parent, config_file=config_file)
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop()


async def health(client: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with client.get(base + "/_failover/health") as response:
        assert response.status == 200
        return await response.json()


# 1. Ten reloads under continuous traffic ------------------------------------------------


@dataclass(frozen=True)
class Version:
    """One config in the sequence, and the answer each path must get under it."""

    a: tuple[str, ...] = ("A", "B")  # route a (/a): upstream order
    b: tuple[str, ...] = ("B", "C")  # route b (/b)
    n: bool = False  # route n (/n -> A) ahead of the catch-all
    rest: str = "C"  # the catch-all route (/, so /n without route n)
    payload: str = "d0"  # route d's default payload (its only upstream refuses)
    s_read: str = "50ms"  # S answers after 150ms: with 50ms route t fails over to C
    a_connect: str = "1s"  # a timeout change on A that no answer shows
    with_d: bool = False  # upstream D is configured

    def config(self, urls: dict[str, str]) -> dict[str, Any]:
        upstreams: dict[str, Any] = {
            "A": {"url": urls["A"], "timeouts": {"connect": self.a_connect}},
            "B": {"url": urls["B"]},
            "C": {"url": urls["C"]},
            "S": {
                "url": urls["S"],
                "timeouts": {"read": self.s_read},
                "circuit_breaker": {"enabled": False},
            },
            "dead": {"url": urls["dead"]},
        }
        if self.with_d:
            upstreams["D"] = {"url": urls["D"]}
        routes = [
            route("a", self.a, match={"path_prefix": "/a"}),
            route("b", self.b, match={"path_prefix": "/b"}),
            route("d", ("dead",), match={"path_prefix": "/d"}, default={"body": self.payload}),
            route("t", ("S", "C"), match={"path_prefix": "/t"}),
        ]
        if self.n:
            routes.append(route("n", ("A",), match={"path_prefix": "/n"}))
        routes.append(route("rest", (self.rest,)))
        return {**base_config(), "upstreams": upstreams, "routes": routes}

    def expected(self) -> dict[str, tuple[str, str]]:
        """path -> (X-Failover-Source, body): the upstream (or payload) that must answer."""

        def upstream(name: str) -> tuple[str, str]:
            return name, name

        return {
            "/a": upstream(self.a[0]),
            "/b": upstream(self.b[0]),
            "/n": upstream("A" if self.n else self.rest),
            "/d": ("default", self.payload),
            "/t": upstream("C" if self.s_read == "50ms" else "S"),
        }


def ten_changes() -> list[Version]:
    change = dataclasses.replace
    versions = [Version()]
    for step in (
        {"a": ("B", "A")},  # upstream order
        {"n": True},  # a route added
        {"payload": "d1", "a_connect": "500ms"},  # a payload; A replaced while serving /n
        {"s_read": "1s"},  # a timeout: S is waited for now
        {"with_d": True, "b": ("D", "C")},  # a new upstream
        {"n": False},  # a route removed
        {"rest": "B"},  # a route's only upstream
        {"with_d": False, "b": ("C", "B")},  # an upstream removed while serving /b
        {"s_read": "50ms"},  # a timeout back: S is given up on again
        {"a": ("A", "B"), "payload": "d2"},  # two changes at once
    ):
        versions.append(change(versions[-1], **step))
    return versions


async def test_ten_reloads_under_continuous_traffic_fail_or_misroute_nothing(
    tmp_path, start_reloading, http_upstream, refused_url
):
    urls = {name: (await named(http_upstream, name)).url for name in ("A", "B", "C", "D")}
    urls["S"] = (await named(http_upstream, "S", delay=0.15)).url
    urls["dead"] = refused_url
    versions = ten_changes()
    config_file = tmp_path / "config.yaml"
    write_atomically(config_file, versions[0].config(urls))
    app = await start_reloading(config_file)
    base = f"http://{LOOPBACK}:{app.port}"
    loop = asyncio.get_running_loop()

    written = 0  # the newest version on disk; the one before it was seen applied
    served: list[tuple[int, int]] = []  # (version when sent, version when answered)
    failures: list[str] = []

    async def send(client: aiohttp.ClientSession, path: str) -> tuple[str, str] | None:
        sent = written
        try:
            status, source, body = await answer_of(client, base + path)
        except (aiohttp.ClientError, TimeoutError) as exc:
            failures.append(f"{path} sent under v{sent}: {exc!r}")
            return None
        back = written
        # In force when it arrived: the version on disk, or the one before it if the poll
        # has not picked it up yet; a request in flight across a swap ends on the old one.
        valid = {versions[k].expected()[path] for k in range(max(sent - 1, 0), back + 1)}
        served.append((sent, back))
        if status != 200 or (source, body) not in valid:
            failures.append(
                f"{path} sent under v{sent}, answered under v{back}: "
                f"{status} from {source!r}: {body[:80]!r}; valid: {sorted(valid)}"
            )
        return source, body

    stop = asyncio.Event()

    async def traffic(client: aiohttp.ClientSession, paths: list[str]) -> None:
        i = 0
        while not stop.is_set():
            await send(client, paths[i % len(paths)])
            i += 1

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as client:
        fast = ["/a", "/b", "/d", "/n"]
        loops = [traffic(client, fast[i:] + fast[:i]) for i in range(4)]
        loops += [traffic(client, fast[::-1]) for _ in range(4)]
        loops += [traffic(client, ["/t"]) for _ in range(2)]
        running = [asyncio.create_task(each) for each in loops]
        try:
            await asyncio.sleep(0.3)  # traffic under v0 first
            took: list[float] = []
            d_client = None
            for k in range(1, len(versions)):
                new, old = versions[k].expected(), versions[k - 1].expected()
                changed = {path: want for path, want in new.items() if old[path] != want}
                assert changed, f"v{k} must change what some path gets"
                started = loop.time()
                write_atomically(config_file, versions[k].config(urls))
                written = k
                while changed:
                    for path, want in list(changed.items()):
                        if await send(client, path) == want:
                            del changed[path]
                    assert loop.time() - started < 10, f"v{k} not applied: {changed}"
                    await asyncio.sleep(0.01)
                took.append(loop.time() - started)
                if versions[k].with_d and d_client is None:
                    d_client = app.live.current.clients["D"]
                await asyncio.sleep(0.15)  # traffic under this version alone
            measured = ", ".join(f"{t:.2f}s" for t in took)
        finally:
            stop.set()
            await asyncio.gather(*running)
        assert not failures, f"{len(failures)} of {len(served)}:\n" + "\n".join(failures[:10])

    assert max(took) < VISIBLE_WITHIN, f"each change visible after: {measured}"
    assert app.observed.config.reloads == {"success": 10}
    assert app.observed.config.last_reload_error is None
    assert len(served) >= 1000, f"only {len(served)} requests"
    settled = [sent for sent, back in served if sent == back]
    for k in range(len(versions)):
        assert settled.count(k) >= 20, f"too little traffic under v{k} alone"
    # D went away in v8 while /b traffic was on it: its pool was closed once drained
    assert d_client is not None
    assert d_client.closed


# 2. An open breaker survives an unrelated change -----------------------------------------


async def test_an_open_breaker_stays_open_across_an_unrelated_change(
    tmp_path, start_reloading, http_upstream, refused_url, client
):
    secondary = await named(http_upstream, "secondary")
    breaker = {"consecutive_failures": 1, "open_for": "10m"}
    config = {
        **base_config(),
        "upstreams": {
            "primary": {"url": refused_url, "circuit_breaker": breaker},
            "secondary": {"url": secondary.url},
        },
        "routes": [route()],
    }
    config_file = tmp_path / "config.yaml"
    write_atomically(config_file, config)
    app = await start_reloading(config_file)
    base = f"http://{LOOPBACK}:{app.port}"

    async with client.get(base + "/x") as response:  # trips primary's breaker
        assert response.headers[SOURCE] == "secondary"
        assert "error=connection_refused; next-hop=primary" in response.headers["Proxy-Status"]
    async with client.get(base + "/x") as response:
        assert "breaker_open" in response.headers["Proxy-Status"]
    assert (await health(client, base))["upstreams"]["primary"]["circuit"]["state"] == "open"

    # unrelated: a new route, and new timeouts for the other upstream
    config["routes"] = [route("other", ("secondary",), match={"path_prefix": "/other"}), route()]
    config["upstreams"]["secondary"]["timeouts"] = {"read": "5s"}
    write_atomically(config_file, config)

    async def reloaded() -> bool:
        return "other" in (await health(client, base))["routes"]

    assert await eventually(reloaded, VISIBLE_WITHIN) < VISIBLE_WITHIN
    async with client.get(base + "/x") as response:
        assert response.status == 200
        assert response.headers[SOURCE] == "secondary"
        assert "breaker_open" in response.headers["Proxy-Status"]  # still skipped
        assert "connection_refused" not in response.headers["Proxy-Status"]  # not tried
    circuit = (await health(client, base))["upstreams"]["primary"]["circuit"]
    assert circuit["state"] == "open"
    assert circuit["retry_in_s"] > 9 * 60

    # the control: a change to primary's own settings starts it afresh, breaker closed
    config["upstreams"]["primary"]["circuit_breaker"] = {**breaker, "open_for": "9m"}
    write_atomically(config_file, config)

    async def closed() -> bool:
        state = (await health(client, base))["upstreams"]["primary"]["circuit"]["state"]
        return state == "closed"

    await eventually(closed, VISIBLE_WITHIN)
    async with client.get(base + "/x") as response:
        assert "error=connection_refused; next-hop=primary" in response.headers["Proxy-Status"]


# 3. The Kubernetes ConfigMap symlink swap -------------------------------------------------


async def test_the_configmap_symlink_swap_is_detected(
    tmp_path, start_reloading, http_upstream, client
):
    old_upstream = await named(http_upstream, "old")
    new_upstream = await named(http_upstream, "new")

    def config_to(name: str, url: str) -> dict[str, Any]:
        return {**base_config(), "upstreams": {name: {"url": url}}, "routes": [route("r", (name,))]}

    # what the kubelet builds: the file is a symlink through ..data to a dated directory
    volume = tmp_path / "cm"
    (volume / "..2026_11_23_a").mkdir(parents=True)
    (volume / "..2026_11_23_a" / "config.yaml").write_text(
        json.dumps(config_to("old", old_upstream.url))
    )
    os.symlink("..2026_11_23_a", volume / "..data")
    os.symlink("..data/config.yaml", volume / "config.yaml")
    app = await start_reloading(volume / "config.yaml")
    base = f"http://{LOOPBACK}:{app.port}"
    assert (await answer_of(client, base + "/x"))[1:] == ("old", "old")

    # and how it updates one: a new dated directory, ..data swapped to it in one rename
    (volume / "..2026_11_23_b").mkdir()
    (volume / "..2026_11_23_b" / "config.yaml").write_text(
        json.dumps(config_to("new", new_upstream.url))
    )
    os.symlink("..2026_11_23_b", volume / "..data_tmp")
    os.replace(volume / "..data_tmp", volume / "..data")
    shutil.rmtree(volume / "..2026_11_23_a")

    async def new_config() -> bool:
        return (await answer_of(client, base + "/x"))[1:] == ("new", "new")

    took = await eventually(new_config, VISIBLE_WITHIN)
    assert took < VISIBLE_WITHIN
    assert app.observed.config.reloads == {"success": 1}


# 5. A removed upstream is drained, then closed ---------------------------------------------


async def test_a_removed_upstream_finishes_its_in_flight_request_before_its_pool_closes(
    tmp_path, start_reloading, http_upstream, client
):
    slow = await named(
        http_upstream, "slow", delay=1.5
    )  # long enough to stay in flight on a loaded machine
    fast = await named(http_upstream, "fast")
    config = {
        **base_config(poll="0s"),  # reloaded by hand below, at a known moment
        "upstreams": {"slow": {"url": slow.url}},
        "routes": [route("r", ("slow",))],
    }
    config_file = tmp_path / "config.yaml"
    write_atomically(config_file, config)
    app = await start_reloading(config_file)
    base = f"http://{LOOPBACK}:{app.port}"
    assert app.reloader is not None

    in_flight = asyncio.create_task(answer_of(client, base + "/x"))
    await eventually(lambda: slow.hits == 1, 1)  # the slow call is out
    old_pool = app.live.current.clients["slow"]

    write_atomically(
        config_file,
        {**config, "upstreams": {"fast": {"url": fast.url}}, "routes": [route("r", ("fast",))]},
    )
    result = await app.reloader.reload("test")
    assert result.applied, result.message
    assert "removed or replaced ['slow']" in result.message
    assert "slow" not in app.live.current.clients

    assert await answer_of(client, base + "/x") == (200, "fast", "fast")  # the new config
    assert not in_flight.done()
    assert not old_pool.closed  # still serving the call that was out

    assert await in_flight == (200, "slow", "slow")  # finished on the old config
    await eventually(lambda: old_pool.closed, 1)
    assert slow.hits == 1


async def test_a_request_in_flight_fails_over_to_a_replaced_upstream_on_the_old_config(
    tmp_path, start_reloading, http_upstream, client
):
    slow = await named(http_upstream, "slow", delay=0.6)
    backup = await named(http_upstream, "backup")
    config = {
        **base_config(poll="0s"),
        "upstreams": {
            "slow": {"url": slow.url, "timeouts": {"read": "300ms"}},
            "backup": {"url": backup.url},
        },
        "routes": [route("r", ("slow", "backup"))],
    }
    config_file = tmp_path / "config.yaml"
    write_atomically(config_file, config)
    app = await start_reloading(config_file)
    base = f"http://{LOOPBACK}:{app.port}"
    assert app.reloader is not None

    async def get() -> tuple[int, str, str, str]:
        async with client.get(base + "/x") as response:
            status_header = response.headers.get("Proxy-Status", "")
            return response.status, response.headers[SOURCE], await response.text(), status_header

    in_flight = asyncio.create_task(get())
    await eventually(lambda: slow.hits == 1, 1)  # waiting on slow
    config["upstreams"]["backup"]["timeouts"] = {"read": "5s"}  # backup is replaced
    write_atomically(config_file, config)
    result = await app.reloader.reload("test")
    assert result.applied, result.message
    assert "removed or replaced ['backup']" in result.message

    status, source, body, proxy_status = await in_flight  # slow times out: on to backup
    assert (status, source, body) == (200, "backup", "backup")
    assert 'details="read_timeout"' in proxy_status
