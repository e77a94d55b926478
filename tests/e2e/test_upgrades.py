"""WebSockets through the proxy (docs/configuration.md "Streams and
upgrades"): an ``Upgrade`` request walks the failover chain until an upstream answers
101, then the bytes flow both ways untouched until an end closes or a limit ends the
tunnel. Upstreams are aiohttp WebSocket servers (or raw scripts where the exact bytes
matter), clients aiohttp's ``ws_connect`` (or a raw socket). Timings are in loop time,
shared by the upstream, the in-process proxy and the client; tolerances are generous
for a shared CI machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import string
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from proxy.app import ProxyApp
from proxy.config.schema import Config
from tests.conftest import (
    ADMIN_AUTH,
    LOOPBACK,
    RawUpstream,
    Upstream,
    raw_exchange,
    read_request_head,
    route,
)
from tests.helpers.reload_traffic import eventually, write_atomically
from tests.helpers.websockets import (
    SAMPLE_ACCEPT,
    TEXT,
    WebSocketUpstream,
    connect,
    disconnect,
    ended,
    frame,
    handshake,
    handshake_headers,
    read_head,
    request_headers,
    split_response,
    switching_protocols,
)

KiB = 1024
GRACE = 0.5  # shutdown_grace everywhere: a test that leaves a tunnel open ends quickly


def proxied(*urls: str, **route_extra: Any) -> dict[str, Any]:
    """A config with upstreams ``primary`` (and ``secondary``) and one route ``r``."""
    names = ("primary", "secondary")[: len(urls)]
    return {
        "upstreams": {name: {"url": url} for name, url in zip(names, urls, strict=True)},
        "routes": [route(upstreams=names, **route_extra)],
        "shutdown_grace": f"{GRACE}s",
    }


async def echo(ws: aiohttp.ClientWebSocketResponse, text: str = "are you there?") -> None:
    """The tunnel still carries a message there and back."""
    await ws.send_str(text)
    async with asyncio.timeout(2):
        message = await ws.receive()
    assert (message.type, message.data) == (aiohttp.WSMsgType.TEXT, text)


# --- the relay --------------------------------------------------------------------------


def mixed_messages(count: int, seed: int) -> list[str | bytes]:
    """Text and binary messages from 0 B to 64 KiB, mostly small: the frame length
    encodings' edges (125/126, 65535/65536 bytes) first, then deterministic noise.
    Text is ASCII with two- and three-byte characters in it, of exactly the drawn size
    in UTF-8."""
    rng = random.Random(seed)
    letters = bytes.maketrans(
        bytes(range(256)), bytes(ord(string.ascii_letters[i % 52]) for i in range(256))
    )
    edges = [0, 1, 125, 126, 127, 65535, 65536]
    messages: list[str | bytes] = []
    for n in range(count):
        if n < 2 * len(edges):  # each edge as text, then as binary
            size, binary = edges[n // 2], n % 2 == 1
        else:
            roll = rng.random()
            if roll < 0.8:
                size = rng.randint(0, 256)
            elif roll < 0.97:
                size = rng.randint(257, 4 * KiB)
            else:
                size = rng.randint(4 * KiB, 64 * KiB)
            binary = rng.random() < 0.5
        if binary:
            messages.append(rng.randbytes(size))
        else:
            ascii_text = rng.randbytes(size).translate(letters)
            utf8 = ascii_text.replace(b"Zz", "é".encode()).replace(b"Yyy", "€".encode())
            messages.append(utf8.decode())
    return messages


async def test_ten_thousand_mixed_messages_come_back_byte_identical_and_in_order(
    http_upstream, start_proxy, client
):
    upstream = WebSocketUpstream()
    origin = await http_upstream(upstream)
    proxy = await start_proxy(proxied(origin.url))
    messages = mixed_messages(10_000, seed=6455)

    async def send_all(ws: aiohttp.ClientWebSocketResponse) -> None:
        for message in messages:
            if isinstance(message, bytes):
                await ws.send_bytes(message)
            else:
                await ws.send_str(message)

    async with client.ws_connect(proxy + "/ws") as ws:
        head = handshake_headers(ws)
        assert (head["X-Failover-Source"], head["X-Failover-Health"]) == ("primary", "healthy")
        sender = asyncio.create_task(send_all(ws))
        async with asyncio.timeout(20):
            for n, sent in enumerate(messages):
                got = await ws.receive()
                kind = (
                    aiohttp.WSMsgType.BINARY if isinstance(sent, bytes) else aiohttp.WSMsgType.TEXT
                )
                data = got.data
                shown = f"{len(data)} long" if isinstance(data, str | bytes) else repr(data)
                assert got.type == kind and data == sent, (
                    f"message {n}: sent {kind.name} {len(sent)} long, got {got.type.name} {shown}"
                )
            await sender
    assert upstream.sessions[0].received == len(messages)
    asked = upstream.sessions[0].headers
    assert asked["Upgrade"] == "websocket"
    assert asked["Connection"] == "Upgrade"


async def test_the_upstream_chooses_the_subprotocol(http_upstream, start_proxy, client):
    upstream = WebSocketUpstream(protocols=("chat.v2",))
    proxy = await start_proxy(proxied((await http_upstream(upstream)).url))
    async with client.ws_connect(proxy + "/ws", protocols=("chat.v1", "chat.v2")) as ws:
        assert ws.protocol == "chat.v2"
        assert handshake_headers(ws)["Sec-WebSocket-Protocol"] == "chat.v2"
        await echo(ws)
    offered = upstream.sessions[0].headers["Sec-WebSocket-Protocol"]
    assert [name.strip() for name in offered.split(",")] == ["chat.v1", "chat.v2"]
    assert upstream.sessions[0].protocol == "chat.v2"


async def test_the_upstreams_close_code_and_reason_reach_the_client(
    http_upstream, start_proxy, client
):
    upstream = WebSocketUpstream()
    proxy = await start_proxy(proxied((await http_upstream(upstream)).url))
    async with client.ws_connect(proxy + "/ws") as ws:
        await ws.send_str("close 4001 the room was closed")
        message = await ended(ws, within=2.0)
        assert message.type == aiohttp.WSMsgType.CLOSE
        assert (message.data, message.extra) == (4001, "the room was closed")
    assert ws.close_code == 4001


async def test_compression_the_two_ends_negotiate_works_through_the_proxy(
    http_upstream, start_proxy, client
):
    """permessage-deflate (RFC 7692) is the two ends' business: its header crosses, and
    its compressed frames cross untouched."""
    upstream = WebSocketUpstream()
    proxy = await start_proxy(proxied((await http_upstream(upstream)).url))
    async with client.ws_connect(proxy + "/ws", compress=15) as ws:
        assert "permessage-deflate" in handshake_headers(ws)["Sec-WebSocket-Extensions"]
        assert ws.compress == 15
        await echo(ws, "squeeze me " * 1000)
        await ws.send_bytes(bytes(range(256)) * 64)
        async with asyncio.timeout(2):
            assert (await ws.receive()).data == bytes(range(256)) * 64
    assert "permessage-deflate" in upstream.sessions[0].headers["Sec-WebSocket-Extensions"]


@pytest.mark.parametrize("size", [1 * KiB, 1024 * KiB], ids=["one-frame", "1MiB"])
async def test_bytes_the_client_sends_with_its_handshake_reach_the_upstream_unchanged(
    raw_upstream, start_proxy, size
):
    """The client does not wait for the 101: its first frames come in the same write as
    the request's head (and, when large, in reads after it)."""
    sent = b"".join(frame(random.Random(size).randbytes(KiB)) for _ in range(size // KiB))
    arrived = bytearray()

    async def switch_then_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        await read_request_head(reader)
        await asyncio.sleep(0.1)  # the client's bytes wait in the proxy meanwhile
        writer.write(switching_protocols())
        arrived.extend(await reader.readexactly(len(sent)))
        writer.write(bytes(arrived))
        await reader.read()

    origin = await raw_upstream(switch_then_echo)
    proxy = await start_proxy(proxied(origin.url))
    reader, writer = await connect(proxy)
    try:
        writer.write(handshake() + sent)
        head = await read_head(reader)
        assert head.status == 101
        async with asyncio.timeout(5):
            back = await reader.readexactly(len(sent))
    finally:
        writer.close()
    assert bytes(arrived) == sent
    assert back == sent


async def test_bytes_the_upstream_sends_with_its_101_reach_the_client_unchanged(
    raw_upstream, start_proxy
):
    greeting = frame(b"welcome, you are guest 7", TEXT, masked=False)

    async def switch_and_greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        await read_request_head(reader)
        writer.write(switching_protocols() + greeting)
        await reader.read()

    origin = await raw_upstream(switch_and_greet)
    proxy = await start_proxy(proxied(origin.url))
    reader, writer = await connect(proxy)
    try:
        writer.write(handshake())
        assert (await read_head(reader)).status == 101
        async with asyncio.timeout(2):
            assert await reader.readexactly(len(greeting)) == greeting
    finally:
        writer.close()


@pytest.mark.parametrize("how", ["fin", "reset"])
async def test_a_client_that_disconnects_ends_the_upstreams_side(http_upstream, start_proxy, how):
    upstream = WebSocketUpstream()
    proxy = await start_proxy(proxied((await http_upstream(upstream)).url))
    reader, writer = await connect(proxy)
    writer.write(handshake())
    assert (await read_head(reader)).status == 101
    await eventually(lambda: bool(upstream.sessions), within=1.0)
    disconnect(writer, how)
    async with asyncio.timeout(1.0):
        await upstream.sessions[0].ended.wait()


@pytest.mark.parametrize("how", ["fin", "reset"])
async def test_a_client_that_leaves_during_the_handshake_leaves_no_upstream_connection_open(
    raw_upstream, start_proxy, how
):
    upstream_saw_end = asyncio.Event()

    async def slow_switch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        await read_request_head(reader)
        await asyncio.sleep(0.2)
        writer.write(switching_protocols())
        await reader.read()
        upstream_saw_end.set()

    origin = await raw_upstream(slow_switch)
    proxy = await start_proxy(proxied(origin.url))
    _, writer = await connect(proxy)
    writer.write(handshake())
    await eventually(lambda: origin.connections == 1, within=1.0)
    disconnect(writer, how)
    async with asyncio.timeout(1.5):
        await upstream_saw_end.wait()


@pytest.mark.parametrize("first", ["client", "upstream"])
async def test_a_half_close_is_passed_on_and_the_other_direction_keeps_flowing(
    raw_upstream, start_proxy, first
):
    """One end's EOF reaches the other as an EOF; what the other end sends afterwards
    still arrives, and the tunnel ends when both have finished."""
    upstream_got = bytearray()
    upstream_done = asyncio.Event()

    async def upstream_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        await read_request_head(reader)
        writer.write(switching_protocols())
        if first == "upstream":
            writer.write(b"upstream's last words")
            writer.write_eof()
            upstream_got.extend(await reader.read())  # until the client's EOF
        else:
            upstream_got.extend(await reader.read())
            writer.write(b"heard %d bytes" % len(upstream_got))
        upstream_done.set()

    origin = await raw_upstream(upstream_side)
    proxy = await start_proxy(proxied(origin.url))
    reader, writer = await connect(proxy)
    try:
        writer.write(handshake())
        assert (await read_head(reader)).status == 101
        if first == "upstream":
            async with asyncio.timeout(2):
                assert await reader.read() == b"upstream's last words"  # then its EOF
            writer.write(b"the client's answer")
            writer.write_eof()
        else:
            writer.write(b"the client's last words")
            writer.write_eof()
            async with asyncio.timeout(2):
                assert await reader.read() == b"heard 23 bytes"
        async with asyncio.timeout(2):
            await upstream_done.wait()
    finally:
        writer.close()
    expected = b"the client's answer" if first == "upstream" else b"the client's last words"
    assert bytes(upstream_got) == expected


# The suite's loop is asyncio's; the proxy runs on uvloop in production, whose transports
# pause and hand over reading their own way: the relay's core, once more on uvloop.


def on_uvloop(scenario: Callable[[Path], Awaitable[None]]) -> Callable[[Path], None]:
    def test(tmp_path: Path) -> None:
        async def bounded() -> None:
            async with asyncio.timeout(20):
                await scenario(tmp_path)

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(bounded())

    test.__doc__ = scenario.__doc__
    return test


@contextlib.asynccontextmanager
async def serving(config: dict[str, Any], base: Path) -> AsyncIterator[str]:
    """The proxy on the running loop; yields its base URL."""
    app = ProxyApp(Config.model_validate({"listen": {"host": LOOPBACK, "port": 0}, **config}), base)
    await app.start()
    try:
        yield f"http://{LOOPBACK}:{app.port}"
    finally:
        await app.stop()


async def _pending_bytes_on_uvloop(base: Path) -> None:
    """Bytes sent with the handshake and with the 101 cross first, unchanged."""
    sent = random.Random(7).randbytes(256 * KiB)
    greeting = frame(b"hello from the upstream", masked=False)

    async def upstream_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        await read_request_head(reader)
        writer.write(switching_protocols() + greeting)
        writer.write(await reader.readexactly(len(sent)))
        await reader.read()
        writer.close()

    server = await asyncio.start_server(upstream_side, LOOPBACK, 0)
    url = f"http://{LOOPBACK}:{server.sockets[0].getsockname()[1]}"
    try:
        async with serving(proxied(url), base) as proxy:
            reader, writer = await connect(proxy)
            writer.write(handshake() + sent)
            assert (await read_head(reader)).status == 101
            assert await reader.readexactly(len(greeting)) == greeting
            assert await reader.readexactly(len(sent)) == sent
            writer.close()
    finally:
        server.close()


async def _mixed_messages_on_uvloop(base: Path) -> None:
    """A thousand mixed messages come back identical, then the upstream's close code."""
    upstream = WebSocketUpstream()

    async def websocket(request: web.Request) -> web.StreamResponse:
        return await upstream(request)

    app = web.Application()
    app.router.add_get("/ws", websocket)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, 0).start()
    url = f"http://{LOOPBACK}:{runner.addresses[0][1]}"
    messages = mixed_messages(1000, seed=13)
    try:
        async with (
            serving(proxied(url), base) as proxy,
            aiohttp.ClientSession() as session,
            session.ws_connect(proxy + "/ws") as ws,
        ):
            for message in messages:
                if isinstance(message, bytes):
                    await ws.send_bytes(message)
                else:
                    await ws.send_str(message)
            got = [(await ws.receive()).data for _ in messages]
            assert got == messages
            await ws.send_str("close 4001 bye")
            assert (await ended(ws, within=2.0)).data == 4001
    finally:
        await runner.cleanup()


test_bytes_sent_with_the_heads_cross_first_on_uvloop = on_uvloop(_pending_bytes_on_uvloop)
test_mixed_messages_cross_unchanged_on_uvloop = on_uvloop(_mixed_messages_on_uvloop)


# --- before the 101: failover and refusals ----------------------------------------------


async def hangs(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request_head(reader)
    await reader.read()  # never answers; the proxy's close ends it


async def failing_primary(
    kind: str, http_upstream, raw_upstream, refused_url: str
) -> str | Upstream | RawUpstream:
    if kind == "refused":
        return refused_url
    if kind == "hangs":
        return await raw_upstream(hangs)
    status = int(kind)
    return await http_upstream(lambda request: asyncio.sleep(0, web.Response(status=status)))


# the Proxy-Status member each failure leaves
FAILURES = {
    "refused": "error=connection_refused; next-hop=primary",
    "503": "received-status=503; next-hop=primary",
    "429": "received-status=429; next-hop=primary",
    "hangs": "error=http_response_timeout; next-hop=primary",
}


@pytest.mark.parametrize("kind", sorted(FAILURES))
async def test_a_failed_handshake_moves_on_and_the_101_names_what_failed(
    http_upstream, raw_upstream, refused_url, start_proxy, client, kind
):
    primary = await failing_primary(kind, http_upstream, raw_upstream, refused_url)
    upstream = WebSocketUpstream()
    secondary = await http_upstream(upstream)
    primary_url = primary if isinstance(primary, str) else primary.url
    config = proxied(primary_url, secondary.url, upgrade={"handshake_timeout": "0.3s"})
    proxy = await start_proxy(config)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with client.ws_connect(proxy + "/ws") as ws:
        took = loop.time() - started
        head = handshake_headers(ws)
        assert head["X-Failover-Source"] == "secondary"
        assert head["X-Failover-Health"] == "degraded"
        members = head["Proxy-Status"].split(", ")
        assert len(members) == 1, members
        assert members[0].startswith(f"failover-proxy; {FAILURES[kind]}; details=")
        await echo(ws)
    assert len(upstream.sessions) == 1
    if kind == "hangs":
        assert 0.3 <= took < 2.0
    else:
        assert took < 1.0


async def test_the_101_head_carries_the_upstreams_accept_and_the_failover_headers(
    http_upstream, refused_url, start_proxy
):
    upstream = await http_upstream(WebSocketUpstream())
    proxy = await start_proxy(proxied(refused_url, upstream.url))
    reader, writer = await connect(proxy)
    try:
        writer.write(handshake())
        head = await read_head(reader)
        payload = b"binary after the switch"
        writer.write(frame(payload))
        async with asyncio.timeout(2):
            back = await reader.readexactly(len(frame(payload, masked=False)))
    finally:
        writer.close()
    assert head.raw.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    for name, value in [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", SAMPLE_ACCEPT),
        ("X-Failover-Source", "secondary"),
        ("X-Failover-Health", "degraded"),
    ]:
        assert head.count(name) == 1, f"{name} appears {head.count(name)} times in {head.raw!r}"
        assert head.headers[name] == value
    assert "next-hop=primary" in head.headers["Proxy-Status"]
    assert head.count("Content-Length") == head.count("Transfer-Encoding") == 0  # a 1xx
    assert back == frame(payload, masked=False)


async def test_a_non_failure_answer_to_the_handshake_is_passed_through_and_the_connection_closed(
    http_upstream, start_proxy
):
    """The upstream's 403 is its verdict, not an outage: the client gets it, and the
    bytes it sent after its request are never read as a next request."""

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=403, text="origin says no")

    primary = await http_upstream(refuse)
    secondary = await http_upstream(WebSocketUpstream())
    proxy = await start_proxy(proxied(primary.url, secondary.url))
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    head, body = split_response(await raw_exchange(proxy, handshake() + smuggled))
    assert head.status == 403
    assert body == b"origin says no"
    assert head.headers["Connection"] == "close"
    assert head.headers["X-Failover-Source"] == "primary"
    assert head.count("Upgrade") == 0
    assert [request["path_qs"] for request in primary.requests] == ["/ws"]
    assert secondary.hits == 0


async def test_when_every_upstream_fails_the_handshake_gets_an_error_and_the_connection_closes(
    refused_url, start_proxy
):
    proxy = await start_proxy(proxied(refused_url, refused_url))
    head, body = split_response(await raw_exchange(proxy, handshake()))
    assert head.status == 503
    assert head.headers["Connection"] == "close"
    tried = json.loads(body)["tried"]
    assert [hop["upstream"] for hop in tried] == ["primary", "secondary"]


@pytest.mark.parametrize(
    ("upgrade", "offered", "error"),
    [
        (False, "websocket", "upgrades are not allowed on this route"),
        ({"protocols": ["websocket"]}, "h2c", "this route upgrades only to websocket"),
    ],
    ids=["upgrade-false", "protocol-not-listed"],
)
async def test_a_refused_upgrade_gets_403_and_never_reaches_an_upstream(
    http_upstream, start_proxy, upgrade, offered, error
):
    upstream = await http_upstream(WebSocketUpstream())
    proxy = await start_proxy(proxied(upstream.url, upgrade=upgrade))
    request = handshake(upgrade=offered) + b"GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    head, body = split_response(await raw_exchange(proxy, request))
    assert head.status == 403
    assert head.headers["Connection"] == "close"
    assert head.headers["X-Failover-Source"] == "none"
    assert head.headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"error": error, "status": 403}
    assert upstream.hits == 0


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """A request's head and its ``Content-Length`` body, as an upstream reads them."""
    head = await read_request_head(reader)
    length = int(request_headers(head).get("Content-Length", "0"))
    return head, await reader.readexactly(length)


