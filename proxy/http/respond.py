"""Writing the answer downstream: the chosen upstream answer (whole, or streamed with
an abort if the upstream dies after the commit point), the answer when every upstream
failed, and the proxy's own answers. The handler in :mod:`proxy.http.handler` decides which.
"""

from __future__ import annotations

import json
from enum import Enum

import aiohttp
from aiohttp import web

from proxy.buffer.journal import Write
from proxy.cache.store import Entry
from proxy.chain.errors import Failure, classify_exception
from proxy.chain.headers import HeaderList, proxy_status
from proxy.chain.payloads import Payload, failure_report, proxy_error
from proxy.chain.plan import FailoverPlan, Final, Health, Source, final_answer
from proxy.config.runtime import RouteRuntime, Runtime
from proxy.upstreams.attempt import Answer, ErrorAnswer


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


def fresh_hit(
    request: web.BaseRequest,
    runtime: Runtime,
    entry: Entry,
    age: float,
    health: Health,
    cache_status: str,
) -> web.Response:
    """A stored answer served without asking an upstream (fresh, or refreshed behind)."""
    response = cached_response(request, runtime, entry, age)
    names = runtime.header_names
    response.headers.add("Cache-Status", cache_status)  # after other caches' members
    response.headers[names.source] = Source.CACHE
    response.headers[names.health] = health
    return response


def when_all_failed(
    request: web.BaseRequest,
    runtime: Runtime,
    route: RouteRuntime,
    plan: FailoverPlan,
    last_error: ErrorAnswer | None,
    stale: tuple[Entry, float] | None,
) -> web.Response:
    final = final_answer(
        has_stale=stale is not None,
        has_default=route.default is not None,
        last_answer_complete=last_error is not None,
        deadline_exceeded=plan.deadline_exceeded,
    )
    names = runtime.header_names
    source: str
    if final is Final.STALE and stale is not None:
        response = cached_response(request, runtime, *stale)
        response.headers.add("Cache-Status", "failover-proxy; hit; stale")
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
        status = 504 if final is Final.TIMEOUT else 503
        report = failure_report(
            route.name, plan.hops, status, deadline_exceeded=plan.deadline_exceeded
        )
        response = payload_response(report)
        source = Source.NONE
    response.headers[names.source] = source
    response.headers[names.health] = Health.CRITICAL
    # added, not set: a passed-through answer keeps other proxies' members before ours
    response.headers.add(names.proxy_status, proxy_status(plan.hops))
    return response


async def relay(
    request: web.BaseRequest,
    runtime: Runtime,
    plan: FailoverPlan,
    upstream: str,
    answer: Answer,
    cache_status: str | None = None,
) -> tuple[web.StreamResponse, Ending | Failure]:
    """The answer relayed, and how the exchange ended (a failure while streaming)."""
    upstream_response = answer.response
    headers = runtime.forwarding.downstream_response(upstream_response.headers, request.version)
    names = runtime.header_names
    headers.append((names.source, upstream))
    headers.append((names.health, plan.health_of(upstream)))
    if plan.hops:
        headers.append((names.proxy_status, proxy_status(plan.hops)))
    if cache_status is not None:
        headers.append(("Cache-Status", cache_status))
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
    names = runtime.header_names
    response.headers[names.source] = Source.NONE
    response.headers[names.health] = Health.CRITICAL


def buffered_answer(runtime: Runtime, plan: FailoverPlan | None, write: Write) -> web.Response:
    """``202``: the write is on disk and will be delivered (README, "Writes")."""
    body = {"buffered": True, "id": write.id, "idempotency_key": write.idempotency_key}
    response = web.json_response(body, status=202)
    names = runtime.header_names
    response.headers[names.source] = Source.BUFFER
    response.headers[names.health] = Health.CRITICAL
    if plan is not None and plan.hops:
        response.headers[names.proxy_status] = proxy_status(plan.hops)
    return response


def unbuffered_write(runtime: Runtime, route: RouteRuntime, plan: FailoverPlan) -> web.Response:
    """A write that failed in a way that may have applied it, without an Idempotency-Key
    to make a replay safe: 502 (504 when the deadline ran out), never buffered."""
    status = 504 if plan.deadline_exceeded else 502
    report = failure_report(route.name, plan.hops, status, deadline_exceeded=plan.deadline_exceeded)
    document = json.loads(report.body)
    document["error"] = (
        "the write may have reached an upstream before it failed; it was not buffered "
        "(send an Idempotency-Key to make it safe to keep and replay)"
    )
    response = web.json_response(document, status=status)
    names = runtime.header_names
    response.headers[names.source] = Source.NONE
    response.headers[names.health] = Health.CRITICAL
    response.headers[names.proxy_status] = proxy_status(plan.hops)
    return response


def buffer_refused(runtime: Runtime, message: str, retry_after: int) -> web.Response:
    """``503`` with ``Retry-After``: the buffer is full or cannot write; never a 202."""
    response = payload_response(proxy_error(503, message))
    response.headers["Retry-After"] = str(retry_after)
    mark_own(runtime, response)
    return response
