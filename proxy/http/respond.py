"""Writing the answer downstream: the chosen upstream answer (whole, or streamed with
an abort if the upstream dies after the commit point), the answer when every upstream
failed, and the proxy's own answers. The handler in :mod:`proxy.http.handler` decides which.

What served an answer is recorded on the exchange (:class:`proxy.chain.outcome.Outcome`)
by whoever decides it, here when it is decided here, and the source, health and
``Cache-Status`` headers are written from that record (:func:`stamp`), never the other
way round.
"""

from __future__ import annotations

import json
from enum import Enum

import aiohttp
from aiohttp import web

from proxy.buffer.frames import Write
from proxy.cache.status import STALE
from proxy.cache.store import Entry
from proxy.chain.errors import Failure
from proxy.chain.headers import HeaderList, proxy_status
from proxy.chain.outcome import UNSERVED, Health, Outcome, Source
from proxy.chain.payloads import Payload, failure_report, proxy_error
from proxy.chain.plan import FailoverPlan, Final, final_answer
from proxy.config.runtime import Runtime
from proxy.http.exchange import Exchange
from proxy.upstreams.attempt import Answer, ErrorAnswer
from proxy.upstreams.exceptions import classify_exception


class Ending(Enum):
    """How a relayed answer ended, when it was not by an upstream failure."""

    COMPLETE = "complete"
    CLIENT_GONE = "client_gone"  # says nothing about the upstream: not counted


def cached_response(
    request: web.BaseRequest, runtime: Runtime, entry: Entry, age: float
) -> web.Response:
    """A stored answer, with ``Age`` (RFC 9111 5.1)."""
    headers = runtime.forwarding.from_store(entry.headers)
    response = web.Response(status=entry.status, reason=entry.reason, headers=headers)
    if request.method != "HEAD":
        response.body = entry.body
    response.headers["Age"] = str(int(age))
    return response


def stamp(runtime: Runtime, response: web.StreamResponse, outcome: Outcome) -> None:
    """The outcome's headers on an answer: our source and health replace any of those
    names, our ``Cache-Status`` member goes after other caches' (RFC 9211 section 2)."""
    names = runtime.header_names
    response.headers[names.source] = outcome.source
    response.headers[names.health] = outcome.health
    if outcome.cache_status is not None:
        response.headers.add("Cache-Status", outcome.cache_status)


def fresh_hit(exchange: Exchange, entry: Entry, age: float) -> web.Response:
    """A stored answer served without asking an upstream (fresh, shared with a leader's
    call, or refreshed behind), as the cache recorded in ``exchange.outcome``."""
    assert exchange.request is not None
    response = cached_response(exchange.request, exchange.runtime, entry, age)
    stamp(exchange.runtime, response, exchange.outcome)
    return response


def when_all_failed(
    exchange: Exchange,
    plan: FailoverPlan,
    last_error: ErrorAnswer | None,
    stale: tuple[Entry, float] | None,
) -> web.Response:
    """The end of the chain (:func:`proxy.chain.plan.final_answer`), recorded as the
    exchange's outcome: a stale copy, the default payload, the last error, or ours."""
    request, runtime, route = exchange.request, exchange.runtime, exchange.route
    assert request is not None
    final = final_answer(
        has_stale=stale is not None,
        has_default=route.default is not None,
        last_answer_complete=last_error is not None,
        deadline_exceeded=plan.deadline_exceeded,
    )
    source: str
    cache_status = None
    if final is Final.STALE and stale is not None:
        response = cached_response(request, runtime, *stale)
        cache_status = STALE
        source = Source.CACHE
    elif final is Final.DEFAULT and route.default is not None:
        response = payload_response(route.default)
        source = Source.DEFAULT
    elif final is Final.PASS_THROUGH and last_error is not None:
        headers = runtime.forwarding.downstream_response(last_error.headers, request.version)
        response = web.Response(status=last_error.status, reason=last_error.reason, headers=headers)
        if request.method != "HEAD":
            response.body = last_error.body
        source = last_error.upstream
    else:
        code = 504 if final is Final.TIMEOUT else 503
        report = failure_report(
            route.name, plan.hops, code, deadline_exceeded=plan.deadline_exceeded
        )
        response = payload_response(report)
        source = Source.NONE
    exchange.outcome = Outcome(source, Health.CRITICAL, cache_status)
    stamp(runtime, response, exchange.outcome)
    # added, not set: a passed-through answer keeps other proxies' members before ours
    response.headers.add(runtime.header_names.proxy_status, proxy_status(plan.hops))
    return response