H2C = [
    "Connection: Upgrade, HTTP2-Settings",
    "Upgrade: h2c",
    "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
]


def in_writes(delivery: str, head: bytes, body: bytes, tail: bytes) -> list[bytes]:
    """How a client's request and what follows it are cut into writes."""
    if delivery == "one-write":
        return [head + body + tail]
    middle = len(body) // 2
    return [head, body[:middle], body[middle:] + tail]  # the body after the head's read


@pytest.mark.parametrize("delivery", ["one-write", "in-pieces", "streamed"])
@pytest.mark.parametrize("answer", ["200", "101"])
async def test_an_upgrade_requests_body_reaches_the_upstream_as_its_body(
    raw_upstream, start_proxy, answer, delivery
):
    """RFC 9110 section 7.8: the new protocol starts after the request message, body
    included (RFC 9113 section 3.2's h2c ``POST`` sends its body first). The body is the
    request's: sent with its length, never dropped, never relayed as the new protocol's
    bytes. Against an upstream that ignores the offer (200) and one that takes it (101);
    ``streamed``: a body larger than the route holds for a replay."""
    body = random.Random(9).randbytes(300 * KiB) if delivery == "streamed" else b'{"order": 1}'
    after = b"bytes of the new protocol" if answer == "101" else b""
    seen: dict[str, bytes] = {}

    async def upstream_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        seen["head"], seen["body"] = await read_request(reader)
        if answer == "200":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        else:
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
            )
            seen["after"] = await reader.readexactly(len(after))
            writer.write(seen["after"])
        await reader.read()

    origin = await raw_upstream(upstream_side)
    proxy = await start_proxy(proxied(origin.url, retry={"max_replay_body": "64KiB"}))
    head_lines = [
        "POST /orders HTTP/1.1",
        "Host: 127.0.0.1",
        *H2C,
        "Content-Type: application/octet-stream",
        f"Content-Length: {len(body)}",
    ]
    request_head = ("\r\n".join(head_lines) + "\r\n\r\n").encode()
    reader, writer = await connect(proxy)
    try:
        for data in in_writes(delivery, request_head, body, after):
            writer.write(data)
            await asyncio.sleep(0.05)
        head = await read_head(reader)
        async with asyncio.timeout(2):
            back = await reader.readexactly(len(after) if answer == "101" else 2)
    finally:
        writer.close()
    assert request_headers(seen["head"])["Content-Length"] == str(len(body)), seen["head"]
    assert seen["body"] == body
    assert head.status == int(answer)
    if answer == "101":
        assert (seen["after"], back) == (after, after)
    else:
        assert back == b"ok"


