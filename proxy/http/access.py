"""What each request did, once its answer is decided (before it is written; for an
answer that streams, at its commit point, so ``duration_ms`` is the time to the first
byte): counted (:mod:`proxy.ops.stats`) and logged as one structured line on
``failover_proxy.access`` (:mod:`proxy.ops.logs`). What served it is read from the
outcome recorded on the exchange, not from the headers; how a stream ended is told to
its upstream's guard, which counts a cut one as a failure."""

from __future__ import annotations

import logging

from proxy.http.exchange import Exchange
from proxy.http.wire import Reply
from proxy.ops.logs import ACCESS, write_access
from proxy.ops.stats import Stats

access_log = logging.getLogger(ACCESS)


def account(stats: Stats, exchange: Exchange, response: Reply, seconds: float) -> None:
    """Count the answer the client got, and log it (one line per request)."""
    source, health = str(exchange.outcome.source), str(exchange.outcome.health)
    route = exchange.route.name
    route_stats = stats.routes.get(route)
    if route_stats is not None:
        route_stats.record(source, health, response.status, seconds)
    if access_log.isEnabledFor(logging.INFO) and not write_access(
        exchange.request_id,
        route,
        exchange.method,
        exchange.path,
        response.status,
        source,
        health,
        exchange.attempts,
        seconds,
    ):
        access_log.info(
            "%s %s %s",
            exchange.method,
            exchange.path,
            response.status,
            extra={
                "fields": {
                    "request_id": exchange.request_id,
                    "route": route,
                    "method": exchange.method,
                    "path": exchange.path,
                    "status": response.status,
                    "source": source,
                    "health": health,
                    "attempts": [
                        {"upstream": upstream, "outcome": outcome}
                        for upstream, outcome in exchange.attempts
                    ],
                    "duration_ms": round(seconds * 1000, 3),
                }
            },
        )
