"""Streams end to end (docs/configuration.md, "Streams and upgrades"): an SSE or
NDJSON answer goes out event by event; before its first event carrying data it fails
over like any answer, after it the route's deadline no longer applies, and a stream
the upstream breaks is aborted toward the client, never ended cleanly. Timings are in
loop time, shared by the upstream, the in-process proxy and the client; tolerances are
generous for a shared CI machine (bench/streams.py measures the real figures)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import route
from tests.helpers.streams import (
    NDJSON,
    PING,
    SSE,
    Call,
    Received,
    ScriptedStream,
    Then,
    ndjson,
    numbered_ndjson,
    numbered_sse,
    raw_head,
    raw_request,
    read_chunk,
    read_chunked,
    read_pieces,
    sse,
)

LATENCY = 0.05  # the most an event may lag from the upstream's write to the client's read
SECONDARY_EVENTS = numbered_sse(3, "secondary")


def proxied(*urls: str, **route_extra: Any) -> dict[str, Any]:
    """A config with upstreams ``primary`` (and ``secondary``) and one route over them."""
    names = ("primary", "secondary")[: len(urls)]
    return {
        "upstreams": {name: {"url": url} for name, url in zip(names, urls, strict=True)},
        "routes": [route(upstreams=names, **route_extra)],
    }


def assert_streamed(received: Received, call: Call) -> None:
    """Every piece reached the client within LATENCY of its write upstream, and the
    first long before the stream's last write."""
    lags = [round(got - sent, 3) for sent, got in zip(call.sent, received.arrived, strict=True)]
    assert max(lags) <= LATENCY, f"seconds from the upstream's write to the client: {lags}"
    assert received.arrived[0] < call.sent[-1] - 0.5


# --- event by event --------------------------------------------------------------------


async def test_sse_events_reach_the_client_as_the_upstream_sends_them(
    http_upstream, start_proxy, client
):
    stream = ScriptedStream(numbered_sse(10), interval=0.1)
    upstream = await http_upstream(stream)
    proxy = await start_proxy(proxied(upstream.url))
    async with client.get(proxy + "/v1/events") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == SSE
        assert response.headers["X-Failover-Source"] == "primary"
        assert response.headers["X-Failover-Health"] == "healthy"
        received = await read_pieces(response)
    assert received.clean, received.error
    assert received.pieces == stream.chunks
    assert_streamed(received, stream.call)


def padded_lines(count: int) -> list[bytes]:
    """JSON lines of about 2 KiB: each one alone passes a 1 KiB ``hold_max``."""
    return [ndjson({"n": n, "pad": "x" * 2048}) for n in range(count)]


# hold_max 1KiB on the text/plain cases: whether its lines are "events" to the proxy does
# not matter, the first one commits a stream by its size; the question is only whether
# the answer is a stream at all.
SMALL_HOLD = {"stream": {"hold_max": "1KiB"}}


@dataclass(frozen=True)
class Case:
    content_type: str
    chunks: list[bytes] = field(default_factory=lambda: numbered_ndjson(10))
    upstream_headers: dict[str, str] = field(default_factory=dict)
    request_headers: dict[str, str] = field(default_factory=dict)
    route: dict[str, Any] = field(default_factory=dict)


STREAMED = {
    "ndjson": Case(NDJSON),
    "jsonl": Case("application/jsonl"),
    "accept-event-stream": Case(
        "text/plain", padded_lines(10), request_headers={"Accept": SSE}, route=SMALL_HOLD
    ),
    "x-accel-buffering-no": Case(
        "text/plain",
        padded_lines(10),
        upstream_headers={"X-Accel-Buffering": "no"},
        route=SMALL_HOLD,
    ),
    "response-mode-stream": Case(
        "text/plain", padded_lines(10), route={"response_mode": "stream", **SMALL_HOLD}
    ),
}