async def test_an_upgrade_request_with_a_chunked_body_is_refused(http_upstream, start_proxy):
    """Its body could only be told from the new protocol's bytes by parsing it."""
    upstream = await http_upstream(WebSocketUpstream())
    proxy = await start_proxy(proxied(upstream.url))
    request = handshake(extra=["Transfer-Encoding: chunked"]) + b"5\r\nhello\r\n0\r\n\r\n"
    head, body = split_response(await raw_exchange(proxy, request))
    assert head.status == 400
    assert head.headers["Connection"] == "close"
    assert "Content-Length" in json.loads(body)["error"]
    assert upstream.hits == 0


@pytest.mark.parametrize("upgrade", [False, True], ids=["plain", "upgrade"])
async def test_an_upgrade_request_with_a_body_over_max_body_gets_413(
    http_upstream, start_proxy, upgrade
):
    """The same answer as the same request without ``Upgrade``: the client's fault, not
    a failure of the proxy."""
    upstream = await http_upstream(WebSocketUpstream())
    proxy = await start_proxy(proxied(upstream.url))
    offer = "Connection: Upgrade\r\nUpgrade: websocket\r\n" if upgrade else ""
    request = (
        f"POST /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n{offer}Content-Length: 20000000\r\n\r\n"
    ).encode()
    head, body = split_response(await raw_exchange(proxy, request))
    assert head.status == 413, body
    assert head.headers["Connection"] == "close"
    assert upstream.hits == 0


