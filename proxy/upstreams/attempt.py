"""One try against one upstream, bounded by what is left of the route's deadline, reduced to an
:class:`Answer` (good enough to relay) or a :class:`Failed` (with its failure class).

What counts as failure is the route's: a status in ``failure_statuses`` or any
exception :func:`proxy.upstreams.exceptions.classify_exception` knows (an answer the
strict parser refuses, a control character in a header say, is ``protocol_error``,
never relayed nor passed through). A failed answer's body is
kept (up to a bound) because it may still be passed through when nothing better is
left. A good answer's body is read up to ``max_buffered`` bytes before the caller
commits, so a short read there is still a failure of this try, not of the client's
response.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable
from dataclasses import dataclass

from multidict import CIMultiDict

from proxy.chain.errors import Failure, classify_status
from proxy.chain.headers import HeaderList, parse_retry_after
from proxy.chain.streams import FirstEvent, FirstEventScanner, StreamKind, stream_kind
from proxy.chain.validate import Validator
from proxy.config.runtime import StreamSettings
from proxy.upstreams.client import UpstreamClient
from proxy.upstreams.drills import Drill
from proxy.upstreams.exceptions import classify_exception
from proxy.upstreams.response import UpstreamResponse

log = logging.getLogger("failover_proxy")


@dataclass(slots=True)
class Answer:
    """A good upstream answer; ``chunks`` is its body so far, all of it if ``complete``.
    ``stream``: the answer is a stream of that kind, committed at its first event."""

    response: UpstreamResponse
    chunks: list[bytes]
    complete: bool
    stream: StreamKind | None = None


@dataclass(slots=True)  # made per request: a frozen one costs 3x to build
class Streaming:
    """What a try needs to know to tell and hold a stream: the route's
    ``response_mode`` and ``stream`` settings, and the request's ``Accept``."""

    mode: str
    settings: StreamSettings
    accept: str | None


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """A complete failed answer (a 5xx, a 429), kept to pass through as a last resort."""

    upstream: str
    status: int
    reason: str | None
    headers: CIMultiDict[str]
    body: bytes
    version: tuple[int, int] = (1, 1)  # the upstream's HTTP version (Via names it)


@dataclass(frozen=True, slots=True)
class Failed:
    failure: Failure
    status: int | None = None
    retry_after: float | None = None
    error_answer: ErrorAnswer | None = None


async def _read_up_to(response: UpstreamResponse, limit: int) -> tuple[list[bytes], bool]:
    """The body's first chunks, until more than ``limit`` bytes or the end."""
    if response.method == "HEAD" or response.status in (204, 304):
        return [], True
    length = response.content_length
    if length is not None:
        if length > limit:
            return [], False
        return [await response.read()], True
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await response.content.readany()
        if not chunk:  # a body cut short raises BodyCut instead
            return chunks, True
        size += len(chunk)
        chunks.append(chunk)
    return chunks, False


async def _failed_answer(
    client: UpstreamClient, response: UpstreamResponse, failure: Failure, limit: int
) -> Failed:
    retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
    chunks, complete = await _read_up_to(response, limit)
    error_answer = None
    if complete:
        response.release()
        error_answer = ErrorAnswer(
            upstream=client.settings.name,
            status=response.status,
            reason=response.reason,
            headers=CIMultiDict(response.headers),
            body=b"".join(chunks),
            version=response.version,
        )
    else:
        response.close()
    return Failed(failure, response.status, retry_after, error_answer)


async def _validated(
    upstream: str, response: UpstreamResponse, validator: Validator
) -> Answer | Failed:
    """A validated route needs the whole body before it can commit; one too large to
    check fails (it must not pass unchecked), and a failed check is never passed on."""
    chunks, complete = await _read_up_to(response, validator.max_body)
    body = b"".join(chunks)
    if not complete:
        problem: str | None = f"body larger than {validator.max_body} bytes cannot be checked"
    else:
        problem = validator.problem(response.status, response.headers.get("Content-Type"), body)
    if problem is not None:
        response.close()
        log.info("%s answered %s: %s", upstream, response.status, problem)
        return Failed(Failure.INVALID_RESPONSE, response.status)
    return Answer(response, [body], True)


