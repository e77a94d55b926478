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
from collections.abc import AsyncIterator, Callable
from enum import Enum

from proxy.buffer.frames import Write
from proxy.cache.status import STALE
from proxy.cache.store import Entry
from proxy.chain.errors import Failure
from proxy.chain.headers import proxy_status
from proxy.chain.outcome import UNSERVED, Health, Outcome, Source
from proxy.chain.payloads import Payload, failure_report, proxy_error
from proxy.chain.plan import FailoverPlan, Final, final_answer
from proxy.chain.streams import ErrorWatch
from proxy.config.runtime import Runtime
from proxy.http.exchange import Exchange
from proxy.http.wire import Reply, has_date, render_fields
from proxy.upstreams.attempt import Answer, ErrorAnswer
from proxy.upstreams.exceptions import classify_exception
from proxy.upstreams.response import ErrorEvent, StreamTooLong, UpstreamError, UpstreamResponse


class Ending(Enum):
    """How a relayed answer ended, when it was not by an upstream failure."""

    COMPLETE = "complete"
    CLIENT_GONE = "client_gone"  # says nothing about the upstream: not counted
    LIMIT = "limit"  # the proxy's own limit cut it (stream.max_duration): not counted


Ended = Callable[["Ending | Failure"], None]


def cached_response(request_method: str, runtime: Runtime, entry: Entry, age: float) -> Reply:
    """A stored answer, with ``Age`` (RFC 9111 5.1). Its header lines are rendered once
    per entry and config (the rules that filter them come with the config)."""
    forwarding = runtime.forwarding
    rendered = entry.rendered.get(forwarding)
    if rendered is None:
        fields = render_fields(forwarding.from_store(entry.headers))
        rendered = (fields, has_date(fields))
        entry.rendered.clear()  # a reload's older rules
        entry.rendered[forwarding] = rendered
    fields, dated = rendered
    headers = [("Age", str(int(age)))]
    if request_method == "HEAD":
        length = str(len(entry.body)) if entry.body else None
        return Reply(
            entry.status,
            headers,
            reason=entry.reason,
            keep_length=length,
            fields=fields,
            dated=dated,
        )
    return Reply(entry.status, headers, entry.body, reason=entry.reason, fields=fields, dated=dated)


def stamp(runtime: Runtime, reply: Reply, outcome: Outcome, *, clean: bool = False) -> None:
    """The outcome's headers on an answer: our source and health replace any of those
    names (``clean``: the headers hold none, as a stored copy's do), our
    ``Cache-Status`` member goes after other caches' (RFC 9211 section 2)."""
    names = runtime.header_names
    headers = reply.headers
    if not clean:
        own = runtime.forwarding.own
        if any(name.lower() in own for name, _ in headers):
            headers[:] = [(name, value) for name, value in headers if name.lower() not in own]
    headers.append((names.source, outcome.source))
    headers.append((names.health, outcome.health))
    if outcome.cache_status is not None:
        headers.append(("Cache-Status", outcome.cache_status))


def fresh_hit(exchange: Exchange, entry: Entry, age: float) -> Reply:
    """A stored answer served without asking an upstream (fresh, shared with a leader's
    call, or refreshed behind), as the cache recorded in ``exchange.outcome``."""
    reply = cached_response(exchange.method, exchange.runtime, entry, age)
    stamp(exchange.runtime, reply, exchange.outcome, clean=True)
    return reply


def when_all_failed(
    exchange: Exchange,
    plan: FailoverPlan,
    last_error: ErrorAnswer | None,
    stale: tuple[Entry, float] | None,
) -> Reply:
    """The end of the chain (:func:`proxy.chain.plan.final_answer`), recorded as the
    exchange's outcome: a stale copy, the default payload, the last error, or ours."""
    runtime, route = exchange.runtime, exchange.route
    final = final_answer(
        has_stale=stale is not None,
        has_default=route.default is not None,
        last_answer_complete=last_error is not None,
        deadline_exceeded=plan.deadline_exceeded,
    )
    source: str
    cache_status = None
    if final is Final.STALE and stale is not None:
        reply = cached_response(exchange.method, runtime, *stale)
        cache_status = STALE
        source = Source.CACHE
    elif final is Final.DEFAULT and route.default is not None:
        reply = payload_response(route.default)
        source = Source.DEFAULT
    elif final is Final.PASS_THROUGH and last_error is not None:
        headers = runtime.forwarding.downstream_response(last_error.headers, last_error.version)
        reply = Reply(last_error.status, headers, last_error.body, reason=last_error.reason)
        source = last_error.upstream
    else:
        code = 504 if final is Final.TIMEOUT else 503
        report = failure_report(
            route.name, plan.hops, code, deadline_exceeded=plan.deadline_exceeded
        )
        reply = payload_response(report)
        source = Source.NONE
    exchange.outcome = Outcome(source, Health.CRITICAL, cache_status)
    stamp(runtime, reply, exchange.outcome)
    # added, not set: a passed-through answer keeps other proxies' members before ours
    reply.headers.append((runtime.header_names.proxy_status, proxy_status(plan.hops)))
    return reply