async def test_an_upgrade_request_whose_body_stalls_gets_408(http_upstream, start_proxy):
    upstream = await http_upstream(WebSocketUpstream())
    config = proxied(upstream.url)
    config["limits"] = {"client_body_timeout": "0.3s"}
    proxy = await start_proxy(config)
    request = handshake(extra=["Content-Length: 10"]) + b"abc"  # and nothing more
    loop = asyncio.get_running_loop()
    started = loop.time()
    head, _ = split_response(await raw_exchange(proxy, request, timeout=3))
    assert head.status == 408
    assert loop.time() - started < 2
    assert upstream.hits == 0


# --- limits -----------------------------------------------------------------------------


async def idle_limited(http_upstream, start_proxy) -> tuple[WebSocketUpstream, str]:
    """A WebSocket upstream behind a route whose tunnels close after 0.3 s of silence."""
    upstream = WebSocketUpstream()
    proxy = await start_proxy(
        proxied((await http_upstream(upstream)).url, upgrade={"idle_timeout": "0.3s"})
    )
    return upstream, proxy


async def test_an_idle_tunnel_is_closed_after_idle_timeout(http_upstream, start_proxy, client):
    upstream, proxy = await idle_limited(http_upstream, start_proxy)
    loop = asyncio.get_running_loop()
    async with client.ws_connect(proxy + "/ws") as ws:
        opened = loop.time()
        await ended(ws, within=1.0)
        idle = loop.time() - opened
    assert idle >= 0.28
    async with asyncio.timeout(1.0):
        await upstream.sessions[0].ended.wait()


