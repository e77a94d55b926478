"""The cache's bounds, end to end: a stream of large distinct answers never takes the
store past ``cache.max_size``, the least recently used answers are the ones that go, an
answer over ``max_entry_size`` streams through intact without being kept, and
``cache.max_entries`` evicts the least recently used, not the oldest stored.

What survived is checked the way a user sees it: the upstream goes down and each path
either comes back from the cache (``X-Failover-Source: cache``, the original bytes) or
as the upstream's own 503 (no stale copy).
"""

from __future__ import annotations

import hashlib
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.app import ProxyApp
from proxy.cache.store import Store
from tests.conftest import FakeClock, route

KiB = 1024
OVERHEAD = 256  # what the store counts per entry besides its body and headers


def body_for(path: str, size: int) -> bytes:
    """``size`` bytes that no other path's body shares."""
    seed = hashlib.sha256(path.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class Origin:
    """Answers each path with its own body (``sizes[path]`` bytes, else ``size``) until
    it is told to fail; then every request gets a 503."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.sizes: dict[str, int] = {}
        self.failing = False

    def body(self, path: str) -> bytes:
        return body_for(path, self.sizes.get(path, self.size))

    async def __call__(self, request: web.Request) -> web.Response:
        if self.failing:
            return web.Response(status=503, text="down")
        return web.Response(body=self.body(request.path), content_type="application/octet-stream")


@pytest.fixture
def started(monkeypatch) -> list[ProxyApp]:
    """The ProxyApp objects start_proxy starts (it hands back only their URLs)."""
    apps: list[ProxyApp] = []
    original = ProxyApp.start

    async def start(self: ProxyApp) -> None:
        await original(self)
        apps.append(self)

    monkeypatch.setattr(ProxyApp, "start", start)
    return apps


async def cached_proxy(
    http_upstream,
    start_proxy,
    started: list[ProxyApp],
    origin: Origin,
    *,
    cache: dict[str, Any],
    route_cache: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
    clock: FakeClock | None = None,
) -> tuple[str, Store]:
    upstream = await http_upstream(origin)
    config: dict[str, Any] = {
        "upstreams": {"primary": {"url": upstream.url, "circuit_breaker": {"enabled": False}}},
        "routes": [route(upstreams=("primary",), cache={"stale_for": "1h", **(route_cache or {})})],
        "cache": cache,
    }
    if limits is not None:
        config["limits"] = limits
    base = await start_proxy(config, clock=clock or FakeClock())
    assert len(started) == 1
    return base, started[0].handler.store


async def fetch(client: aiohttp.ClientSession, url: str) -> tuple[int, str, bytes]:
    async with client.get(url) as response:
        body = await response.read()
        return response.status, response.headers["X-Failover-Source"], body


async def assert_from_cache(client: aiohttp.ClientSession, base: str, path: str, body: bytes):
    status, source, received = await fetch(client, base + path)
    assert (status, source) == (200, "cache"), f"{path} has no stale copy"
    assert received == body, f"{path} came back from the cache with other bytes"


async def assert_not_cached(client: aiohttp.ClientSession, base: str, path: str):
    status, source, received = await fetch(client, base + path)
    assert (status, source, received) == (503, "primary", b"down"), f"{path} was kept"


async def test_the_byte_bound_holds_under_a_stream_of_large_distinct_answers(
    http_upstream, start_proxy, started, client
):
    max_size, size, count = 64 * KiB, 10 * KiB, 100
    origin = Origin(size)
    base, store = await cached_proxy(
        http_upstream,
        start_proxy,
        started,
        origin,
        cache={"max_size": "64KiB", "max_entries": 1000},  # the bytes bind, not the count
    )
    assert store.max_bytes == max_size
    paths = [f"/item/{i}" for i in range(count)]
    for path in paths:
        status, source, body = await fetch(client, base + path)
        assert (status, source) == (200, "primary")
        assert body == origin.body(path)
        assert 0 < store.bytes <= max_size, f"after {path}: {store.bytes} bytes kept"
    kept = len(store)
    # Each entry costs at least its body and overhead, and its headers are well under 1 KiB:
    # the store holds as many as fit, and no more.
    assert max_size // (size + OVERHEAD + KiB) <= kept <= max_size // (size + OVERHEAD)
    assert store.evictions == count - kept

    origin.failing = True
    for path in paths[-kept:]:  # the most recently fetched are all there, byte for byte
        await assert_from_cache(client, base, path, origin.body(path))
    for path in paths[:-kept]:  # every older one was evicted
        await assert_not_cached(client, base, path)


async def test_an_answer_bigger_than_the_whole_cache_passes_without_evicting_anything(
    http_upstream, start_proxy, started, client
):
    origin = Origin(10 * KiB)
    origin.sizes["/huge"] = 100 * KiB  # over max_size, under max_entry_size (1MiB default)
    base, store = await cached_proxy(
        http_upstream, start_proxy, started, origin, cache={"max_size": "64KiB"}
    )
    for path in ("/a", "/b"):
        await fetch(client, base + path)
    kept = store.bytes
    assert await fetch(client, base + "/huge") == (200, "primary", origin.body("/huge"))
    assert store.bytes == kept
    assert store.evictions == 0

    origin.failing = True
    await assert_not_cached(client, base, "/huge")
    for path in ("/a", "/b"):
        await assert_from_cache(client, base, path, origin.body(path))


@pytest.mark.parametrize(
    ("size", "kept"),
    [
        (16 * KiB, True),  # exactly max_entry_size: kept
        (16 * KiB + 1, False),  # read whole before the commit point, but too large to keep
        (200 * KiB, False),  # over max_buffered_response: streamed after the commit point
    ],
)
async def test_an_answer_over_max_entry_size_streams_through_intact_and_is_not_kept(
    size, kept, http_upstream, start_proxy, started, client
):
    origin = Origin(1 * KiB)
    origin.sizes["/big"] = size
    base, store = await cached_proxy(
        http_upstream,
        start_proxy,
        started,
        origin,
        cache={"max_size": "1MiB"},
        route_cache={"max_entry_size": "16KiB"},
        limits={"max_buffered_response": "32KiB"},
    )
    await fetch(client, base + "/small")
    assert len(store) == 1
    status, source, body = await fetch(client, base + "/big")
    assert (status, source) == (200, "primary")
    assert len(body) == size
    assert body == origin.body("/big")
    assert len(store) == (2 if kept else 1)

    origin.failing = True
    if kept:
        await assert_from_cache(client, base, "/big", origin.body("/big"))
    else:
        await assert_not_cached(client, base, "/big")
    await assert_from_cache(client, base, "/small", origin.body("/small"))


@pytest.mark.parametrize(
    "fresh_for",
    [
        "10s",  # the re-read is a fresh hit: only the store's recency can save it
        "0s",  # the re-read goes to the upstream and stores the answer again
    ],
)
async def test_max_entries_evicts_the_least_recently_used(
    fresh_for, http_upstream, start_proxy, started, client
):
    clock, origin = FakeClock(), Origin(1 * KiB)
    base, store = await cached_proxy(
        http_upstream,
        start_proxy,
        started,
        origin,
        cache={"max_size": "1MiB", "max_entries": 3},
        route_cache={"fresh_for": fresh_for},
        clock=clock,
    )
    for path in ("/a", "/b", "/c"):
        await fetch(client, base + path)
    status, source, body = await fetch(client, base + "/a")  # /a is now the most recent
    assert (status, body) == (200, origin.body("/a"))
    assert source == ("cache" if fresh_for == "10s" else "primary")
    assert len(store) == 3
    await fetch(client, base + "/d")  # one too many: the least recently used, /b, goes
    assert len(store) == 3
    assert store.evictions == 1

    origin.failing = True
    clock.now += 11  # past fresh_for: every request asks the upstream first
    await assert_not_cached(client, base, "/b")
    for path in ("/a", "/c", "/d"):
        await assert_from_cache(client, base, path, origin.body(path))
