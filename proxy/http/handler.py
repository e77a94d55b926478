"""The request handler: reads the client's request and walks the failover chain, asking
each upstream's guard whether to try it; :mod:`proxy.cache.front` stands in front of it
on routes with a cache, :mod:`proxy.http.respond` writes the answer. Every decision is
asked of :mod:`proxy.chain.routing`, :mod:`proxy.chain.plan`,
:mod:`proxy.upstreams.guard` and :mod:`proxy.chain.errors`.

The commit point (README, "What happens to a request", step 5): an upstream answer up to
``limits.max_buffered_response`` bytes is read whole before the client sees a byte,
so a body cut short there still fails over. A larger answer streams; once its first
byte has gone downstream, a failure (the upstream resets, stalls past its read
timeout, or the route's deadline runs out) aborts the client connection, so a
truncated body is never passed off as complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from proxy.buffer.buffer import BufferBroken, BufferFull, WriteBuffer
from proxy.buffer.journal import Write
from proxy.buffer.rules import READS, Verdict, final, may_buffer, verdict
from proxy.cache.front import CacheFront
from proxy.cache.store import Store
from proxy.chain.errors import Failure
from proxy.chain.headers import unsafe_header
from proxy.chain.payloads import proxy_error
from proxy.chain.plan import FailoverPlan, Health
from proxy.chain.routing import BadTarget, normalise_target
from proxy.config.runtime import RouteRuntime, Runtime
from proxy.http.access import account
from proxy.http.bodies import BodyReader, ClientBodyError, StreamedBody, read_prefix
from proxy.http.exchange import Exchange
from proxy.http.respond import (
    Ending,
    buffer_refused,
    buffered_answer,
    mark_own,
    own_answer,
    relay,
    unbuffered_write,
    when_all_failed,
)
from proxy.ops.probes import Ops
from proxy.ops.stats import Stats
from proxy.upstreams.attempt import Answer, ErrorAnswer, Failed, attempt, injected_failure
from proxy.upstreams.client import UpstreamClient
from proxy.upstreams.drills import Drills
from proxy.upstreams.guard import Ticket, UpstreamGuard

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Chosen:
    """The upstream answer the chain settled on, and the call to report when it ends."""

    upstream: str
    guard: UpstreamGuard
    ticket: Ticket
    answer: Answer


class ProxyHandler:
    """The aiohttp low-level handler.

    ``runtime``, ``clients`` and ``guards`` are what new requests are served with; a
    reload replaces all three at once (:meth:`serve_with`), and a request in flight keeps
    the ones it read at its start (its :class:`Exchange` holds them).
    """

    def __init__(
        self,
        runtime: Runtime,
        clients: dict[str, UpstreamClient],
        guards: dict[str, UpstreamGuard],
        store: Store,
        stats: Stats,
        drills: Drills,
    ) -> None:
        self.runtime = runtime
        self.clients = clients
        self.guards = guards
        self.store = store
        self.stats = stats
        self.drills = drills
        self.ops: Ops | None = None  # the read-only operator paths under the reserved prefix
        # Request ids: random per process, then counted (uuid4 per request costs ~2.5us).
        self._id_prefix = secrets.token_hex(6)
        self._id_count = itertools.count(1)
        self.cache = CacheFront(store, stats, self)
        self.buffer: WriteBuffer | None = None  # the durable write buffer, when configured
        # Requests (and background work) still running, by the config generation they
        # started on: a reload closes replaced pools only once older ones are done.
        self.generation = 0
        self._active: Counter[int] = Counter()
        self._background = 0  # of those, work outside a client request (see using())

    def serve_with(
        self,
        runtime: Runtime,
        clients: dict[str, UpstreamClient],
        guards: dict[str, UpstreamGuard],
    ) -> None:
        """Swap in a reloaded config: one step, no await, so no request sees a mix."""
        self.runtime, self.clients, self.guards = runtime, clients, guards
        self.generation += 1

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        runtime = self.runtime
        if request.method == "CONNECT":
            return own_answer(runtime, proxy_error(405, "CONNECT is not supported"))
        if (unsafe := unsafe_header(request.raw_headers)) is not None:
            # refused, never forwarded altered (aiohttp would re-encode obs-text)
            message = f"the {unsafe} header holds a byte 0x80-0xFF or a control character"
            return own_answer(runtime, proxy_error(400, message))
        try:
            path, query = normalise_target(request.raw_path)
        except BadTarget as exc:
            return own_answer(runtime, proxy_error(400, str(exc)))
        prefix = runtime.config.admin.reserved_prefix
        if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
            return self._operator_path(request, runtime, path[len(prefix) :])
        headers = request.headers
        route = runtime.router.find(request.method, path, headers.get("Host", ""), headers)
        if route is None:
            return own_answer(runtime, proxy_error(404, "no route matches this request"))
        generation = self.generation
        exchange = Exchange(
            request,
            runtime,
            route,
            request.method,
            headers,
            request.version,
            request.remote,
            path,
            query,
            self.clients,
            self.guards,
            generation,
            headers.get("X-Request-Id") or self._new_request_id(),
        )
        started = asyncio.get_running_loop().time()
        active = self._active
        active[generation] += 1
        try:
            rules = route.cache
            if rules is None or request.method not in rules.policy.methods or request.body_exists:
                response = await self.proxy(exchange)
            else:
                response = await self.cache.serve(exchange, rules)
        except ClientBodyError as exc:
            response = own_answer(runtime, proxy_error(exc.status, exc.message), close=True)
        finally:
            active[generation] -= 1
        account(self.stats, exchange, response, asyncio.get_running_loop().time() - started)
        return response

    @contextlib.contextmanager
    def using(self, generation: int) -> Iterator[None]:
        """Count work outside a client request (a background refresh, a replay) as using
        the pools of config ``generation``, so a reload does not close them under it."""
        self._active[generation] += 1
        self._background += 1
        try:
            yield
        finally:
            self._active[generation] -= 1
            self._background -= 1

    def drained(self, generation: int) -> bool:
        """Whether nothing that started before ``generation`` is still running."""
        return not any(n for g, n in list(self._active.items()) if g < generation)

    @property
    def in_flight(self) -> int:
        """Client requests being answered now (not background refreshes or replays):
        what a drain at shutdown waits for."""
        return sum(self._active.values()) - self._background

    def _new_request_id(self) -> str:
        return f"{self._id_prefix}-{next(self._id_count):08x}"

    def _operator_path(
        self, request: web.BaseRequest, runtime: Runtime, name: str
    ) -> web.StreamResponse:
        """``<prefix>/livez`` and friends (``name`` is what follows the prefix, matched on
        the normalised path): answered here, never proxied."""
        answer = None
        if self.ops is not None and name.startswith("/") and request.method in ("GET", "HEAD"):
            answer = self.ops.answer(name[1:], metrics=runtime.config.admin.metrics_on_main)
        if answer is None:
            prefix = runtime.config.admin.reserved_prefix
            return own_answer(runtime, proxy_error(404, f"no such operator path under {prefix}"))
        mark_own(runtime, answer)
        return answer

    def mark_own_answer(self, response: web.StreamResponse) -> None:
        """Our headers on an answer aiohttp made itself (a request it could not parse)."""
        mark_own(self.runtime, response)

    async def close(self) -> None:
        await self.cache.close()

    async def _read_body(
        self, request: web.BaseRequest, runtime: Runtime, route: RouteRuntime
    ) -> tuple[bytes | None, StreamedBody | None]:
        """``(body held for replay, None)`` or ``(None, body too large to hold)``."""
        if not request.body_exists:
            return None, None
        limits = runtime.limits
        length = request.content_length
        if length is not None and length > limits.max_body:
            raise ClientBodyError(413, "the request body is larger than the proxy accepts")
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(_CONTINUE)
        reader = BodyReader(request.content, limits.max_body, limits.client_body_timeout)
        chunks, complete = await read_prefix(reader, route.max_replay_body)
        if complete:
            return b"".join(chunks), None
        return None, StreamedBody(chunks, reader)

    async def proxy(self, exchange: Exchange) -> web.StreamResponse:
        """The chain for a client: upstreams in order, then what is left."""
        request = exchange.request
        assert request is not None
        runtime, route = exchange.runtime, exchange.route
        body, streamed = await self._read_body(request, runtime, route)
        buffer = self.buffer if route.buffers_writes and exchange.method not in READS else None
        if buffer is not None and body is not None and buffer.pending(route.name):
            return await self._buffer(exchange, buffer, body, None)  # behind the queued ones
        if exchange.key is not None:
            self.stats.cache.misses += 1
        plan, chosen, last_error = await self.walk(exchange, body, streamed)
        if chosen is not None:
            answer = chosen.answer
            cache_status = None
            if exchange.key is not None:
                stored = self.cache.keep(exchange, answer)
                cache_status = (
                    f"failover-proxy; fwd={exchange.forwarded_because}; "
                    f"fwd-status={answer.response.status}{'; stored' if stored else ''}"
                )
            response, ending = await relay(
                request, runtime, plan, chosen.upstream, answer, cache_status
            )
            if ending is Ending.CLIENT_GONE:
                chosen.guard.abandon(chosen.ticket)
            else:
                chosen.guard.finish(chosen.ticket, None if ending is Ending.COMPLETE else ending)
            return response
        if buffer is not None and streamed is None:
            key = exchange.headers.get(buffer.settings.idempotency_header)
            if may_buffer(exchange.method, plan.hops, key is not None):
                return await self._buffer(exchange, buffer, body or b"", plan)
            return unbuffered_write(runtime, route, plan)
        stale = self.cache.stale(exchange)
        return when_all_failed(request, runtime, route, plan, last_error, stale)

    async def walk(
        self, exchange: Exchange, body: bytes | None, streamed: StreamedBody | None
    ) -> tuple[FailoverPlan, Chosen | None, ErrorAnswer | None]:
        """Try the route's upstreams in the plan's order until one gives a good answer:
        that answer (its call still open), or None and the last complete error answer.
        A replay's walk also ends at an error answer retrying cannot change (a 501): that
        is the application's verdict on the write, returned as the last error answer."""
        runtime, route = exchange.runtime, exchange.route
        loop = asyncio.get_running_loop()
        deadline_at = loop.time() + route.deadline  # a slow upload is bounded by its own timeout
        may_resend = route.policy.may_resend(exchange.method, "Idempotency-Key" in exchange.headers)
        plan = FailoverPlan(route.upstreams, route.policy, may_resend, deadline_at)
        last_error: ErrorAnswer | None = None
        step = plan.first()
        while (upstream := step.upstream) is not None:
            if step.delay:
                await asyncio.sleep(step.delay)
            guard = exchange.guards[upstream]
            ticket = guard.admit(retry=step.retry, background=exchange.replay)
            upstream_stats = self.stats.upstreams[upstream]
            if isinstance(ticket, Failure):  # skipped without a connection attempt
                upstream_stats.skipped(ticket)
                exchange.attempts.append((upstream, ticket))
                step = plan.after_failure(ticket, now=loop.time())
                continue
            client = exchange.clients[upstream]
            upstream_headers = runtime.forwarding.upstream_request(
                exchange.headers,
                version=exchange.version,
                client_ip=exchange.client_ip,
                preserve_host=client.settings.preserve_host,
                drop=route.cache.not_forwarded if route.cache is not None else None,
            )
            if "X-Request-Id" not in exchange.headers:
                upstream_headers.append(("X-Request-Id", exchange.request_id))
            data: bytes | AsyncIterator[bytes] | None = body
            if streamed is not None:
                data = streamed.chunks()
                length = exchange.request.content_length if exchange.request else None
                if length is not None:
                    upstream_headers.append(("Content-Length", str(length)))
            sent_at = loop.time()
            drill = self.drills.pick(upstream)
            try:
                injected = await injected_failure(drill, deadline_at, route.failure_statuses)
                outcome = injected or await attempt(
                    client,
                    exchange.method,
                    client.url(exchange.path, exchange.query),
                    upstream_headers,
                    data,
                    deadline_at=deadline_at,
                    failure_statuses=route.failure_statuses,
                    max_buffered=runtime.limits.max_buffered_response,
                    validator=route.validator,
                )
            except BaseException:
                guard.abandon(ticket)
                raise
            if streamed is not None:
                _blame_a_slow_upload(streamed, outcome)
                if streamed.error is not None:
                    guard.abandon(ticket)
                    if isinstance(outcome, Answer):
                        outcome.response.close()
                    raise streamed.error  # the client's fault, not the upstream's
            seconds = loop.time() - sent_at
            status = outcome.response.status if isinstance(outcome, Answer) else outcome.status
            if status is not None and route.cache is not None:
                self.cache.answered(exchange, status)
            if isinstance(outcome, Answer):
                upstream_stats.answered(seconds)
                exchange.attempts.append((upstream, "ok"))
                return plan, Chosen(upstream, guard, ticket, outcome), last_error
            verdict_answer = outcome.error_answer if exchange.replay else None
            if verdict_answer is not None and final(verdict_answer.status):
                # The application's verdict on the write (a 501, say), not an outage: an
                # answer for the upstream's breaker and stats, and the end of the walk.
                upstream_stats.answered(seconds)
                exchange.attempts.append((upstream, "ok"))
                guard.finish(ticket, None)
                return plan, None, verdict_answer
            upstream_stats.failed(outcome.failure, seconds if outcome.status else None)
            exchange.attempts.append((upstream, outcome.failure))
            guard.finish(
                ticket, outcome.failure, status=outcome.status, retry_after=outcome.retry_after
            )
            last_error = outcome.error_answer
            step = plan.after_failure(
                outcome.failure,
                now=loop.time(),
                status=outcome.status,
                retry_after=outcome.retry_after,
                body_replayable=streamed is None or not streamed.started,
            )
        return plan, None, last_error

    async def _buffer(
        self, exchange: Exchange, buffer: WriteBuffer, body: bytes, plan: FailoverPlan | None
    ) -> web.StreamResponse:
        """Keep the write on disk and answer 202, or 503 if it cannot be kept."""
        runtime = exchange.runtime
        request = exchange.request
        assert request is not None
        target = exchange.path + (f"?{exchange.query}" if exchange.query else "")
        try:
            write = await buffer.accept(
                exchange.route.name,
                exchange.method,
                target,
                list(exchange.headers.items()),
                body,
                exchange.headers.get(buffer.settings.idempotency_header),
                exchange.client_ip,
            )
        except BufferFull as exc:
            return buffer_refused(runtime, str(exc), retry_after=30)
        except BufferBroken as exc:
            return buffer_refused(runtime, str(exc), retry_after=5)
        return buffered_answer(runtime, plan, write)

    async def deliver(self, write: Write, body: bytes) -> tuple[Verdict, dict[str, Any] | None]:
        """Replay one buffered write: the route's upstreams in order, through their guards,
        with its Idempotency-Key. A route that no longer buffers makes it a dead letter."""
        with self.using(self.generation):  # the pools _deliver reads next, with no await
            return await self._deliver(write, body)

    async def _deliver(self, write: Write, body: bytes) -> tuple[Verdict, dict[str, Any] | None]:
        runtime = self.runtime
        route = next((r for r in runtime.routes if r.name == write.route), None)
        if route is None or not route.buffers_writes:
            return Verdict.DEAD, {"reason": f"the route {write.route!r} no longer buffers writes"}
        assert self.buffer is not None
        headers = CIMultiDict(write.headers)
        name = self.buffer.settings.idempotency_header
        if name not in headers:
            headers[name] = write.idempotency_key
        path, _, query = write.target.partition("?")
        # The same chain as a client's request (guards, retries, drills, counters); the
        # key makes every failure safe to move on from.
        replay = Exchange(
            None,
            runtime,
            route,
            write.method,
            headers,
            (1, 1),
            write.client_ip,
            path,
            query,
            self.clients,
            self.guards,
            self.generation,
            headers.get("X-Request-Id") or write.id,
            replay=True,
        )
        _, chosen, last_error = await self.walk(replay, body, None)
        if chosen is None:
            if last_error is not None and final(last_error.status):  # the walk's verdict
                text = last_error.body[:4096].decode(errors="replace")
                answer = {"upstream": last_error.upstream, "status": last_error.status}
                return Verdict.DEAD, {**answer, "body": text}
            return Verdict.RETRY, None
        response = chosen.answer.response
        text = b"".join(chosen.answer.chunks)[:4096].decode(errors="replace")
        response.close()
        chosen.guard.finish(chosen.ticket, None)
        result = verdict(response.status)
        if result is Verdict.RETRY:
            return result, None
        return result, {"upstream": chosen.upstream, "status": response.status, "body": text}

    def route_health(self, route: RouteRuntime, *, stale: bool = False) -> Health:
        """A fresh hit is healthy while the first upstream would be tried,
        degraded while it is skipped (its upstreams are failing). A ``stale`` copy (one
        served while it is refreshed behind) is critical when every upstream is skipped:
        no refresh can succeed, it is a stale answer like any other."""
        guards = [self.guards.get(name) for name in route.upstreams]  # a reload may drop one
        skipped = [guard is not None and guard.skipping() for guard in guards]
        if stale and all(skipped):
            return Health.CRITICAL
        return Health.DEGRADED if skipped[0] else Health.HEALTHY


def _blame_a_slow_upload(streamed: StreamedBody, outcome: Answer | Failed) -> None:
    """A streamed body still arriving when the deadline ran out: the client was slow."""
    if (
        streamed.error is None
        and streamed.started
        and not streamed.finished
        and isinstance(outcome, Failed)
        and outcome.failure is Failure.DEADLINE_EXCEEDED
    ):
        streamed.error = ClientBodyError(408, "the request body was still arriving")