@pytest.mark.parametrize(
    "limits",
    [
        {"route": {"deadline": "0.3s"}},
        {"upstream": {"timeouts": {"read": "0.3s"}}},
        {"route": {"upgrade": {"handshake_timeout": "0.3s"}}},
        {"proxy": {"limits": {"client_header_timeout": "0.3s"}}},
    ],
    ids=["route-deadline", "upstream-read-timeout", "handshake-timeout", "client-header-timeout"],
)
async def test_the_request_timeouts_do_not_bound_an_open_tunnel(
    http_upstream, start_proxy, client, limits
):
    """Only the tunnel's own limits (idle_timeout, max_duration) apply after the 101."""
    upstream = WebSocketUpstream()
    config = proxied((await http_upstream(upstream)).url, **limits.get("route", {}))
    config["upstreams"]["primary"].update(limits.get("upstream", {}))
    config.update(limits.get("proxy", {}))
    proxy = await start_proxy(config)
    async with client.ws_connect(proxy + "/ws") as ws:
        await asyncio.sleep(0.5)  # silence both ways, past the timeout
        await echo(ws)
        await ws.send_str("tick 1 0.45")  # the upstream speaks after more silence
        async with asyncio.timeout(2):
            assert (await ws.receive()).data == "tick 0"
        await echo(ws)


