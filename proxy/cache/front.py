"""The cache in front of the failover chain (docs/configuration.md, "What happens to a
request", step 4): a fresh hit served without asking an upstream, a stale copy served while one
background call refreshes it, concurrent misses for one key sharing one upstream call,
and keeping the answers the chain got. The rules (what is kept, when it may be used) are
:mod:`proxy.cache.rules` and :mod:`proxy.cache.freshness`; the chain is the handler's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from proxy.cache.freshness import NO_LIMITS, initial_age, upstream_limits
from proxy.cache.rules import (
    Use,
    cache_key,
    invalidates,
    may_serve_stale,
    not_storable,
    uri_key,
    use_on_arrival,
)
from proxy.cache.status import COLLAPSED, HIT, REVALIDATING
from proxy.cache.store import Entry, Store
from proxy.chain.outcome import Health, Outcome, Source, route_health
from proxy.config.runtime import RouteCacheRules
from proxy.http.bodies import StreamedBody
from proxy.http.exchange import Exchange
from proxy.http.respond import fresh_hit
from proxy.http.walk import Walked
from proxy.http.wire import Reply
from proxy.ops.stats import Stats
from proxy.upstreams.attempt import Answer

log = logging.getLogger("failover_proxy")


class Chain(Protocol):
    """What the cache asks of the failover chain (the handler in :mod:`proxy.http.handler`):
    the whole chain for a miss, the walk alone for a refresh behind, and a hold on the
    pools of a config generation while that refresh runs."""

    async def proxy(self, exchange: Exchange) -> Reply: ...

    async def walk(
        self, exchange: Exchange, body: bytes | None, streamed: StreamedBody | None
    ) -> Walked: ...

    def using(self, generation: int) -> contextlib.AbstractContextManager[None]: ...


class CacheFront:
    def __init__(self, store: Store, stats: Stats, chain: Chain) -> None:
        self.store = store
        self.stats = stats
        self._chain = chain
        # cache key -> the one upstream call in flight for it; resolves to what it stored
        self._fetching: dict[str, asyncio.Future[Entry | None]] = {}
        self._refreshing: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Stop background refreshes (at shutdown)."""
        for task in list(self._refreshing):
            task.cancel()
        await asyncio.gather(*self._refreshing, return_exceptions=True)

    def stale(self, exchange: Exchange) -> tuple[Entry, float] | None:
        """The stored copy to serve when every upstream failed, if one may be served."""
        rules = exchange.route.cache
        if exchange.key is None or rules is None:
            return None
        found = self.store.get(exchange.key)
        if found is None or not may_serve_stale(*found, rules.stale_for):
            return None
        self.stats.cache.stale_serves += 1
        self.stats.routes[exchange.route.name].stale_served(found[1])
        return found

    async def serve(self, exchange: Exchange, rules: RouteCacheRules) -> Reply:
        """A cacheable request on a route with a cache: a fresh hit, a stale one refreshed
        behind, one upstream call shared by concurrent misses, or the chain as usual."""
        assert exchange.request is not None
        route = exchange.route
        exchange.key = key = cache_key(
            route.name,
            exchange.method,
            exchange.headers.get("Host", ""),
            exchange.path,
            exchange.query,
            exchange.headers,
            rules.policy,
        )
        found = self.store.get(key)
        if found is not None:
            entry, age = found
            use = use_on_arrival(entry, age, rules.fresh_for, rules.stale_while_revalidate)
            if use is not Use.NONE:
                self.stats.cache.hits += 1
                revalidating = use is Use.REVALIDATE
                if revalidating:
                    self._refresh_behind(exchange)
                exchange.outcome = Outcome(
                    Source.CACHE,
                    _health(exchange, stale=revalidating),
                    REVALIDATING if revalidating else HIT,
                )
                return fresh_hit(exchange, entry, age)
            exchange.forwarded_because = "stale"
        leader = self._fetching.get(key)
        if leader is not None:
            return await self._follow(exchange, leader)
        self._fetching[key] = asyncio.get_running_loop().create_future()
        try:
            return await self._chain.proxy(exchange)
        finally:
            self._fetching.pop(key).set_result(exchange.stored)

    async def _follow(self, exchange: Exchange, leader: asyncio.Future[Entry | None]) -> Reply:
        """Concurrent misses for one key wait for the leader's upstream call (bounded by
        the deadline) and share what it stored; if it stored nothing, they go themselves."""
        assert exchange.request is not None
        stored: Entry | None = None
        with contextlib.suppress(TimeoutError):
            stored = await asyncio.wait_for(asyncio.shield(leader), exchange.route.deadline)
        if stored is None:
            return await self._chain.proxy(exchange)
        self.stats.cache.collapsed += 1
        age = self.store.now() - stored.stored_at
        exchange.outcome = Outcome(Source.CACHE, _health(exchange), COLLAPSED)
        return fresh_hit(exchange, stored, age)

    def _refresh_behind(self, exchange: Exchange) -> None:
        """Stale-while-revalidate: one background call refreshes the entry (unless a call
        for the key is in flight already); the client has its answer meanwhile."""
        key = exchange.key
        if key is None or key in self._fetching:
            return
        self._fetching[key] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._refresh(exchange.behind(), key), name=f"refresh {key!r}")
        self._refreshing.add(task)
        task.add_done_callback(self._refreshing.discard)

    async def _refresh(self, exchange: Exchange, key: str) -> None:
        try:
            # counted as work on the config the client's request started with, whose
            # pools it uses: a reload meanwhile does not close them under it
            with self._chain.using(exchange.generation):
                _, chosen, _ = await self._chain.walk(exchange, None, None)
                if chosen is not None:
                    answer = chosen.answer
                    self.keep(exchange, answer)
                    if answer.complete:
                        answer.response.release()
                        chosen.guard.finish(chosen.ticket, None)
                    else:  # too large to hold: it could not be stored anyway
                        answer.response.close()
                        chosen.guard.abandon(chosen.ticket)
        except Exception:
            log.exception("background refresh of %s %s failed", exchange.method, exchange.path)
        finally:
            self._fetching.pop(key).set_result(exchange.stored)

    def keep(self, exchange: Exchange, answer: Answer) -> bool:
        """Store a complete, validated answer as the route's last known good one. One
        that may not be stored leaves the key's older entry alone
        (:func:`proxy.cache.rules.invalidates` says why)."""
        key = exchange.key
        assert key is not None
        entry = self._entry_for(exchange, answer) if answer.complete else None
        if entry is not None and self.store.put(key, entry):
            self.stats.cache.stored += 1
            exchange.stored = entry
            return True
        return False

    def answered(self, exchange: Exchange, status: int) -> None:
        """An upstream answered ``status``: a successful unsafe request drops the stored
        copies of its target URI on its route, whatever their method and variant."""
        rules = exchange.route.cache
        if rules is None or not invalidates(exchange.method, status):
            return
        uri = uri_key(
            exchange.route.name,
            exchange.headers.get("Host", ""),
            exchange.path,
            exchange.query,
            rules.policy,
        )
        if self.store.invalidate(uri):
            log.debug("cache: %s %s invalidated its stored copies", exchange.method, exchange.path)

    def _entry_for(self, exchange: Exchange, answer: Answer) -> Entry | None:
        rules = exchange.route.cache
        assert rules is not None
        response = answer.response
        method = exchange.method
        reason = not_storable(
            method, response.status, exchange.headers, response.headers, rules.policy
        )
        body = b"".join(answer.chunks)
        close_delimited = (
            response.content_length is None
            and response.headers.get("Transfer-Encoding", "").lower() != "chunked"
            and method != "HEAD"
            and response.status not in (204, 304)
        )
        if reason is not None or close_delimited or len(body) > rules.max_entry_size:
            return None
        limits = upstream_limits(response.headers) if rules.honour_cache_control else NO_LIMITS
        if limits.fresh <= 0 and limits.stale <= 0:
            return None  # the upstream forbids every use we could make of it
        # Via names the protocol of the message received: the upstream's (RFC 9110 7.6.3)
        headers = exchange.runtime.forwarding.downstream_response(
            response.headers, response.version
        )
        stored_at = self.store.now() - initial_age(response.headers)
        return Entry(
            exchange.route.name,
            response.status,
            response.reason,
            tuple(headers),
            body,
            stored_at,
            limits,
        )


def _health(exchange: Exchange, *, stale: bool = False) -> Health:
    """The route's health as a hit served now finds it: a ``stale`` copy refreshed behind
    is not an answer in hand (:func:`proxy.chain.outcome.route_health`)."""
    guards, upstreams = exchange.guards, exchange.route.upstreams
    if not stale:
        # an answer in hand: only whether the first upstream is skipped can change it
        first = guards.get(upstreams[0])
        return route_health([first is not None and first.skipping()], answer_in_hand=True)
    skipped = [(guard := guards.get(name)) is not None and guard.skipping() for name in upstreams]
    return route_health(skipped)
