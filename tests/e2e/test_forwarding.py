"""End to end: what crosses the proxy, byte for byte: headers in both directions,
bodyless answers, chunked answers, and request targets that must never go upstream."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from multidict import CIMultiDict

from tests.conftest import raw_exchange, read_request_head, route


def one_upstream(url: str, **route_extra: object) -> dict[str, object]:
    return {
        "upstreams": {"primary": {"url": url}},
        "routes": [route(upstreams=("primary",), **route_extra)],
    }


async def test_hop_by_hop_headers_do_not_cross_in_either_direction(
    http_upstream, start_proxy, client
):
    async def answer(request: web.Request) -> web.Response:
        headers = CIMultiDict(
            [
                ("Connection", "X-Upstream-Private"),
                ("X-Upstream-Private", "secret"),
                ("Keep-Alive", "timeout=5"),
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
                ("X-App", "kept"),
            ]
        )
        return web.Response(text="ok", headers=headers)

    upstream = await http_upstream(answer)
    proxy = await start_proxy(one_upstream(upstream.url))
    sent = {
        "Connection": "keep-alive, X-Client-Private",
        "X-Client-Private": "secret",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "TE": "trailers",
        "X-Kept": "yes",
        "X-Forwarded-For": "10.1.2.3",
    }
    async with client.get(proxy + "/h", headers=sent) as response:
        assert response.headers.getall("Set-Cookie") == ["a=1", "b=2"]
        assert response.headers["X-App"] == "kept"
        assert "X-Upstream-Private" not in response.headers
        assert "Keep-Alive" not in response.headers
        assert response.headers["Via"] == "1.1 failover-proxy"
    seen = upstream.requests[0]["headers"]
    for name in ("X-Client-Private", "Proxy-Authorization", "TE"):
        assert name not in seen
    assert seen["X-Kept"] == "yes"
    assert seen["X-Forwarded-For"] == "10.1.2.3, 127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "http"
    assert seen["X-Forwarded-Host"] == proxy.removeprefix("http://")
    assert seen["Via"] == "1.1 failover-proxy"


async def test_no_headers_are_invented_upstream(raw_upstream, start_proxy):
    seen: list[bytes] = []

    async def record(reader, writer):
        seen.append(await read_request_head(reader))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()

    upstream = await raw_upstream(record)
    proxy = await start_proxy(one_upstream(upstream.url))
    await raw_exchange(proxy, b"GET /plain HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
    head = seen[0].lower()
    for invented in (b"user-agent", b"accept-encoding", b"accept:", b"content-type", b"cookie"):
        assert invented not in head


async def test_the_upstream_host_is_sent_unless_preserve_host(http_upstream, start_proxy, client):
    upstream = await http_upstream(lambda r: asyncio.sleep(0, web.Response()))
    config = {
        "upstreams": {
            "a": {"url": upstream.url},
            "b": {"url": upstream.url, "preserve_host": True},
        },
        "routes": [
            {"name": "a", "match": {"path": "/a"}, "upstreams": ["a"]},
            {"name": "b", "match": {"path": "/b"}, "upstreams": ["b"]},
        ],
    }
    proxy = await start_proxy(config)
    for path in ("/a", "/b"):
        async with client.get(proxy + path, headers={"Host": "app.example"}):
            pass
    assert upstream.requests[0]["headers"]["Host"] == upstream.url.removeprefix("http://")
    assert upstream.requests[1]["headers"]["Host"] == "app.example"


async def test_head_keeps_the_content_length_of_the_get(raw_upstream, start_proxy):
    async def head(reader, writer):
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: text/plain\r\n\r\n")
        await writer.drain()

    upstream = await raw_upstream(head)
    proxy = await start_proxy(one_upstream(upstream.url))
    raw = await raw_exchange(
        proxy, b"HEAD /file HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"
    )
    head_text, _, body = raw.partition(b"\r\n\r\n")
    assert head_text.startswith(b"HTTP/1.1 200")
    assert b"Content-Length: 1234" in head_text
    assert body == b""


@pytest.mark.parametrize("status", [204, 304])
async def test_bodyless_statuses_stay_bodyless(status, http_upstream, start_proxy):
    upstream = await http_upstream(lambda r: asyncio.sleep(0, web.Response(status=status)))
    proxy = await start_proxy(one_upstream(upstream.url))
    raw = await raw_exchange(proxy, b"GET /x HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
    head_text, _, body = raw.partition(b"\r\n\r\n")
    assert head_text.startswith(b"HTTP/1.1 %d" % status)
    assert b"Transfer-Encoding" not in head_text
    assert body == b""


async def test_chunked_answer_of_any_size_arrives_whole(http_upstream, start_proxy, client):
    payload = bytes(range(256)) * 8192  # 2 MiB, over the buffering limit

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(payload), 100_000):
            await response.write(payload[start : start + 100_000])
        await response.write_eof()
        return response

    upstream = await http_upstream(chunked)
    proxy = await start_proxy(one_upstream(upstream.url))
    async with client.get(proxy + "/stream") as response:
        assert await response.read() == payload
        assert response.headers["X-Failover-Source"] == "primary"


async def test_expect_100_continue_is_answered_and_not_forwarded(
    http_upstream, start_proxy, client
):
    upstream = await http_upstream(lambda r: asyncio.sleep(0, web.Response(text="stored")))
    proxy = await start_proxy(one_upstream(upstream.url))
    async with client.put(proxy + "/f", data=b"data", expect100=True) as response:
        assert await response.text() == "stored"
    assert upstream.requests[0]["body"] == b"data"
    assert "Expect" not in upstream.requests[0]["headers"]


@pytest.mark.parametrize(
    "target",
    [
        b"/a/../secret",
        b"/a/./b",
        b"/%2e%2e/secret",
        b"/a/%2E%2E/secret",
        b"/a%2fb",
        b"/a%5cb",
        b"/a%00b",
        b"/a\\..\\b",
        b"/bad%zzescape",
        b"/public/..;/admin",
        b"/a/.;x/b",
        b"*",
    ],
)
async def test_path_escapes_get_400_and_never_reach_an_upstream(target, http_upstream, start_proxy):
    upstream = await http_upstream(lambda r: asyncio.sleep(0, web.Response()))
    proxy = await start_proxy(one_upstream(upstream.url))
    raw = await raw_exchange(
        proxy, b"GET " + target + b" HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"
    )
    status_line, _, rest = raw.partition(b"\r\n")
    assert status_line.split()[1] == b"400"
    assert b"X-Failover-Source: none" in rest
    assert upstream.hits == 0


async def test_encoded_letters_are_matched_canonically_and_forwarded_as_sent(
    http_upstream, start_proxy
):
    """Routing matches the canonical form (so ``/%61dmin`` cannot slip past the route
    for ``/admin``); the upstream gets the target byte for byte (the same resource)."""
    admin = await http_upstream(lambda r: asyncio.sleep(0, web.Response(text="admin")))
    public = await http_upstream(lambda r: asyncio.sleep(0, web.Response(text="public")))
    config = {
        "upstreams": {"admin": {"url": admin.url}, "public": {"url": public.url}},
        "routes": [
            {"name": "admin", "match": {"path_prefix": "/admin"}, "upstreams": ["admin"]},
            {"name": "rest", "upstreams": ["public"]},
        ],
    }
    proxy = await start_proxy(config)
    raw = await raw_exchange(
        proxy, b"GET /%61dmin/x%7e HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    assert raw.endswith(b"admin")
    assert admin.requests[0]["path_qs"] == "/%61dmin/x%7e"
    assert public.hits == 0


async def test_absolute_form_target_never_chooses_the_upstream(http_upstream, start_proxy):
    upstream = await http_upstream(lambda r: asyncio.sleep(0, web.Response(text="configured")))
    proxy = await start_proxy(one_upstream(upstream.url))
    request = (
        b"GET http://169.254.169.254/latest?x=1 HTTP/1.1\r\nHost: evil\r\nConnection: close\r\n\r\n"
    )
    raw = await raw_exchange(proxy, request)
    assert raw.endswith(b"configured")
    assert upstream.requests[0]["path_qs"] == "/latest?x=1"


async def test_no_matching_route_is_a_404_from_the_proxy(http_upstream, start_proxy, client):
    upstream = await http_upstream(lambda r: asyncio.sleep(0, web.Response()))
    config = {
        "upstreams": {"primary": {"url": upstream.url}},
        "routes": [
            {
                "name": "api",
                "match": {"path_prefix": "/api", "methods": ["GET"]},
                "upstreams": ["primary"],
            }
        ],
    }
    proxy = await start_proxy(config)
    for method, path in (("GET", "/other"), ("POST", "/api/x")):
        async with client.request(method, proxy + path) as response:
            assert response.status == 404
            assert response.headers["X-Failover-Source"] == "none"
    assert upstream.hits == 0


async def test_header_names_are_configurable(refused_url, start_proxy, client):
    config = {
        "headers": {"source": "X-Acme-Source", "health": "X-Acme-Health"},
        "upstreams": {"primary": {"url": refused_url}},
        "routes": [route(upstreams=("primary",), default={"body": "fallback"})],
    }
    proxy = await start_proxy(config)
    async with client.get(proxy + "/x") as response:
        assert response.headers["X-Acme-Source"] == "default"
        assert response.headers["X-Acme-Health"] == "critical"
        assert "X-Failover-Source" not in response.headers


async def test_a_clients_own_x_forwarded_host_never_reaches_the_upstream(
    http_upstream, start_proxy
):
    upstream = await http_upstream(lambda r: asyncio.sleep(0, web.Response()))
    proxy = await start_proxy(one_upstream(upstream.url))
    await raw_exchange(proxy, b"GET /x HTTP/1.0\r\nX-Forwarded-Host: evil.example\r\n\r\n")
    await raw_exchange(
        proxy, b"GET /y HTTP/1.0\r\nHost: app\r\nX-Forwarded-Host: evil.example\r\n\r\n"
    )
    assert "X-Forwarded-Host" not in upstream.requests[0]["headers"]
    assert upstream.requests[1]["headers"].getall("X-Forwarded-Host") == ["app"]