async def test_a_tunnel_leaves_its_upstreams_connection_pool(http_upstream, start_proxy, client):
    """With ``max_connections: 1``, two WebSockets and a plain request all get through:
    a tunnel's connection is no longer the pool's."""
    websockets = WebSocketUpstream()

    async def page_or_websocket(request: web.Request) -> web.StreamResponse:
        if "Upgrade" in request.headers:
            return await websockets(request)
        return web.Response(text="a page")

    origin = await http_upstream(page_or_websocket)
    config = proxied(origin.url, deadline="2s")
    config["upstreams"]["primary"]["max_connections"] = 1
    proxy = await start_proxy(config)
    async with (
        client.ws_connect(proxy + "/ws") as first,
        client.ws_connect(proxy + "/ws") as second,
    ):
        async with client.get(proxy + "/page") as response:
            assert (response.status, await response.text()) == (200, "a page")
        await echo(first)
        await echo(second)


async def test_an_upgrade_is_never_answered_from_the_cache(http_upstream, start_proxy, client):
    websockets = WebSocketUpstream()

    async def page_or_websocket(request: web.Request) -> web.StreamResponse:
        if "Upgrade" in request.headers:
            return await websockets(request)
        return web.Response(text="a page", headers={"Cache-Control": "max-age=60"})

    origin = await http_upstream(page_or_websocket)
    proxy = await start_proxy(proxied(origin.url, cache={"fresh_for": "1m", "stale_for": "1h"}))
    for _ in range(2):
        async with client.get(proxy + "/ws") as response:
            assert await response.text() == "a page"
    assert response.headers["Cache-Status"].startswith("failover-proxy; hit")
    async with client.ws_connect(proxy + "/ws") as ws:
        assert handshake_headers(ws)["X-Failover-Source"] == "primary"
        await echo(ws)


