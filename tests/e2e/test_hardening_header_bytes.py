"""Header bytes are never silently changed. The data path carries header bytes as they
arrived: obs-text (0x80-0xFF, raw UTF-8 included) crosses the proxy byte for byte in
both directions. A control character other than HTAB is refused: in a request, 400 and
nothing goes upstream; in an upstream answer, the strict parser refuses it, the try
fails (``protocol_error``) and the answer is never relayed nor passed through."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import raw_exchange, read_request_head, route

OBS_TEXT = [
    pytest.param(b"\xa0v\xa0", id="nbsp-around"),
    pytest.param(b"a\x85b", id="nel-inside"),
    pytest.param(b"\x85v\x85", id="nel-around"),
    pytest.param(b"caf\xc3\xa9", id="utf-8"),
]
BAD_VALUES = [
    pytest.param(b"a\x01b", id="soh"),
    pytest.param(b"a\x7fb", id="del"),
    pytest.param(b"a\x1bb", id="esc"),
]


class Recorder:
    """A raw upstream that keeps each request head and answers ``answer``."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.heads: list[bytes] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.heads.append(await read_request_head(reader))
        writer.write(self.answer)
        await writer.drain()


def answer(status: bytes, *headers: bytes, body: bytes = b"good") -> bytes:
    length = b"Content-Length: " + str(len(body)).encode() + b"\r\n"
    return b"HTTP/1.1 " + status + b"\r\n" + b"".join(headers) + length + b"\r\n" + body


OK = answer(b"200 OK", b"Connection: close\r\n")


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return int(status_line.split(" ")[1]), headers, body


async def proxy_for(start_proxy, raw_upstream, *scripts: Recorder) -> str:
    names = ["primary", "secondary"][: len(scripts)]
    upstreams = {}
    for name, script in zip(names, scripts, strict=True):
        upstreams[name] = {"url": (await raw_upstream(script)).url}
    return await start_proxy({"upstreams": upstreams, "routes": [route(upstreams=tuple(names))]})


def request(*headers: bytes) -> bytes:
    return b"GET /x HTTP/1.1\r\nHost: h\r\n" + b"".join(headers) + b"Connection: close\r\n\r\n"


@pytest.mark.parametrize("value", BAD_VALUES)
async def test_a_request_header_the_proxy_cannot_carry_is_refused_with_400(
    start_proxy, raw_upstream, value: bytes
):
    upstream = Recorder(OK)
    proxy = await proxy_for(start_proxy, raw_upstream, upstream)
    status, headers, _ = parse(await raw_exchange(proxy, request(b"X-A: " + value + b"\r\n")))
    assert status == 400
    assert (headers["X-Failover-Source"], headers["X-Failover-Health"]) == ("none", "critical")
    assert upstream.heads == []


@pytest.mark.parametrize("value", OBS_TEXT)
async def test_obs_text_in_a_request_header_reaches_the_upstream_byte_for_byte(
    start_proxy, raw_upstream, value: bytes
):
    upstream = Recorder(OK)
    proxy = await proxy_for(start_proxy, raw_upstream, upstream)
    raw = await raw_exchange(proxy, request(b"X-Ok: fine\r\n", b"X-B: " + value + b"\r\n"))
    assert parse(raw)[0] == 200
    assert b"\r\nX-B: " + value + b"\r\n" in upstream.heads[0]


@pytest.mark.parametrize("value", OBS_TEXT)
async def test_obs_text_in_an_answer_header_reaches_the_client_byte_for_byte(
    start_proxy, raw_upstream, value: bytes
):
    upstream = Recorder(answer(b"200 OK", b"X-A: " + value + b"\r\n", b"Connection: close\r\n"))
    proxy = await proxy_for(start_proxy, raw_upstream, upstream)
    raw = await raw_exchange(proxy, request())
    assert parse(raw)[0] == 200
    assert b"\r\nX-A: " + value + b"\r\n" in raw


async def test_a_control_character_is_refused_with_our_error_body(start_proxy, raw_upstream):
    upstream = Recorder(OK)
    proxy = await proxy_for(start_proxy, raw_upstream, upstream)
    raw = await raw_exchange(proxy, request(b"X-Ok: fine\r\n", b"X-B: a\x01b\r\n"))
    status, headers, body = parse(raw)
    assert (status, headers["Content-Type"].split(";")[0]) == (400, "application/json")
    assert json.loads(body)["status"] == 400
    assert upstream.heads == []


async def test_tabs_and_visible_ascii_travel_byte_for_byte(start_proxy, raw_upstream):
    upstream = Recorder(OK)
    proxy = await proxy_for(start_proxy, raw_upstream, upstream)
    raw = await raw_exchange(proxy, request(b'X-T: a\tb  c ~!"#\r\n'))
    assert parse(raw)[0] == 200
    assert b'\r\nX-T: a\tb  c ~!"#\r\n' in upstream.heads[0]


@pytest.mark.parametrize("value", BAD_VALUES)
async def test_an_upstream_answer_with_such_a_header_fails_over(
    start_proxy, raw_upstream, value: bytes
):
    bad = Recorder(answer(b"200 OK", b"X-A: " + value + b"\r\n", body=b"bad"))
    good = Recorder(OK)
    proxy = await proxy_for(start_proxy, raw_upstream, bad, good)
    status, headers, body = parse(await raw_exchange(proxy, request()))
    assert (status, body, headers["X-Failover-Source"]) == (200, b"good", "secondary")
    assert "X-A" not in headers
    assert 'next-hop=primary; details="protocol_error"' in headers["Proxy-Status"]


@pytest.mark.parametrize("value", BAD_VALUES)
async def test_an_error_answer_with_such_a_header_is_never_passed_through(
    start_proxy, raw_upstream, value: bytes
):
    bad = Recorder(answer(b"503 Service Unavailable", b"X-A: " + value + b"\r\n", body=b"app"))
    proxy = await proxy_for(start_proxy, raw_upstream, bad)
    status, headers, body = parse(await raw_exchange(proxy, request()))
    assert (status, headers["X-Failover-Source"]) == (503, "none")
    assert json.loads(body)["tried"][0]["failure"] == "protocol_error"
    assert "X-A" not in headers