BUFFERED = {
    "response-mode-buffer": Case(
        SSE, numbered_sse(10), route={"response_mode": "buffer", **SMALL_HOLD}
    ),
    "text-plain-in-auto": Case("text/plain", padded_lines(10), route=SMALL_HOLD),
}


async def answer_of(case: Case, http_upstream, start_proxy, client) -> tuple[Received, Call]:
    stream = ScriptedStream(
        case.chunks, interval=0.1, content_type=case.content_type, headers=case.upstream_headers
    )
    upstream = await http_upstream(stream)
    proxy = await start_proxy(proxied(upstream.url, **case.route))
    separator = b"\n\n" if case.content_type == SSE else b"\n"
    async with client.get(proxy + "/v1/answer", headers=case.request_headers) as response:
        assert response.status == 200
        assert response.headers["X-Failover-Source"] == "primary"
        received = await read_pieces(response, separator)
    assert received.clean, received.error
    assert received.pieces == case.chunks
    return received, stream.call


@pytest.mark.parametrize("case", STREAMED.values(), ids=STREAMED.keys())
async def test_an_answer_that_is_a_stream_goes_out_line_by_line(
    case, http_upstream, start_proxy, client
):
    received, call = await answer_of(case, http_upstream, start_proxy, client)
    assert_streamed(received, call)


@pytest.mark.parametrize("case", BUFFERED.values(), ids=BUFFERED.keys())
async def test_an_answer_that_is_not_a_stream_is_read_whole_first(
    case, http_upstream, start_proxy, client
):
    received, call = await answer_of(case, http_upstream, start_proxy, client)
    assert received.arrived[0] >= call.sent[-1]


async def test_a_stream_longer_than_the_route_deadline_arrives_whole(
    http_upstream, start_proxy, client
):
    stream = ScriptedStream(numbered_sse(15), interval=0.1)  # 1.4 s against a 0.5 s deadline
    upstream = await http_upstream(stream)
    proxy = await start_proxy(proxied(upstream.url, deadline="500ms"))
    async with client.get(proxy + "/v1/events") as response:
        assert response.headers["X-Failover-Source"] == "primary"
        received = await read_pieces(response)
    assert received.clean, received.error
    assert received.pieces == stream.chunks


# --- after the commit: aborted, never ended cleanly --------------------------------------


async def test_a_stream_silent_past_idle_timeout_is_aborted(http_upstream, start_proxy, client):
    stream = ScriptedStream(numbered_sse(2), interval=0.1, then=Then.HANG)
    upstream = await http_upstream(stream)
    proxy = await start_proxy(proxied(upstream.url, stream={"idle_timeout": "300ms"}))
    async with client.get(proxy + "/v1/events") as response:
        assert response.headers["X-Failover-Source"] == "primary"
        received = await read_pieces(response)
    assert received.pieces == stream.chunks
    assert isinstance(received.error, aiohttp.ClientPayloadError), received.error
    assert 0.25 <= received.ended - stream.call.sent[-1] < 2.0


async def test_a_stream_cut_by_the_upstream_is_aborted(http_upstream, start_proxy, client):
    stream = ScriptedStream(numbered_sse(3), interval=0.1, then=Then.CUT)
    upstream = await http_upstream(stream)
    proxy = await start_proxy(proxied(upstream.url))
    async with client.get(proxy + "/v1/events") as response:
        assert response.headers["X-Failover-Source"] == "primary"
        received = await read_pieces(response)
    assert received.pieces == stream.chunks
    assert isinstance(received.error, aiohttp.ClientPayloadError), received.error


async def test_a_stream_past_max_duration_is_aborted(http_upstream, start_proxy, client):
    stream = ScriptedStream(numbered_sse(30), interval=0.1)  # 2.9 s
    upstream = await http_upstream(stream)
    proxy = await start_proxy(proxied(upstream.url, stream={"max_duration": "500ms"}))
    async with client.get(proxy + "/v1/events") as response:
        received = await read_pieces(response)
    assert isinstance(received.error, aiohttp.ClientPayloadError), received.error
    assert 2 <= len(received.pieces) <= 10
    assert received.pieces == stream.chunks[: len(received.pieces)]
    assert received.ended - stream.call.started < 1.5


