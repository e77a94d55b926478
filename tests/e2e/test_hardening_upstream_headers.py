"""An upstream cannot speak for the proxy: its own copies of the proxy's headers, and
``Cache-Status``/``Proxy-Status`` members in the proxy's name, never reach a client;
other proxies' members do, before ours (RFC 9209/9211 lists grow hop by hop)."""

from __future__ import annotations

import asyncio

import aiohttp
from multidict import CIMultiDict

from tests.conftest import FakeClock, read_request_head, route

BODY = b'{"drivers": [1]}'


def spoofing_answer(status: bytes = b"200 OK") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
        b"Connection: close\r\n"
        b"X-Failover-Source: cache\r\n"
        b"X-Failover-Health: healthy\r\n"
        b"Cache-Status: failover-proxy; hit; stale, other-cache; hit\r\n"
        b"Proxy-Status: failover-proxy; error=x, edge; error=y\r\n"
        b"\r\n" + BODY
    )


class Spoofer:
    """A raw upstream that answers ``answer`` (exact bytes), or hangs up when down."""

    def __init__(self) -> None:
        self.answer = spoofing_answer()
        self.down = False

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        if not self.down:
            writer.write(self.answer)
            await writer.drain()


async def start(raw_upstream, start_proxy, spoofer: Spoofer, clock: FakeClock) -> str:
    upstream = await raw_upstream(spoofer)
    config = {
        "upstreams": {"primary": {"url": upstream.url, "circuit_breaker": {"enabled": False}}},
        "routes": [route(upstreams=("primary",), cache={"stale_for": "1h", "fresh_for": "10s"})],
    }
    return await start_proxy(config, clock=clock)


async def get(client: aiohttp.ClientSession, url: str) -> tuple[int, CIMultiDict[str]]:
    async with client.get(url) as response:
        assert await response.read() == BODY
        return response.status, CIMultiDict(response.headers)


def ours(headers: CIMultiDict[str]) -> tuple[list[str], list[str]]:
    return headers.getall("X-Failover-Source"), headers.getall("X-Failover-Health")


async def test_a_relayed_answer_carries_only_our_source_and_other_proxies_members(
    raw_upstream, start_proxy, client
):
    proxy = await start(raw_upstream, start_proxy, Spoofer(), FakeClock())
    status, headers = await get(client, proxy + "/x")
    assert status == 200
    assert ours(headers) == (["primary"], ["healthy"])
    assert headers.getall("Cache-Status") == [
        "other-cache; hit",
        "failover-proxy; fwd=uri-miss; fwd-status=200; stored",
    ]
    assert headers.getall("Proxy-Status") == ["edge; error=y"]


async def test_a_fresh_hit_carries_only_our_source_and_other_proxies_members(
    raw_upstream, start_proxy, client
):
    proxy = await start(raw_upstream, start_proxy, Spoofer(), FakeClock())
    await get(client, proxy + "/x")
    status, headers = await get(client, proxy + "/x")
    assert status == 200
    assert ours(headers) == (["cache"], ["healthy"])
    assert headers.getall("Cache-Status") == ["other-cache; hit", "failover-proxy; hit"]
    assert headers.getall("Proxy-Status") == ["edge; error=y"]


async def test_a_stale_answer_is_marked_stale_by_us_alone(raw_upstream, start_proxy, client):
    clock, spoofer = FakeClock(), Spoofer()
    proxy = await start(raw_upstream, start_proxy, spoofer, clock)
    await get(client, proxy + "/x")
    spoofer.down = True
    clock.now += 60
    status, headers = await get(client, proxy + "/x")
    assert status == 200
    assert ours(headers) == (["cache"], ["critical"])
    assert headers.getall("Cache-Status") == ["other-cache; hit", "failover-proxy; hit; stale"]
    upstream_members, our_member = headers.getall("Proxy-Status")
    assert upstream_members == "edge; error=y"
    assert our_member.startswith("failover-proxy; error=connection_terminated; next-hop=primary")


async def test_a_passed_through_error_keeps_other_proxies_members_before_ours(
    raw_upstream, start_proxy, client
):
    spoofer = Spoofer()
    spoofer.answer = spoofing_answer(b"503 Service Unavailable")
    proxy = await start(raw_upstream, start_proxy, spoofer, FakeClock())
    status, headers = await get(client, proxy + "/x")
    assert status == 503
    assert ours(headers) == (["primary"], ["critical"])
    assert headers.getall("Cache-Status") == ["other-cache; hit"]
    assert headers.getall("Proxy-Status") == [
        "edge; error=y",
        'failover-proxy; received-status=503; next-hop=primary; details="http_5xx"',
    ]


async def test_an_answer_refreshed_in_the_background_is_stored_without_our_members(
    raw_upstream, start_proxy, client
):
    clock, spoofer = FakeClock(), Spoofer()
    clean = spoofer.answer
    for spoofed in (b"X-Failover-Source", b"X-Failover-Health", b"Cache-Status", b"Proxy"):
        clean = b"".join(line for line in clean.splitlines(keepends=True) if spoofed not in line)
    spoofer.answer = clean
    upstream = await raw_upstream(spoofer)
    config = {
        "upstreams": {"primary": {"url": upstream.url, "circuit_breaker": {"enabled": False}}},
        "routes": [
            route(
                upstreams=("primary",),
                cache={"stale_for": "1h", "fresh_for": "10s", "stale_while_revalidate": "1m"},
            )
        ],
    }
    proxy = await start_proxy(config, clock=clock)
    await get(client, proxy + "/x")
    spoofer.answer = spoofing_answer()
    clock.now += 20
    _, headers = await get(client, proxy + "/x")  # served while one call refreshes it
    assert headers.getall("Cache-Status") == ["failover-proxy; hit; stale; detail=revalidating"]
    for _ in range(200):  # until the refreshed copy is stored
        _, headers = await get(client, proxy + "/x")
        if "revalidating" not in headers["Cache-Status"]:
            break
        await asyncio.sleep(0.01)
    assert upstream.connections == 2
    assert ours(headers) == (["cache"], ["healthy"])
    assert headers.getall("Cache-Status") == ["other-cache; hit", "failover-proxy; hit"]
    assert headers.getall("Proxy-Status") == ["edge; error=y"]
