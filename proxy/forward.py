"""The request handler: reads the client's request and walks the failover chain, asking
each upstream's guard whether to try it; :mod:`proxy.relay` writes the answer. Every
decision is asked of :mod:`proxy.routing`, :mod:`proxy.fallback`, :mod:`proxy.guard`
and :mod:`proxy.errors`.

The commit point (DESIGN.md section 13, rule 1): an upstream answer up to
``limits.max_buffered_response`` bytes is read whole before the client sees a byte,
so a body cut short there still fails over. A larger answer streams; once its first
byte has gone downstream, a failure (the upstream resets, stalls past its read
timeout, or the route's deadline runs out) aborts the client connection, so a
truncated body is never passed off as complete.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from proxy.attempt import Answer, ErrorAnswer, Failed, attempt
from proxy.bodies import ClientBodyError, StreamedBody, read_prefix
from proxy.cache import Entry, Store
from proxy.cache_rules import cache_key, not_storable
from proxy.errors import Failure
from proxy.fallback import FailoverPlan, Health
from proxy.guard import UpstreamGuard
from proxy.payloads import proxy_error
from proxy.relay import Ending, fresh_hit, mark_own, own_answer, relay, when_all_failed
from proxy.routing import BadTarget, normalise_target
from proxy.runtime import RouteCacheRules, RouteRuntime, Runtime
from proxy.upstream import UpstreamClient

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ProxyHandler:
    """The aiohttp low-level handler.

    ``runtime`` is the snapshot new requests are served with; a reload assigns a new one,
    and requests in flight keep the one they read at their start.
    """

    def __init__(
        self,
        runtime: Runtime,
        clients: dict[str, UpstreamClient],
        guards: dict[str, UpstreamGuard],
        store: Store,
    ) -> None:
        self.runtime = runtime
        self._clients = clients
        self._guards = guards
        self.store = store
        self._fetching: dict[str, asyncio.Future[None]] = {}  # cache key -> the leader's fetch

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        runtime = self.runtime
        if request.method == "CONNECT":
            return own_answer(runtime, proxy_error(405, "CONNECT is not supported"))
        try:
            path, query = normalise_target(request.raw_path)
        except BadTarget as exc:
            return own_answer(runtime, proxy_error(400, str(exc)))
        headers = request.headers
        route = runtime.router.find(request.method, path, headers.get("Host", ""), headers)
        if route is None:
            return own_answer(runtime, proxy_error(404, "no route matches this request"))
        try:
            if route.cache is None:
                return await self._proxy(request, runtime, route, path, query)
            return await self._cached(request, runtime, route, route.cache, path, query)
        except ClientBodyError as exc:
            return own_answer(runtime, proxy_error(exc.status, exc.message), close=True)

    def mark_own_answer(self, response: web.StreamResponse) -> None:
        """Our headers on an answer aiohttp made itself (a request it could not parse)."""
        mark_own(self.runtime, response)

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
        chunks, size, complete = await read_prefix(
            request.content, route.max_replay_body, limits.max_body, limits.client_body_timeout
        )
        if complete:
            return b"".join(chunks), None
        streamed = StreamedBody(
            chunks, size, request.content, limits.max_body, limits.client_body_timeout
        )
        return None, streamed

    async def _cached(
        self,
        request: web.BaseRequest,
        runtime: Runtime,
        route: RouteRuntime,
        rules: RouteCacheRules,
        path: str,
        query: str,
    ) -> web.StreamResponse:
        """A route with a cache: a fresh hit, or one upstream call shared by concurrent
        misses, or the chain as usual. The key is computed here, once per request."""
        key = cache_key(
            request.method,
            request.headers.get("Host", ""),
            path,
            query,
            request.headers,
            rules.policy,
        )
        if request.method not in rules.policy.methods or request.body_exists:
            return await self._proxy(request, runtime, route, path, query, key)
        if rules.fresh_for > 0 and (hit := self.store.get(key, rules.fresh_for)) is not None:
            return fresh_hit(request, runtime, *hit, self._route_health(route))
        leader = self._fetching.get(key)
        if leader is not None:
            return await self._follow(request, runtime, route, path, query, key, leader)
        self._fetching[key] = asyncio.get_running_loop().create_future()
        try:
            return await self._proxy(request, runtime, route, path, query, key)
        finally:
            self._fetching.pop(key).set_result(None)

    async def _follow(
        self,
        request: web.BaseRequest,
        runtime: Runtime,
        route: RouteRuntime,
        path: str,
        query: str,
        key: str,
        leader: asyncio.Future[None],
    ) -> web.StreamResponse:
        """Concurrent misses for one key wait for the leader's upstream call (bounded by
        the deadline) and share what it stored; if it stored nothing, they go themselves."""
        arrived = self.store.now()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(leader), route.deadline)
        hit = self.store.get(key, max_age=self.store.now() - arrived)
        if hit is None:
            return await self._proxy(request, runtime, route, path, query, key)
        response = fresh_hit(request, runtime, *hit, self._route_health(route))
        response.headers["Cache-Status"] = "failover-proxy; fwd=uri-miss; collapsed"
        return response

    async def _proxy(
        self,
        request: web.BaseRequest,
        runtime: Runtime,
        route: RouteRuntime,
        path: str,
        query: str,
        key: str | None = None,
    ) -> web.StreamResponse:
        """The chain: upstreams in order, then what is left. ``key``: the request's cache
        key on a route with a cache, for keeping the answer or finding a stale one."""
        body, streamed = await self._read_body(request, runtime, route)
        loop = asyncio.get_running_loop()
        deadline_at = loop.time() + route.deadline  # a slow upload is bounded by its own timeout
        method = request.method
        may_resend = route.policy.may_resend(method, "Idempotency-Key" in request.headers)
        plan = FailoverPlan(route.upstreams, route.policy, may_resend, deadline_at)
        client_ip = request.remote
        last_error: ErrorAnswer | None = None
        step = plan.first()
        while (upstream := step.upstream) is not None:
            if step.delay:
                await asyncio.sleep(step.delay)
            guard = self._guards[upstream]
            ticket = guard.admit(retry=step.retry)
            if isinstance(ticket, Failure):  # skipped without a connection attempt
                step = plan.after_failure(ticket, now=loop.time())
                continue
            client = self._clients[upstream]
            upstream_headers = runtime.forwarding.upstream_request(
                request.headers,
                version=request.version,
                client_ip=client_ip,
                preserve_host=client.settings.preserve_host,
            )
            data: bytes | AsyncIterator[bytes] | None = body
            if streamed is not None:
                data = streamed.chunks()
                if request.content_length is not None:
                    upstream_headers.append(("Content-Length", str(request.content_length)))
            try:
                outcome = await attempt(
                    client,
                    method,
                    client.url(path, query),
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
            if isinstance(outcome, Answer):
                if route.cache is not None and key is not None and outcome.complete:
                    self._keep(request, runtime, route, route.cache, key, outcome)
                response, ending = await relay(request, runtime, plan, upstream, outcome)
                if ending is Ending.CLIENT_GONE:
                    guard.abandon(ticket)
                else:
                    guard.finish(ticket, None if ending is Ending.COMPLETE else ending)
                return response
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
        stale = None
        if route.cache is not None and key is not None:
            stale = self.store.get(key, route.cache.stale_for)
        return when_all_failed(request, runtime, route, plan, last_error, stale)

    def _route_health(self, route: RouteRuntime) -> Health:
        """DESIGN.md 2: a fresh hit is healthy while the first upstream would be tried,
        degraded while it is skipped (its upstreams are failing)."""
        guard = self._guards[route.upstreams[0]]
        return Health.DEGRADED if guard.skipping() else Health.HEALTHY

    def _keep(
        self,
        request: web.BaseRequest,
        runtime: Runtime,
        route: RouteRuntime,
        rules: RouteCacheRules,
        key: str,
        answer: Answer,
    ) -> None:
        """Store a complete, validated answer as the route's last known good one."""
        response = answer.response
        reason = not_storable(
            request.method, response.status, request.headers, response.headers, rules.policy
        )
        body = b"".join(answer.chunks)
        close_delimited = (
            response.content_length is None
            and response.headers.get("Transfer-Encoding", "").lower() != "chunked"
            and request.method != "HEAD"
            and response.status not in (204, 304)
        )
        if reason is not None or close_delimited or len(body) > rules.max_entry_size:
            return
        headers = runtime.forwarding.downstream_response(response.headers, request.version)
        stored_at = self.store.now()
        entry = Entry(route.name, response.status, response.reason, tuple(headers), body, stored_at)
        self.store.put(key, entry)


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