@pytest.mark.parametrize("then", [Then.CUT, Then.HANG], ids=["cut", "stalled"])
async def test_a_broken_stream_counts_against_its_upstream(
    then, http_upstream, start_proxy, client
):
    primary = await http_upstream(ScriptedStream(numbered_sse(2), then=then))
    secondary = await http_upstream(ScriptedStream(SECONDARY_EVENTS, interval=0.02))
    config = proxied(primary.url, secondary.url, stream={"idle_timeout": "300ms"})
    config["upstreams"]["primary"]["circuit_breaker"] = {
        "consecutive_failures": 1,
        "open_for": "1h",
    }
    proxy = await start_proxy(config)
    async with client.get(proxy + "/v1/events") as response:
        assert response.headers["X-Failover-Source"] == "primary"
        assert not (await read_pieces(response)).clean
    async with client.get(proxy + "/v1/events") as response:
        assert response.headers["X-Failover-Source"] == "secondary"
        assert 'next-hop=primary; details="breaker_open"' in response.headers["Proxy-Status"]
        assert (await read_pieces(response)).pieces == SECONDARY_EVENTS
    assert (primary.hits, secondary.hits) == (1, 1)


@pytest.mark.parametrize("abort", [True, False], ids=["abort", "pass"])
async def test_a_later_error_event_aborts_only_when_asked(
    abort, http_upstream, start_proxy, client
):
    error = sse({"message": "overloaded"}, event="error")
    chunks = [*numbered_sse(2, "before"), error, *numbered_sse(2, "after")]
    stream = ScriptedStream(chunks, interval=0.05)
    upstream = await http_upstream(stream)
    proxy = await start_proxy(proxied(upstream.url, stream={"abort_on_error_event": abort}))
    async with client.get(proxy + "/v1/events") as response:
        assert response.headers["X-Failover-Source"] == "primary"
        received = await read_pieces(response)
    if abort:
        assert isinstance(received.error, aiohttp.ClientPayloadError), received.error
        assert received.pieces[:2] == chunks[:2]
        assert not set(chunks[3:]) & set(received.pieces)
    else:
        assert received.clean, received.error
        assert received.pieces == chunks


# --- before the commit: failover as usual ------------------------------------------------

Primary = Callable[..., Awaitable[str]]


async def answering(status: int, http_upstream, refused_url) -> str:
    async def down(request: web.Request) -> web.Response:
        return web.Response(status=status, text="upstream is down")

    return (await http_upstream(down)).url


async def refusing(http_upstream, refused_url) -> str:
    return refused_url


def streaming(chunks: list[bytes], **script: Any) -> Primary:
    async def start(http_upstream, refused_url) -> str:
        return (await http_upstream(ScriptedStream(chunks, **script))).url

    return start


INVALID = 'details="invalid_response"'
TIMED_OUT = "error=http_response_timeout"

BEFORE_THE_FIRST_EVENT: dict[str, tuple[Primary, str]] = {
    "503": (lambda *fixtures: answering(503, *fixtures), "received-status=503"),
    "refused": (refusing, "error=connection_refused"),
    "headers-then-silence": (streaming([], then=Then.HANG), TIMED_OUT),
    "pings-then-silence": (streaming([PING] * 50, interval=0.05, then=Then.HANG), TIMED_OUT),
    "event-error": (
        streaming([sse({"message": "overloaded"}, event="error"), *numbered_sse(3)]),
        INVALID,
    ),
    "data-with-error-member": (
        streaming([sse({"error": {"message": "overloaded"}}), *numbered_sse(3)]),
        INVALID,
    ),
    "object-error": (
        streaming([sse({"object": "error", "message": "overloaded"}), *numbered_sse(3)]),
        INVALID,
    ),
    "ndjson-error-line": (
        streaming([ndjson({"error": "x"}), *numbered_ndjson(3)], content_type=NDJSON),
        INVALID,
    ),
}


