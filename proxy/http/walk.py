"""The chain walk: a request tried on its route's upstreams in the order
:mod:`proxy.chain.plan` decides, each asked of its guard first
(:mod:`proxy.upstreams.guard`), until one gives a good answer. The same walk serves a
client's request, a background cache refresh and a buffered write's replay, so guards,
retries, drills and counters apply alike to all three. It decides nothing itself; it
does the I/O of one attempt (:mod:`proxy.upstreams.attempt`) at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from proxy.buffer.rules import final
from proxy.chain.errors import Failure
from proxy.chain.headers import upgrade_fields
from proxy.chain.plan import FailoverPlan
from proxy.http.bodies import ClientBodyError, StreamedBody
from proxy.http.exchange import Chosen, Exchange
from proxy.ops.stats import Stats
from proxy.upstreams.attempt import (
    Answer,
    ErrorAnswer,
    Failed,
    Streaming,
    attempt,
    injected_failure,
)
from proxy.upstreams.drills import Drills

# How a walk ended: its plan (the failed hops), the answer it settled on (its call still
# open) or None, and the last complete error answer an upstream gave.
Walked = tuple[FailoverPlan, Chosen | None, ErrorAnswer | None]
Walk = Callable[[Exchange, bytes | None, StreamedBody | None], Awaitable[Walked]]


class ChainWalk:
    """``answered`` hears every status an upstream answered on a route with a cache (a
    successful write invalidates the stored copies of its URI)."""

    def __init__(
        self, stats: Stats, drills: Drills, answered: Callable[[Exchange, int], None]
    ) -> None:
        self._stats = stats
        self._drills = drills
        self._answered = answered

    async def __call__(
        self, exchange: Exchange, body: bytes | None, streamed: StreamedBody | None
    ) -> Walked:
        """Try the route's upstreams in the plan's order until one gives a good answer:
        that answer (its call still open), or None and the last complete error answer.
        A replay's walk also ends at an error answer retrying cannot change (a 501): that
        is the application's verdict on the write, returned as the last error answer."""
        runtime, route = exchange.runtime, exchange.route
        loop = asyncio.get_running_loop()
        deadline_at = loop.time() + route.deadline  # a slow upload is bounded by its own timeout
        may_resend = route.policy.may_resend(exchange.method, "Idempotency-Key" in exchange.headers)
        plan = FailoverPlan(route.upstreams, route.policy, may_resend, deadline_at)
        upgrade = exchange.request is not None and exchange.request.upgrade
        streaming = None
        if route.response_mode != "buffer" and not upgrade:
            streaming = Streaming(route.response_mode, route.stream, exchange.headers.get("Accept"))
        last_error: ErrorAnswer | None = None
        step = plan.first()
        while (upstream := step.upstream) is not None:
            if step.delay:
                await asyncio.sleep(step.delay)
            guard = exchange.guards[upstream]
            ticket = guard.admit(retry=step.retry, background=exchange.replay)
            upstream_stats = self._stats.upstreams[upstream]
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
            if upgrade:  # hop-by-hop, so dropped above: this hop asks for it again
                upstream_headers += upgrade_fields(exchange.headers)
            data: bytes | AsyncIterator[bytes] | None = body
            if streamed is not None:
                data = streamed.chunks()
                length = exchange.request.content_length if exchange.request else None
                if length is not None:
                    upstream_headers.append(("Content-Length", str(length)))
            sent_at = loop.time()
            drill = self._drills.pick(upstream)
            try:
                injected = (
                    None
                    if drill is None
                    else await injected_failure(drill, deadline_at, route.failure_statuses)
                )
                outcome = injected or await attempt(
                    client,
                    exchange.method,
                    client.target(exchange.target),
                    upstream_headers,
                    data,
                    deadline_at=deadline_at,
                    failure_statuses=route.failure_statuses,
                    max_buffered=runtime.limits.max_buffered_response,
                    validator=route.validator,
                    may_resend=may_resend,
                    streaming=streaming,
                    read_timeout=route.upgrade.handshake_timeout if upgrade else None,
                    upgrade=upgrade,
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
                self._answered(exchange, status)
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