async def _held(
    client: UpstreamClient,
    response: UpstreamResponse,
    kind: StreamKind,
    settings: StreamSettings,
    validator: Validator | None,
) -> Answer | Failed:
    """A stream held until its first event that carries data, or ``hold_max`` bytes:
    the commit point. Until then it may still fail (it ends, stalls past
    ``first_event_timeout``, or its first event is an error or fails validation) and
    the chain moves on; after it, the route's deadline no longer applies and the
    stream's own limits do."""
    name = client.settings.name
    wait = settings.first_event_timeout or client.settings.read_timeout
    response.stream_limits(wait)  # the silence allowed before the first event
    scanner = FirstEventScanner(kind)
    chunks: list[bytes] = []
    event: FirstEvent | None = None
    complete = False
    try:
        async with asyncio.timeout(wait):
            while event is None and scanner.held < settings.hold_max:
                chunk = await response.read_chunk()
                if not chunk:
                    complete = True
                    break
                chunks.append(chunk)
                event = scanner.feed(chunk)
    except TimeoutError:
        response.close()
        log.info("%s sent no first event within %ss", name, wait)
        return Failed(Failure.READ_TIMEOUT)
    problem: str | None = None
    if event is not None:
        problem = event.error
        if problem is None and validator is not None:
            content_type = response.headers.get("Content-Type")
            problem = validator.problem(response.status, content_type, event.data)
    elif complete and kind is not StreamKind.OTHER:
        problem = "the stream ended before its first event"
    if problem is not None:
        response.close()
        log.info("%s answered %s: %s", name, response.status, problem)
        retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
        return Failed(Failure.INVALID_RESPONSE, response.status, retry_after)
    response.stream_limits(
        settings.idle_timeout, deadline=False, max_duration=settings.max_duration
    )
    return Answer(response, chunks, complete, kind)


def _stream_kind(response: UpstreamResponse, streaming: Streaming | None) -> StreamKind | None:
    if streaming is None or streaming.mode == "buffer":
        return None
    if response.method == "HEAD" or response.status in (204, 304):
        return None  # no body to stream
    return stream_kind(
        streaming.mode, response.content_type, response.accel_buffering, streaming.accept
    )


async def attempt(
    client: UpstreamClient,
    method: str,
    target: bytes,
    headers: HeaderList,
    data: bytes | AsyncIterable[bytes] | None,
    *,
    deadline_at: float,
    failure_statuses: frozenset[int],
    max_buffered: int,
    validator: Validator | None = None,
    may_resend: bool = False,
    streaming: Streaming | None = None,
    read_timeout: float | None = None,
    upgrade: bool = False,
) -> Answer | Failed:
    """One try, within the route's deadline: the connection's one timer enforces it
    together with the read timeout (no timer of its own per try)."""
    if deadline_at <= asyncio.get_running_loop().time():
        return Failed(Failure.DEADLINE_EXCEEDED)
    response: UpstreamResponse | None = None
    name = client.settings.name
    try:
        response = await client.send(
            method,
            target,
            headers,
            data,
            may_resend=may_resend,
            deadline=deadline_at,
            read_timeout=read_timeout,
        )
        if response.status == 101:
            if upgrade:
                return Answer(response, [], False)  # switched: the caller tunnels it
            response.close()
            log.info("%s switched protocols unasked", name)
            return Failed(Failure.PROTOCOL_ERROR, 101)
        failure = classify_status(response.status, failure_statuses)
        if failure is not None:
            return await _failed_answer(client, response, failure, max_buffered)
        kind = _stream_kind(response, streaming)
        if kind is not None and streaming is not None:
            return await _held(client, response, kind, streaming.settings, validator)
        if validator is not None:
            return await _validated(name, response, validator)
        if response.complete:  # the whole body came with the head: nothing to wait for
            return Answer(response, response.take_all(), True)
        chunks, complete = await _read_up_to(response, max_buffered)
        return Answer(response, chunks, complete)
    except asyncio.CancelledError:
        if response is not None:
            response.close()  # the client left: the upstream call stops now
        raise
    except Exception as exc:
        if response is not None:
            response.close()
        if isinstance(exc, TimeoutError):
            return Failed(Failure.DEADLINE_EXCEEDED)
        failure = classify_exception(exc)
        if failure is None:
            raise
        return Failed(failure)


async def injected_failure(
    drill: Drill | None, deadline_at: float, failure_statuses: frozenset[int]
) -> Failed | None:
    """A failover drill's fault for this call (None: make the call, perhaps after the
    drill's delay). Injected failures are reported like real ones."""
    if drill is None:
        return None
    if drill.kind == "latency":
        remaining = deadline_at - asyncio.get_running_loop().time()
        await asyncio.sleep(max(0.0, min(drill.latency, remaining)))
        return None
    if drill.kind == "abort":
        return Failed(Failure.CONNECTION_RESET)
    failure = classify_status(drill.status, failure_statuses) or Failure.HTTP_5XX
    return Failed(failure, drill.status)
