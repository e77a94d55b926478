"""The request handler: reads the client's request, walks the failover chain
(:mod:`proxy.http.walk`) and records what served the answer on the exchange;
:mod:`proxy.cache.front` stands in front of it on routes with a cache,
:mod:`proxy.http.respond` writes the answer. Every decision is asked of
:mod:`proxy.chain.routing`, :mod:`proxy.chain.plan`, :mod:`proxy.upstreams.guard` and
:mod:`proxy.chain.errors`.

The commit point (docs/configuration.md, "What happens to a request", step 5): an
upstream answer up to ``limits.max_buffered_response`` bytes is read whole before the
client sees a byte, so a body cut short there still fails over. A larger answer streams;
once its first byte has gone downstream, a failure (the upstream resets, stalls past its
read timeout, or the route's deadline runs out) aborts the client connection, so a
truncated body is never passed off as complete.
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
import time

from aiohttp import web
from multidict import CIMultiDict

from proxy.buffer.buffer import BufferBroken, BufferFull, WriteBuffer
from proxy.buffer.rules import READS, may_buffer
from proxy.cache.front import CacheFront
from proxy.cache.status import forwarded
from proxy.cache.store import Store
from proxy.chain.errors import Failure
from proxy.chain.outcome import UNSERVED, Outcome
from proxy.chain.payloads import proxy_error
from proxy.chain.plan import FailoverPlan
from proxy.chain.routing import BadTarget, normalise_target
from proxy.chain.streams import asks_for_event_stream
from proxy.chain.upgrades import TUNNEL_RETRY_AFTER, upgrade_refusal
from proxy.config.runtime import RouteRuntime, Runtime
from proxy.http.access import account
from proxy.http.bodies import BodyReader, ClientBodyError, StreamedBody, read_prefix
from proxy.http.exchange import Chosen, Exchange
from proxy.http.request import IncomingRequest
from proxy.http.respond import (
    Ended,
    Ending,
    buffer_refused,
    buffered_answer,
    mark_own,
    own_answer,
    relay,
    unbuffered_write,
    when_all_failed,
)
from proxy.http.tunnels import Tunnels
from proxy.http.walk import ChainWalk, Walked
from proxy.http.wire import Reply
from proxy.live import Live
from proxy.ops.probes import Ops
from proxy.ops.stats import Stats
from proxy.upstreams.drills import Drills


class ProxyHandler:
    """What the main listener (:mod:`proxy.http.listener`) calls for each request.

    A request reads :attr:`Live.current <proxy.live.Live.current>` once at its start and
    keeps that generation (its :class:`Exchange` holds it) while a reload swaps in the
    next one for new requests.
    """

    def __init__(self, live: Live, store: Store, stats: Stats, drills: Drills) -> None:
        self.live = live
        self.store = store
        self.stats = stats
        self.drills = drills
        self.ops: Ops | None = None  # the read-only operator paths under the reserved prefix
        # Request ids: random per process, then counted (uuid4 per request costs ~2.5us).
        self._id_prefix = secrets.token_hex(6)
        self._id_count = itertools.count(1)
        self.cache = CacheFront(store, stats, self)
        self._walk = ChainWalk(stats, drills, self.cache.answered)
        self.buffer: WriteBuffer | None = None  # the durable write buffer, when configured
        self.tunnels = Tunnels()

    async def __call__(self, request: IncomingRequest) -> Reply:
        current = self.live.current
        runtime = current.runtime
        if request.method == "CONNECT":
            return own_answer(runtime, proxy_error(405, "CONNECT is not supported"))
        try:
            path, query = normalise_target(request.target)
        except BadTarget as exc:
            return own_answer(runtime, proxy_error(400, str(exc)))
        prefix = runtime.config.admin.reserved_prefix
        if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
            return self._operator_path(request, runtime, path[len(prefix) :])
        headers = request.headers
        route = runtime.router.find(request.method, path, headers.get("Host", ""), headers)
        if route is None:
            return own_answer(runtime, proxy_error(404, "no route matches this request"))
        exchange = Exchange(
            request=request,
            runtime=runtime,
            route=route,
            method=request.method,
            headers=headers,
            version=request.version,
            client_ip=request.remote,
            path=path,
            query=query,
            clients=current.clients,
            guards=current.guards,
            generation=current.number,
            request_id=headers.get("X-Request-Id") or self._new_request_id(),
            target=request.target if request.target.startswith(b"/") else b"",
        )
        started = time.monotonic()
        if request.upgrade:
            return await self._upgrade(exchange, started)
        live = self.live
        live.enter(current.number)
        try:
            rules = route.cache
            if (
                rules is None
                or request.method not in rules.policy.methods
                or request.body_exists
                or _asks_for_a_stream(headers)
            ):
                response = await self.proxy(exchange)
            else:
                response = await self.cache.serve(exchange, rules)
        except ClientBodyError as exc:
            response = _body_refused(exchange, exc)
        finally:
            live.leave(current.number)
        account(self.stats, exchange, response, time.monotonic() - started)
        return response

    async def _upgrade(self, exchange: Exchange, started: float) -> Reply:
        """An ``Upgrade`` request: refused (403) where the route does not allow it or
        its protocol, 503 at the route's tunnel cap, else the chain as usual until an
        upstream answers 101, whose connection then becomes the client's tunnel."""
        route, runtime = exchange.route, exchange.runtime
        settings = route.upgrade
        offered = exchange.headers.get("Upgrade", "")
        refusal = upgrade_refusal(settings.enabled, settings.protocols, offered)
        if refusal is not None:
            response = own_answer(runtime, proxy_error(403, refusal), close=True)
        elif not self.tunnels.reserve(route.name, settings):
            response = own_answer(
                runtime,
                proxy_error(503, f"route {route.name} has {settings.max_tunnels} tunnels open"),
                close=True,
            )
            response.headers.append(("Retry-After", str(TUNNEL_RETRY_AFTER)))
        else:
            self.live.enter(exchange.generation)
            try:
                response = await self.proxy(exchange)
            except ClientBodyError as exc:
                response = _body_refused(exchange, exc)
            else:
                chosen = exchange.chosen
                if response.status == 101 and chosen is not None:
                    response.tunnel = self.tunnels.opener(
                        route.name, settings, chosen.answer.response
                    )
                else:
                    response.close = True  # the client sent its request as an upgrade
            finally:
                self.live.leave(exchange.generation)
                self.tunnels.release(route.name)
        account(self.stats, exchange, response, time.monotonic() - started)
        return response

    def using(self, generation: int) -> contextlib.AbstractContextManager[None]:
        """Background work (a refresh) on ``generation``'s pools: see :meth:`Live.using`."""
        return self.live.using(generation)

    def _new_request_id(self) -> str:
        return f"{self._id_prefix}-{next(self._id_count):08x}"

    def _operator_path(self, request: IncomingRequest, runtime: Runtime, name: str) -> Reply:
        """``<prefix>/livez`` and friends (``name`` is what follows the prefix, matched on
        the normalised path): answered here, never proxied."""
        answer = None
        if self.ops is not None and name.startswith("/") and request.method in ("GET", "HEAD"):
            answer = self.ops.answer(name[1:], metrics=runtime.config.admin.metrics_on_main)
        if answer is None:
            prefix = runtime.config.admin.reserved_prefix
            return own_answer(runtime, proxy_error(404, f"no such operator path under {prefix}"))
        reply = _from_aiohttp(answer)
        mark_own(runtime, reply)
        return reply

    def refusal(self, status: int, message: str) -> Reply:
        """Our answer to a request the listener refused before it was complete."""
        return own_answer(self.live.current.runtime, proxy_error(status, message), close=True)

    async def close(self) -> None:
        await self.cache.close()

    async def _read_body(
        self, request: IncomingRequest, runtime: Runtime, route: RouteRuntime
    ) -> tuple[bytes | None, StreamedBody | None]:
        """``(body held for replay, None)`` or ``(None, body too large to hold)``."""
        if not request.body_exists:
            return None, None
        limits = runtime.limits
        length = request.content_length
        if length is not None and length > limits.max_body:
            raise ClientBodyError(413, "the request body is larger than the proxy accepts")
        if request.headers.get("Expect", "").lower() == "100-continue":
            request.send_continue()
        reader = BodyReader(request.content, limits.max_body, limits.client_body_timeout)
        chunks, complete = await read_prefix(reader, route.max_replay_body)
        if complete:
            return b"".join(chunks), None
        return None, StreamedBody(chunks, reader)

    async def proxy(self, exchange: Exchange) -> Reply:
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
        plan, chosen, last_error = await self._walk(exchange, body, streamed)
        if chosen is not None:
            answer = chosen.answer
            cache_status = None
            if exchange.key is not None and answer.stream is None:  # a stream is never kept
                stored = self.cache.keep(exchange, answer)
                status = answer.response.status
                cache_status = forwarded(exchange.forwarded_because, status, stored=stored)
            health = plan.health_of(chosen.upstream)
            exchange.outcome = Outcome(chosen.upstream, health, cache_status)
            exchange.chosen = chosen
            return relay(exchange, plan, answer, _reporter(chosen))
        if buffer is not None and streamed is None:
            key = exchange.headers.get(buffer.settings.idempotency_header)
            if may_buffer(exchange.method, plan.hops, key is not None):
                return await self._buffer(exchange, buffer, body or b"", plan)
            return unbuffered_write(exchange, plan)
        return when_all_failed(exchange, plan, last_error, self.cache.stale(exchange))

    async def walk(
        self, exchange: Exchange, body: bytes | None, streamed: StreamedBody | None
    ) -> Walked:
        """The chain walk (:mod:`proxy.http.walk`), for the cache's refresh and a replay."""
        return await self._walk(exchange, body, streamed)

    async def _buffer(
        self, exchange: Exchange, buffer: WriteBuffer, body: bytes, plan: FailoverPlan | None
    ) -> Reply:
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
        return buffered_answer(exchange, plan, write)