@pytest.mark.parametrize(
    ("start_primary", "why"), BEFORE_THE_FIRST_EVENT.values(), ids=BEFORE_THE_FIRST_EVENT.keys()
)
async def test_a_try_that_fails_before_its_first_event_fails_over(
    start_primary, why, http_upstream, refused_url, start_proxy, client
):
    primary_url = await start_primary(http_upstream, refused_url)
    secondary = await http_upstream(ScriptedStream(SECONDARY_EVENTS, interval=0.02))
    proxy = await start_proxy(
        proxied(primary_url, secondary.url, stream={"first_event_timeout": "300ms"})
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with client.get(proxy + "/v1/events") as response:
        assert response.status == 200
        assert response.headers["X-Failover-Source"] == "secondary"
        assert response.headers["X-Failover-Health"] == "degraded"
        proxy_status = response.headers["Proxy-Status"]
        assert proxy_status.count("next-hop=") == 1
        assert "next-hop=primary" in proxy_status and why in proxy_status
        assert "Content-Length" not in response.headers
        received = await read_pieces(response)
    assert received.clean, received.error
    assert received.pieces == SECONDARY_EVENTS
    assert loop.time() - started < 2.0  # first_event_timeout, not the 10 s read timeout


async def test_a_first_event_with_a_null_error_member_is_data(http_upstream, start_proxy, client):
    chunks = [sse({"error": None, "n": 0}), *numbered_sse(2)]
    primary = await http_upstream(ScriptedStream(chunks, interval=0.02))
    secondary = await http_upstream(ScriptedStream(SECONDARY_EVENTS))
    proxy = await start_proxy(proxied(primary.url, secondary.url))
    async with client.get(proxy + "/v1/events") as response:
        assert response.headers["X-Failover-Source"] == "primary"
        assert "Proxy-Status" not in response.headers
        assert (await read_pieces(response)).pieces == chunks
    assert secondary.hits == 0


async def test_the_route_validate_rules_judge_the_first_event(http_upstream, start_proxy, client):
    primary = await http_upstream(ScriptedStream([sse({"choices": []}), *numbered_sse(2)]))
    good = [sse({"choices": [{"text": "hi"}]}), *SECONDARY_EVENTS]
    secondary = await http_upstream(ScriptedStream(good, interval=0.02))
    proxy = await start_proxy(
        proxied(primary.url, secondary.url, validate={"json_nonempty": "$.choices"})
    )
    async with client.get(proxy + "/v1/events") as response:
        assert response.headers["X-Failover-Source"] == "secondary"
        assert INVALID in response.headers["Proxy-Status"]
        assert (await read_pieces(response)).pieces == good


async def test_a_stream_commits_after_hold_max_bytes_without_an_event(
    http_upstream, start_proxy, client
):
    padding = b":" + b" " * 2048 + b"\n\n"  # a comment, as servers send to defeat buffering
    stream = ScriptedStream([padding, *numbered_sse(2)], interval=0.6)
    upstream = await http_upstream(stream)
    proxy = await start_proxy(proxied(upstream.url, stream={"hold_max": "1KiB"}))
    async with client.get(proxy + "/v1/events") as response:
        assert response.headers["X-Failover-Source"] == "primary"
        received = await read_pieces(response)
    assert received.clean, received.error
    assert received.pieces == stream.chunks
    assert received.arrived[0] - stream.call.sent[0] < 0.3  # not held for the event at 0.6 s


# --- the client, the cache, the framing ------------------------------------------------


async def test_a_client_that_leaves_closes_the_upstream_connection(http_upstream, start_proxy):
    stream = ScriptedStream(numbered_sse(100), interval=0.1)  # 10 s unless it is cut short
    upstream = await http_upstream(stream)
    proxy = await start_proxy(proxied(upstream.url))
    reader, writer = await raw_request(proxy, "/v1/events")
    loop = asyncio.get_running_loop()
    try:
        assert (await raw_head(reader)).status == 200
        body = b""
        async with asyncio.timeout(5):
            while body.count(b"\n\n") < 2:
                body += await read_chunk(reader)
    finally:
        writer.close()
    left = loop.time()
    while stream.call.peer_closed_at is None and loop.time() - left < 2.0:
        await asyncio.sleep(0.01)
    assert stream.call.peer_closed_at is not None, "the upstream still connected 2 s later"
    assert stream.call.peer_closed_at - left < 1.0
    assert len(stream.call.sent) < 30


class Switch:
    """``/v1/events`` streams, ``/v1/doc`` is a JSON document; both 503 once failing."""

    def __init__(self) -> None:
        self.failing = False
        self.stream = ScriptedStream(numbered_sse(3), interval=0.05)

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if self.failing:
            return web.Response(status=503, text="down")
        if request.path == "/v1/events":
            return await self.stream(request)
        return web.json_response({"doc": 1})


async def test_a_stream_is_never_stored_in_the_cache(http_upstream, start_proxy, client):
    switch = Switch()
    upstream = await http_upstream(switch)
    config = proxied(upstream.url, cache={"stale_for": "1h"})
    config["upstreams"]["primary"]["circuit_breaker"] = {"enabled": False}
    proxy = await start_proxy(config)
    async with client.get(proxy + "/v1/events") as response:
        assert (await read_pieces(response)).pieces == switch.stream.chunks
    async with client.get(proxy + "/v1/doc") as response:
        assert await response.json() == {"doc": 1}
    switch.failing = True
    async with client.get(proxy + "/v1/doc") as response:  # the cache works on this route
        assert response.headers["X-Failover-Source"] == "cache"
    async with client.get(proxy + "/v1/events") as response:
        assert response.headers["X-Failover-Source"] != "cache"
        assert response.status == 503
        assert b"data:" not in await response.read()


async def test_concurrent_streams_on_a_cached_route_are_not_coalesced(
    http_upstream, start_proxy, client
):
    stream = ScriptedStream(numbered_sse(10), interval=0.1)
    upstream = await http_upstream(stream)
    proxy = await start_proxy(proxied(upstream.url, cache={"stale_for": "1h"}))

    async def listen() -> Received:
        async with client.get(proxy + "/v1/events") as response:
            return await read_pieces(response)

    first = asyncio.create_task(listen())
    await asyncio.sleep(0.1)
    second = await listen()
    assert (await first).pieces == second.pieces == stream.chunks
    assert len(stream.calls) == 2
    assert second.arrived[0] < stream.calls[0].sent[-1] - 0.3


async def test_a_stream_is_chunked_to_an_http11_client_without_content_length(
    http_upstream, start_proxy
):
    stream = ScriptedStream(numbered_sse(5), interval=0.1)
    upstream = await http_upstream(stream)
    proxy = await start_proxy(proxied(upstream.url))
    reader, writer = await raw_request(proxy, "/v1/events", [("Accept", SSE)])
    try:
        head = await raw_head(reader)
        chunks = await read_chunked(reader)
    finally:
        writer.close()
    assert head.status == 200
    assert head.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in head.headers
    assert head.headers["x-failover-source"] == "primary"
    assert chunks.terminated
    assert chunks.body == b"".join(stream.chunks)
    assert chunks.arrived[0] < stream.call.sent[-1] - 0.2


async def test_a_cut_stream_ends_without_the_last_chunk(http_upstream, start_proxy):
    stream = ScriptedStream(numbered_sse(3), interval=0.1, then=Then.CUT)
    upstream = await http_upstream(stream)
    proxy = await start_proxy(proxied(upstream.url))
    reader, writer = await raw_request(proxy, "/v1/events")
    try:
        assert (await raw_head(reader)).headers["transfer-encoding"] == "chunked"
        chunks = await read_chunked(reader)
    finally:
        writer.close()
    assert not chunks.terminated
    assert chunks.body == b"".join(stream.chunks)