def relay(exchange: Exchange, plan: FailoverPlan, answer: Answer, ended: Ended) -> Reply:
    """The answer relayed, with the headers of the outcome the handler recorded.
    ``ended`` hears how the exchange ended: at once for an answer read whole, when its
    last byte is out (or the upstream failed mid-body) for one that streams."""
    runtime, outcome = exchange.runtime, exchange.outcome
    upstream_response = answer.response
    # Via names the protocol of the message received: the upstream's answer (RFC 9110 7.6.3)
    headers = runtime.forwarding.downstream_pairs(
        upstream_response.pairs, upstream_response.connection_listed, upstream_response.version
    )
    names = runtime.header_names
    headers.append((names.source, outcome.source))
    headers.append((names.health, outcome.health))
    if plan.hops:
        headers.append((names.proxy_status, proxy_status(plan.hops)))
    if outcome.cache_status is not None:
        headers.append(("Cache-Status", outcome.cache_status))
    status = upstream_response.status
    reason = upstream_response.reason
    if status == 101:  # the handler adds the tunnel that takes the connections over
        headers.append(("Connection", "Upgrade"))
        headers.append(("Upgrade", upstream_response.headers.get("Upgrade", "")))
        ended(Ending.COMPLETE)
        return Reply(status, headers, reason=reason)
    if answer.stream is not None:
        # chunks go out as they arrive, never with a Content-Length (even a stream that
        # ended while held), so a cut one is never mistaken for a whole one
        watch = ErrorWatch(answer.stream) if exchange.route.stream.abort_on_error_event else None
        stream = _stream(upstream_response, answer.chunks, ended, watch)
        return Reply(status, headers, reason=reason, stream=stream, dated=upstream_response.dated)
    if answer.complete:
        upstream_response.release()
        ended(Ending.COMPLETE)
        if exchange.method == "HEAD" or status in (204, 304) or status < 200:
            # the upstream's Content-Length on HEAD/304 describes the GET body
            length = upstream_response.content_length
            keep = str(length) if length is not None else None
            return Reply(
                status, headers, reason=reason, keep_length=keep, dated=upstream_response.dated
            )
        chunks = answer.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return Reply(status, headers, body, reason=reason, dated=upstream_response.dated)
    return Reply(
        status,
        headers,
        reason=reason,
        stream=_stream(upstream_response, answer.chunks, ended),
        length=upstream_response.content_length,
        dated=upstream_response.dated,
    )


async def _stream(
    upstream_response: UpstreamResponse,
    chunks: list[bytes],
    ended: Ended,
    watch: ErrorWatch | None = None,
) -> AsyncIterator[bytes]:
    """The rest of the body as it arrives. If the upstream fails now, the failure is
    raised to the listener, which aborts the client connection (never a clean end), and
    reported, so it still counts; a client that left is reported as such. ``watch``: a
    stream aborted after the chunk that carries an error event (that chunk still goes
    out, so the client can read why)."""
    ending: Ending | Failure = Ending.CLIENT_GONE
    try:
        for chunk in chunks:
            yield chunk
            if watch is not None and (problem := watch.feed(chunk)) is not None:
                ending = Failure.INVALID_RESPONSE
                raise ErrorEvent(problem)
        while True:
            try:
                chunk = await upstream_response.read_chunk()
            except StreamTooLong:
                ending = Ending.LIMIT
                raise
            except (UpstreamError, OSError) as exc:
                ending = classify_exception(exc) or Failure.BODY_TRUNCATED
                raise
            if not chunk:
                break
            yield chunk
            if watch is not None and (problem := watch.feed(chunk)) is not None:
                ending = Failure.INVALID_RESPONSE
                raise ErrorEvent(problem)
        ending = Ending.COMPLETE
    finally:
        if ending is Ending.COMPLETE:
            upstream_response.release()
        else:
            upstream_response.close()
        ended(ending)


def payload_response(payload: Payload) -> Reply:
    """An answer carrying a payload of the proxy's own."""
    return Reply(payload.status, list(payload.headers), payload.body)


def own_answer(runtime: Runtime, payload: Payload, *, close: bool = False) -> Reply:
    """An answer of the proxy's own (400, 404, 405, 408, 413): nothing went upstream."""
    reply = payload_response(payload)
    mark_own(runtime, reply)
    reply.close = close
    return reply


def mark_own(runtime: Runtime, reply: Reply) -> None:
    """Nothing served it: an answer of the proxy's own."""
    stamp(runtime, reply, UNSERVED)


def _json(status: int, document: object) -> Reply:
    body = json.dumps(document).encode()
    return Reply(status, [("Content-Type", "application/json; charset=utf-8")], body)


def buffered_answer(exchange: Exchange, plan: FailoverPlan | None, write: Write) -> Reply:
    """``202``: the write is on disk and will be delivered (docs/configuration.md, "Writes")."""
    reply = _json(202, {"buffered": True, "id": write.id, "idempotency_key": write.idempotency_key})
    runtime = exchange.runtime
    exchange.outcome = Outcome(Source.BUFFER, Health.CRITICAL)
    stamp(runtime, reply, exchange.outcome)
    if plan is not None and plan.hops:
        reply.headers.append((runtime.header_names.proxy_status, proxy_status(plan.hops)))
    return reply


def unbuffered_write(exchange: Exchange, plan: FailoverPlan) -> Reply:
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
    reply = _json(status, document)
    exchange.outcome = UNSERVED
    stamp(runtime, reply, exchange.outcome)
    reply.headers.append((runtime.header_names.proxy_status, proxy_status(plan.hops)))
    return reply


def buffer_refused(runtime: Runtime, message: str, retry_after: int) -> Reply:
    """``503`` with ``Retry-After``: the buffer is full or cannot write; never a 202."""
    reply = payload_response(proxy_error(503, message))
    reply.headers.append(("Retry-After", str(retry_after)))
    mark_own(runtime, reply)
    return reply
