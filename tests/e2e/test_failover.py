"""End to end: the failover chain as a client sees it, against misbehaving loopback
upstreams. Each test checks status, body, X-Failover-Source/-Health, Proxy-Status and
how many requests each upstream received."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import read_request_head, route

FAST = {"connect": "300ms", "read": "300ms"}


def upstreams(primary: str, secondary: str | None = None) -> dict[str, object]:
    result: dict[str, object] = {"primary": {"url": primary, "timeouts": FAST}}
    if secondary is not None:
        result["secondary"] = {"url": secondary, "timeouts": FAST}
    return result


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"served_by": "secondary"})


async def hang(request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.Response()


async def start_pair(http_upstream, start_proxy, primary_handler, **route_extra):
    """A misbehaving primary, a good secondary, and the proxy in front of both."""
    primary = await http_upstream(primary_handler)
    secondary = await http_upstream(ok)
    config = {"upstreams": upstreams(primary.url, secondary.url), "routes": [route(**route_extra)]}
    return primary, secondary, await start_proxy(config)


async def test_healthy_primary_serves_and_secondary_is_not_called(
    http_upstream, start_proxy, client
):
    primary, secondary, proxy = await start_pair(
        http_upstream, start_proxy, lambda r: asyncio.sleep(0, web.json_response({"ok": 1}))
    )
    async with client.get(proxy + "/api/x?a=1") as response:
        assert response.status == 200
        assert await response.json() == {"ok": 1}
        assert response.headers["X-Failover-Source"] == "primary"
        assert response.headers["X-Failover-Health"] == "healthy"
        assert "Proxy-Status" not in response.headers
    assert (primary.hits, secondary.hits) == (1, 0)
    assert primary.requests[0]["path_qs"] == "/api/x?a=1"


async def test_refused_primary_fails_over_to_secondary(
    refused_url, http_upstream, start_proxy, client
):
    secondary = await http_upstream(ok)
    proxy = await start_proxy(
        {"upstreams": upstreams(refused_url, secondary.url), "routes": [route()]}
    )
    async with client.get(proxy + "/x") as response:
        assert response.status == 200
        assert await response.json() == {"served_by": "secondary"}
        assert response.headers["X-Failover-Source"] == "secondary"
        assert response.headers["X-Failover-Health"] == "degraded"
        assert response.headers["Proxy-Status"] == (
            "failover-proxy; error=connection_refused; next-hop=primary; "
            'details="connection_refused"'
        )


async def test_5xx_primary_fails_over_once_per_attempt(http_upstream, start_proxy, client):
    primary, secondary, proxy = await start_pair(
        http_upstream,
        start_proxy,
        lambda r: asyncio.sleep(0, web.Response(status=503, text="down")),
    )
    async with client.get(proxy + "/x") as response:
        assert response.status == 200
        assert response.headers["X-Failover-Source"] == "secondary"
        assert "received-status=503" in response.headers["Proxy-Status"]
    assert (primary.hits, secondary.hits) == (1, 1)


async def test_hanging_primary_times_out_and_fails_over(http_upstream, start_proxy, client):
    _primary, _secondary, proxy = await start_pair(http_upstream, start_proxy, hang)
    async with client.get(proxy + "/x") as response:
        assert response.status == 200
        assert response.headers["X-Failover-Source"] == "secondary"
        assert "error=http_response_timeout" in response.headers["Proxy-Status"]
        assert 'details="read_timeout"' in response.headers["Proxy-Status"]


async def test_reset_before_response_fails_over(raw_upstream, http_upstream, start_proxy, client):
    async def reset(reader, writer):
        await read_request_head(reader)
        writer.transport.abort()

    primary = await raw_upstream(reset)
    secondary = await http_upstream(ok)
    proxy = await start_proxy(
        {"upstreams": upstreams(primary.url, secondary.url), "routes": [route()]}
    )
    async with client.get(proxy + "/x") as response:
        assert response.status == 200
        assert response.headers["X-Failover-Source"] == "secondary"
        assert 'details="connection_reset"' in response.headers["Proxy-Status"]


async def test_small_body_cut_short_fails_over_before_anything_is_sent(
    raw_upstream, http_upstream, start_proxy, client
):
    async def short_body(reader, writer):
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        await writer.drain()
        writer.transport.abort()

    primary = await raw_upstream(short_body)
    secondary = await http_upstream(ok)
    proxy = await start_proxy(
        {"upstreams": upstreams(primary.url, secondary.url), "routes": [route()]}
    )
    async with client.get(proxy + "/x") as response:
        assert response.status == 200
        assert await response.json() == {"served_by": "secondary"}
        assert 'details="body_truncated"' in response.headers["Proxy-Status"]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_large_body_cut_short_aborts_the_client_connection(
    framing, raw_upstream, start_proxy, client
):
    async def big_then_reset(reader, writer):
        await read_request_head(reader)
        if framing == "chunked":
            chunk = b"y" * 65536
            head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            writer.write(head + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 8)
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2097152\r\n\r\n" + b"y" * 524288)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()

    primary = await raw_upstream(big_then_reset)
    proxy = await start_proxy(
        {"upstreams": upstreams(primary.url), "routes": [route(upstreams=("primary",))]}
    )
    async with client.get(proxy + "/big") as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


async def test_trickling_body_within_read_timeout_arrives_whole(raw_upstream, start_proxy, client):
    async def trickle(reader, writer):
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        for byte in b"hello":
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)

    primary = await raw_upstream(trickle)
    proxy = await start_proxy(
        {"upstreams": upstreams(primary.url), "routes": [route(upstreams=("primary",))]}
    )
    async with client.get(proxy + "/x") as response:
        assert await response.read() == b"hello"
        assert response.headers["X-Failover-Source"] == "primary"


async def test_429_with_short_retry_after_is_retried_on_the_same_upstream(
    http_upstream, start_proxy, client
):
    answers = iter(
        [web.Response(status=429, headers={"Retry-After": "0"}), web.Response(text="late")]
    )
    primary = await http_upstream(lambda r: asyncio.sleep(0, next(answers)))
    secondary = await http_upstream(ok)
    config = {
        "upstreams": upstreams(primary.url, secondary.url),
        "routes": [route(retry={"attempts": 2})],
    }
    proxy = await start_proxy(config)
    async with client.get(proxy + "/x") as response:
        assert await response.text() == "late"
        assert response.headers["X-Failover-Source"] == "primary"
        assert response.headers["X-Failover-Health"] == "healthy"
        assert 'details="http_429"' in response.headers["Proxy-Status"]
    assert (primary.hits, secondary.hits) == (2, 0)


async def test_429_with_long_retry_after_moves_on_without_waiting(
    http_upstream, start_proxy, client
):
    primary = await http_upstream(
        lambda r: asyncio.sleep(0, web.Response(status=429, headers={"Retry-After": "120"}))
    )
    secondary = await http_upstream(ok)
    config = {
        "upstreams": upstreams(primary.url, secondary.url),
        "routes": [route(retry={"attempts": 3})],
    }
    proxy = await start_proxy(config)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with client.get(proxy + "/x") as response:
        assert response.headers["X-Failover-Source"] == "secondary"
    assert loop.time() - started < 2
    assert (primary.hits, secondary.hits) == (1, 1)


async def test_retries_on_the_same_upstream_up_to_attempts(http_upstream, start_proxy, client):
    answers = iter([web.Response(status=502), web.Response(status=502), web.Response(text="third")])
    primary = await http_upstream(lambda r: asyncio.sleep(0, next(answers)))
    secondary = await http_upstream(ok)
    config = {
        "upstreams": upstreams(primary.url, secondary.url),
        "routes": [route(retry={"attempts": 3, "backoff": "1ms"})],
    }
    proxy = await start_proxy(config)
    async with client.get(proxy + "/x") as response:
        assert await response.text() == "third"
        assert response.headers["X-Failover-Health"] == "healthy"
        assert response.headers["Proxy-Status"].count("received-status=502") == 2
    assert (primary.hits, secondary.hits) == (3, 0)


async def test_default_payload_when_every_upstream_fails(
    refused_url, http_upstream, start_proxy, client
):
    secondary = await http_upstream(lambda r: asyncio.sleep(0, web.Response(status=500)))
    default = {
        "status": 200,
        "headers": {"Content-Type": "application/json"},
        "body": '{"items": []}',
    }
    config = {
        "upstreams": upstreams(refused_url, secondary.url),
        "routes": [route(default=default)],
    }
    proxy = await start_proxy(config)
    async with client.get(proxy + "/x") as response:
        assert response.status == 200
        assert await response.json() == {"items": []}
        assert response.headers["X-Failover-Source"] == "default"
        assert response.headers["X-Failover-Health"] == "critical"
        assert "connection_refused" in response.headers["Proxy-Status"]
        assert "received-status=500" in response.headers["Proxy-Status"]


async def test_default_payload_from_a_file_next_to_the_config(
    refused_url, start_proxy, client, tmp_path
):
    (tmp_path / "fallback.json").write_text('{"from": "file"}')
    default = {"headers": {"Content-Type": "application/json"}, "body_file": "fallback.json"}
    config = {
        "upstreams": upstreams(refused_url),
        "routes": [route(upstreams=("primary",), default=default)],
    }
    proxy = await start_proxy(config)
    async with client.get(proxy + "/x") as response:
        assert await response.json() == {"from": "file"}


async def test_last_upstreams_own_error_is_passed_through(
    refused_url, http_upstream, start_proxy, client
):
    async def overloaded(request: web.Request) -> web.Response:
        return web.json_response({"app": "busy"}, status=503, headers={"Retry-After": "30"})

    secondary = await http_upstream(overloaded)
    proxy = await start_proxy(
        {"upstreams": upstreams(refused_url, secondary.url), "routes": [route()]}
    )
    async with client.get(proxy + "/x") as response:
        assert response.status == 503
        assert await response.json() == {"app": "busy"}
        assert response.headers["Retry-After"] == "30"
        assert response.headers["X-Failover-Source"] == "secondary"
        assert response.headers["X-Failover-Health"] == "critical"


async def test_all_refused_without_default_is_a_503_naming_each_try(
    refused_url, start_proxy, client
):
    config = {"upstreams": upstreams(refused_url, refused_url), "routes": [route()]}
    proxy = await start_proxy(config)
    async with client.get(proxy + "/x") as response:
        assert response.status == 503
        assert response.headers["X-Failover-Source"] == "none"
        assert response.headers["X-Failover-Health"] == "critical"
        assert response.headers["Retry-After"] == "1"
        report = json.loads(await response.read())
        assert report["route"] == "r"
        assert [t["upstream"] for t in report["tried"]] == ["primary", "secondary"]
        assert {t["failure"] for t in report["tried"]} == {"connection_refused"}


async def test_deadline_ends_the_chain_with_504(http_upstream, start_proxy, client):
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.Response()

    primary = await http_upstream(slow)
    secondary = await http_upstream(ok)
    config = {
        "upstreams": {
            "primary": {"url": primary.url, "timeouts": {"connect": "1s", "read": "10s"}},
            "secondary": {"url": secondary.url},
        },
        "routes": [route(deadline="300ms")],
    }
    proxy = await start_proxy(config)
    async with client.get(proxy + "/x") as response:
        assert response.status == 504
        report = await response.json()
        assert report["tried"] == [{"upstream": "primary", "failure": "deadline_exceeded"}]
    assert secondary.hits == 0


async def test_post_that_reached_a_failing_upstream_is_not_sent_again(
    http_upstream, start_proxy, client
):
    primary = await http_upstream(
        lambda r: asyncio.sleep(0, web.Response(status=503, text="maybe applied"))
    )
    secondary = await http_upstream(ok)
    config = {
        "upstreams": upstreams(primary.url, secondary.url),
        "routes": [route(retry={"attempts": 3})],
    }
    proxy = await start_proxy(config)
    async with client.post(proxy + "/orders", data=b'{"n": 1}') as response:
        assert response.status == 503
        assert await response.text() == "maybe applied"
    assert (primary.hits, secondary.hits) == (1, 0)


async def test_post_that_timed_out_is_not_sent_again(http_upstream, start_proxy, client):
    primary, secondary, proxy = await start_pair(http_upstream, start_proxy, hang)
    async with client.post(proxy + "/orders", data=b"x") as response:
        assert response.status == 503
        assert 'details="read_timeout"' in response.headers["Proxy-Status"]
    assert (primary.hits, secondary.hits) == (1, 0)


async def test_post_refused_by_primary_moves_on_once(
    refused_url, http_upstream, start_proxy, client
):
    secondary = await http_upstream(ok)
    proxy = await start_proxy(
        {"upstreams": upstreams(refused_url, secondary.url), "routes": [route()]}
    )
    async with client.post(proxy + "/orders", data=b'{"n": 1}') as response:
        assert response.status == 200
    assert secondary.hits == 1
    assert secondary.requests[0]["body"] == b'{"n": 1}'


async def test_post_with_idempotency_key_may_move_on(http_upstream, start_proxy, client):
    primary, secondary, proxy = await start_pair(
        http_upstream, start_proxy, lambda r: asyncio.sleep(0, web.Response(status=503))
    )
    headers = {"Idempotency-Key": "order-42"}
    async with client.post(proxy + "/orders", data=b"{}", headers=headers) as response:
        assert response.status == 200
    assert (primary.hits, secondary.hits) == (1, 1)
    assert secondary.requests[0]["headers"]["Idempotency-Key"] == "order-42"


async def test_large_body_streams_to_the_first_upstream_only(http_upstream, start_proxy, client):
    primary = await http_upstream(lambda r: asyncio.sleep(0, web.Response(status=503)))
    secondary = await http_upstream(ok)
    config = {
        "upstreams": upstreams(primary.url, secondary.url),
        "routes": [route(retry={"max_replay_body": "1KiB"})],
    }
    proxy = await start_proxy(config)
    body = b"z" * 100_000
    async with client.put(proxy + "/blob", data=body) as response:
        assert response.status == 503
    assert (primary.hits, secondary.hits) == (1, 0)
    assert primary.requests[0]["body"] == body


async def test_small_put_body_is_replayed_to_the_secondary(http_upstream, start_proxy, client):
    primary, secondary, proxy = await start_pair(
        http_upstream, start_proxy, lambda r: asyncio.sleep(0, web.Response(status=500))
    )
    async with client.put(proxy + "/blob", data=b"same bytes") as response:
        assert response.status == 200
    assert primary.requests[0]["body"] == secondary.requests[0]["body"] == b"same bytes"


async def test_a_dropped_connection_is_one_try_not_a_hidden_resend(
    raw_upstream, start_proxy, client
):
    async def read_then_close(reader, writer):
        await read_request_head(reader)
        writer.transport.abort()

    primary = await raw_upstream(read_then_close)
    proxy = await start_proxy(
        {"upstreams": upstreams(primary.url), "routes": [route(upstreams=("primary",))]}
    )
    async with client.put(proxy + "/doc", data=b"v2") as response:
        assert response.status == 503
        assert response.headers["Proxy-Status"].count("next-hop=primary") == 1
    assert primary.connections == 1


async def test_a_streamed_upload_still_arriving_at_the_deadline_is_408(http_upstream, start_proxy):
    primary = await http_upstream(ok)
    config = {
        "upstreams": upstreams(primary.url),
        "routes": [
            route(
                upstreams=("primary",),
                deadline="500ms",
                retry={"max_replay_body": "1KiB"},
                default={"body": "must not be served for a write"},
            )
        ],
    }
    proxy = await start_proxy(config)
    host, port = proxy.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 6000\r\n\r\n")
    for _ in range(3):
        writer.write(b"u" * 2000)
        await writer.drain()
        await asyncio.sleep(0.4)
    async with asyncio.timeout(5):
        answer = await reader.read(-1)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408")
    assert primary.hits == 0