def _body_refused(exchange: Exchange, exc: ClientBodyError) -> Reply:
    """The client's body was refused (too large, too slow, malformed): the proxy's own
    answer, nothing served, and the connection closed after it."""
    exchange.outcome = UNSERVED
    return own_answer(exchange.runtime, proxy_error(exc.status, exc.message), close=True)


def _asks_for_a_stream(headers: CIMultiDict[str]) -> bool:
    """``Accept: text/event-stream`` (as :mod:`proxy.chain.streams` reads it): a stream
    is wanted, which the cache neither serves nor coalesces (each client gets its own
    upstream call)."""
    accept = headers.get("Accept")
    return accept is not None and asks_for_event_stream(accept)


def _reporter(chosen: Chosen) -> Ended:
    """How the chosen call ended, told to its guard: a client that left says nothing
    about the upstream; a failure mid-body counts against it."""

    def ended(ending: Ending | Failure) -> None:
        if ending is Ending.CLIENT_GONE or ending is Ending.LIMIT:
            chosen.guard.abandon(chosen.ticket)
        else:
            chosen.guard.finish(chosen.ticket, None if ending is Ending.COMPLETE else ending)

    return ended


def _from_aiohttp(response: web.Response) -> Reply:
    """An operator answer (built with aiohttp for the admin listener too) for ours."""
    headers = [(name, value) for name, value in response.headers.items()]
    headers = [(name, value) for name, value in headers if name != "Content-Length"]
    body = response.body if isinstance(response.body, bytes) else b""
    return Reply(response.status, headers, body, reason=response.reason)