async def relay(
    exchange: Exchange, plan: FailoverPlan, answer: Answer
) -> tuple[web.StreamResponse, Ending | Failure]:
    """The answer relayed, with the headers of the outcome the handler recorded, and how
    the exchange ended (a failure while streaming)."""
    request, runtime, outcome = exchange.request, exchange.runtime, exchange.outcome
    assert request is not None
    upstream_response = answer.response
    headers = runtime.forwarding.downstream_response(upstream_response.headers, request.version)
    names = runtime.header_names
    headers.append((names.source, outcome.source))
    headers.append((names.health, outcome.health))
    if plan.hops:
        headers.append((names.proxy_status, proxy_status(plan.hops)))
    if outcome.cache_status is not None:
        headers.append(("Cache-Status", outcome.cache_status))
    status = upstream_response.status
    if answer.complete:
        upstream_response.release()
        return _complete_response(
            request, status, upstream_response, headers, answer.chunks
        ), Ending.COMPLETE
    return await _stream(request, status, upstream_response, headers, answer.chunks)


def _complete_response(
    request: web.BaseRequest,
    status: int,
    upstream_response: aiohttp.ClientResponse,
    headers: HeaderList,
    chunks: list[bytes],
) -> web.Response:
    response = web.Response(status=status, reason=upstream_response.reason, headers=headers)
    if request.method == "HEAD" or status in (204, 304) or status < 200:
        # Keep the upstream's Content-Length for HEAD/304: it describes the GET body.
        length = upstream_response.headers.get("Content-Length")
        if length is not None and status != 204:
            response.headers["Content-Length"] = length
        return response
    response.body = b"".join(chunks) if len(chunks) != 1 else chunks[0]
    return response


async def _stream(
    request: web.BaseRequest,
    status: int,
    upstream_response: aiohttp.ClientResponse,
    headers: HeaderList,
    chunks: list[bytes],
) -> tuple[web.StreamResponse, Ending | Failure]:
    """Stream the rest of the body. If the upstream fails now, the client connection is
    aborted (never a clean end) and the failure is returned, so it still counts."""
    response = web.StreamResponse(status=status, reason=upstream_response.reason, headers=headers)
    length = upstream_response.content_length
    if length is not None:
        response.content_length = length
    elif request.version >= aiohttp.HttpVersion11:
        response.enable_chunked_encoding()
    ending: Ending | Failure = Ending.CLIENT_GONE
    try:
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
        while True:
            try:
                chunk = await upstream_response.content.readany()
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                ending = classify_exception(exc) or Failure.BODY_TRUNCATED
                raise
            if not chunk:
                break
            await response.write(chunk)
    except (aiohttp.ClientError, OSError, TimeoutError):
        # The upstream died mid-body, or the client went away.
        upstream_response.close()
        if request.transport is not None:
            request.transport.abort()
        return response, ending
    upstream_response.release()
    await response.write_eof()
    return response, Ending.COMPLETE


def payload_response(payload: Payload) -> web.Response:
    """A response carrying a payload of the proxy's own."""
    return web.Response(status=payload.status, body=payload.body, headers=payload.headers)


def own_answer(runtime: Runtime, payload: Payload, *, close: bool = False) -> web.Response:
    """An answer of the proxy's own (400, 404, 405, 408, 413): nothing went upstream."""
    response = payload_response(payload)
    mark_own(runtime, response)
    if close:
        response.force_close()
    return response


def mark_own(runtime: Runtime, response: web.StreamResponse) -> None:
    """Nothing served it: an answer of the proxy's own."""
    stamp(runtime, response, UNSERVED)


def buffered_answer(exchange: Exchange, plan: FailoverPlan | None, write: Write) -> web.Response:
    """``202``: the write is on disk and will be delivered (docs/configuration.md, "Writes")."""
    body = {"buffered": True, "id": write.id, "idempotency_key": write.idempotency_key}
    response = web.json_response(body, status=202)
    runtime = exchange.runtime
    exchange.outcome = Outcome(Source.BUFFER, Health.CRITICAL)
    stamp(runtime, response, exchange.outcome)
    if plan is not None and plan.hops:
        response.headers[runtime.header_names.proxy_status] = proxy_status(plan.hops)
    return response


def unbuffered_write(exchange: Exchange, plan: FailoverPlan) -> web.Response:
    """A write that failed in a way that may have applied it, without an Idempotency-Key
    to make a replay safe: 502 (504 when the deadline ran out), never buffered."""
    runtime, route = exchange.runtime, exchange.route
    status = 504 if plan.deadline_exceeded else 502
    report = failure_report(route.name, plan.hops, status, deadline_exceeded=plan.deadline_exceeded)
    document = json.loads(report.body)
    document["error"] = (
        "the write may have reached an upstream before it failed; it was not buffered "
        "(send an Idempotency-Key to make it safe to keep and replay)"
    )
    response = web.json_response(document, status=status)
    exchange.outcome = UNSERVED
    stamp(runtime, response, exchange.outcome)
    response.headers[runtime.header_names.proxy_status] = proxy_status(plan.hops)
    return response


def buffer_refused(runtime: Runtime, message: str, retry_after: int) -> web.Response:
    """``503`` with ``Retry-After``: the buffer is full or cannot write; never a 202."""
    response = payload_response(proxy_error(503, message))
    response.headers["Retry-After"] = str(retry_after)
    mark_own(runtime, response)
    return response