@pytest.mark.parametrize("talker", ["client", "upstream"])
async def test_traffic_either_way_keeps_a_tunnel_open_past_idle_timeout(
    http_upstream, start_proxy, client, talker
):
    _, proxy = await idle_limited(http_upstream, start_proxy)
    loop = asyncio.get_running_loop()
    async with client.ws_connect(proxy + "/ws") as ws:
        opened = loop.time()
        if talker == "client":
            for n in range(8):
                await asyncio.sleep(0.1)
                await echo(ws, f"message {n}")
        else:
            await ws.send_str("tick 8 0.1")  # the client says nothing more
            for n in range(8):
                async with asyncio.timeout(1):
                    message = await ws.receive()
                assert (message.type, message.data) == (aiohttp.WSMsgType.TEXT, f"tick {n}")
        assert loop.time() - opened >= 0.8
        await echo(ws)


async def test_max_duration_ends_a_busy_tunnel(http_upstream, start_proxy, client):
    upstream = WebSocketUpstream()
    proxy = await start_proxy(
        proxied((await http_upstream(upstream)).url, upgrade={"max_duration": "0.5s"})
    )
    loop = asyncio.get_running_loop()
    echoes = 0
    async with client.ws_connect(proxy + "/ws") as ws:
        opened = loop.time()
        async with asyncio.timeout(3):
            while True:
                with contextlib.suppress(ConnectionError):
                    await ws.send_str("busy")
                message = await ws.receive()
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                echoes += 1
                await asyncio.sleep(0.05)
        lasted = loop.time() - opened
    assert 0.45 <= lasted <= 1.5
    assert echoes >= 5


async def until_opens(client: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    """A WebSocket on ``url`` once the route's cap lets one through (within 2 s)."""
    async with asyncio.timeout(2):
        while True:
            try:
                return await client.ws_connect(url)
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == 503
                await asyncio.sleep(0.02)


async def test_at_the_tunnel_cap_a_handshake_gets_503_until_a_tunnel_closes(
    http_upstream, start_proxy, client
):
    upstream = WebSocketUpstream()
    origin = await http_upstream(upstream)
    proxy = await start_proxy(proxied(origin.url, upgrade={"max_tunnels": 2}))
    async with client.ws_connect(proxy + "/ws") as first, client.ws_connect(proxy + "/ws"):
        head, body = split_response(await raw_exchange(proxy, handshake()))
        assert head.status == 503
        assert head.headers["Retry-After"] == "5"
        assert head.headers["Connection"] == "close"
        assert "2 tunnels open" in json.loads(body)["error"]
        assert origin.hits == 2
        await first.close()
        third = await until_opens(client, proxy + "/ws")
        try:
            await echo(third)
        finally:
            await third.close()
    assert origin.hits == 3


async def test_a_handshake_in_progress_holds_a_slot_and_a_failed_one_gives_it_back(
    raw_upstream, start_proxy, client
):
    async def slow_then_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        head = await read_request_head(reader)
        if b"GET /denied " in head:
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        await asyncio.sleep(0.3)
        writer.write(switching_protocols())
        while data := await reader.read(65536):
            writer.write(data)

    origin = await raw_upstream(slow_then_echo)
    proxy = await start_proxy(proxied(origin.url, upgrade={"max_tunnels": 1}))
    head, _ = split_response(await raw_exchange(proxy, handshake("/denied")))
    assert head.status == 403  # no tunnel came of it: the slot is free again
    reader, writer = await connect(proxy)
    try:
        writer.write(handshake())
        await eventually(lambda: origin.connections == 2, within=1.0)
        second, _ = split_response(await raw_exchange(proxy, handshake()))
        assert second.status == 503  # the first handshake is still waiting for its 101
        assert origin.connections == 2
        assert (await read_head(reader)).status == 101
    finally:
        writer.close()


# --- reloads, shutdown, metrics -----------------------------------------------------------


@pytest.fixture
def reloadable(
    start_app: Callable[..., Awaitable[ProxyApp]], tmp_path: Path
) -> Callable[[dict[str, Any]], Awaitable[ProxyApp]]:
    """The proxy with a config file, reloaded through ``POST /admin/reload``."""
    path = tmp_path / "config.yaml"

    async def start(config: dict[str, Any]) -> ProxyApp:
        config = with_listeners(config)
        write_atomically(path, config)
        return await start_app(config, config_file=path)

    return start


def with_listeners(config: dict[str, Any]) -> dict[str, Any]:
    return {
        "listen": {"host": LOOPBACK, "port": 0},
        "admin": {"host": LOOPBACK, "port": 0},
        "reload": {"poll_interval": 0},
        **config,
    }


def admin(app: ProxyApp, path: str) -> str:
    return f"http://{LOOPBACK}:{app.admin_port}{path}"


async def test_open_tunnels_survive_a_reload_that_replaces_their_upstreams_pool(
    reloadable, http_upstream, client, tmp_path
):
    first, second = WebSocketUpstream(), WebSocketUpstream()
    a, b = await http_upstream(first), await http_upstream(second)
    config = {
        "upstreams": {"a": {"url": a.url}, "b": {"url": b.url}},
        "routes": [route(upstreams=("a", "b"))],
        "shutdown_grace": f"{GRACE}s",
    }
    app = await reloadable(config)
    proxy = f"http://{LOOPBACK}:{app.port}"
    async with client.ws_connect(proxy + "/ws") as old:
        assert handshake_headers(old)["X-Failover-Source"] == "a"
        await echo(old, "before the reload")
        changed = {
            # new timeouts: a's pool is replaced, and the old one closed once drained
            "upstreams": {"a": {"url": a.url, "timeouts": {"connect": "2s"}}, "b": {"url": b.url}},
            "routes": [route(upstreams=("b", "a"), deadline="5s")],
            "shutdown_grace": f"{GRACE}s",
        }
        write_atomically(tmp_path / "config.yaml", with_listeners(changed))
        async with client.post(admin(app, "/admin/reload"), headers=ADMIN_AUTH) as response:
            assert response.status == 200, await response.text()
        await asyncio.sleep(0.3)  # the replaced pool's drain polls every 50 ms
        await echo(old, "after the reload")
        async with client.ws_connect(proxy + "/ws") as new:
            assert handshake_headers(new)["X-Failover-Source"] == "b"
            await echo(new)
            await echo(old, "still here")
        assert not first.sessions[0].ended.is_set()
    assert (len(first.sessions), len(second.sessions)) == (1, 1)
    assert first.sessions[0].received == 3


@pytest.mark.parametrize("sequence", ["stop", "drain-then-stop"])
async def test_at_shutdown_tunnels_run_until_shutdown_grace_then_are_closed(
    http_upstream, client, tmp_path, sequence
):
    """``drain-then-stop`` is what SIGTERM does; the drain does not wait for tunnels (they
    are not requests in flight), and the grace counts from its start."""
    upstream = WebSocketUpstream()
    origin = await http_upstream(upstream)
    config = {"listen": {"host": LOOPBACK, "port": 0}, **proxied(origin.url)}
    app = ProxyApp(Config.model_validate(config), tmp_path)
    await app.start()
    loop = asyncio.get_running_loop()

    async def shut_down() -> None:
        if sequence == "drain-then-stop":
            await app.drain()
        await app.stop()

    stopping: asyncio.Task[None] | None = None
    try:
        async with client.ws_connect(f"http://{LOOPBACK}:{app.port}/ws") as ws:
            stopping = asyncio.create_task(shut_down())
            asked = loop.time()
            await asyncio.sleep(GRACE / 2)
            await echo(ws, "during the grace")
            await ended(ws, within=GRACE + 2)
            closed_after = loop.time() - asked
            async with asyncio.timeout(3):
                await stopping
    finally:
        await (stopping if stopping is not None else app.stop())
    assert GRACE - 0.1 <= closed_after <= GRACE + 2
    async with asyncio.timeout(1):
        await upstream.sessions[0].ended.wait()  # the upstream's side is closed too


async def tunnel_report(
    client: aiohttp.ClientSession, app: ProxyApp
) -> tuple[float, float, float, int]:
    """(open, bytes up, bytes down) from /metrics and open_tunnels from /health, for ``r``."""
    async with client.get(admin(app, "/metrics"), headers=ADMIN_AUTH) as response:
        assert response.status == 200
        samples = {
            (sample.name, sample.labels.get("direction")): sample.value
            for family in text_string_to_metric_families(await response.text())
            for sample in family.samples
            if sample.labels.get("route") == "r"
        }
    async with client.get(admin(app, "/health"), headers=ADMIN_AUTH) as response:
        assert response.status == 200
        open_tunnels = (await response.json())["routes"]["r"]["open_tunnels"]
    return (
        samples.get(("failover_tunnels_open", None), -1.0),
        samples.get(("failover_tunnel_bytes_total", "up"), -1.0),
        samples.get(("failover_tunnel_bytes_total", "down"), -1.0),
        open_tunnels,
    )


async def test_metrics_and_health_count_open_tunnels_and_their_bytes(
    http_upstream, start_app, client
):
    upstream = WebSocketUpstream(reply=lambda data: data * 2)
    origin = await http_upstream(upstream)
    app = await start_app(proxied(origin.url))
    up, down = 10_000, 20_000
    frame_overhead = 14  # the most a WebSocket frame adds to its payload
    async with client.ws_connect(f"http://{LOOPBACK}:{app.port}/ws") as ws:
        await ws.send_bytes(bytes(up))
        async with asyncio.timeout(2):
            message = await ws.receive()
        assert message.data == bytes(down)
        tunnels, bytes_up, bytes_down, open_tunnels = await tunnel_report(client, app)
        assert (tunnels, open_tunnels) == (1, 1)
        assert up <= bytes_up <= up + frame_overhead
        assert down <= bytes_down <= down + frame_overhead

    async def closed() -> bool:
        return (await tunnel_report(client, app))[::3] == (0, 0)

    await eventually(closed, within=1.0)
    _, bytes_up, bytes_down, _ = await tunnel_report(client, app)
    assert bytes_up >= up and bytes_down >= down  # a closed tunnel's bytes stay counted
