"""What served an answer, and how healthy the route was when it did: the ``source``, the
``health`` and the cache status of one exchange, recorded once when it is decided. The
response headers, the access log line, the per-route counters and ``/health`` read the
record; none of them parses another's output.

The route-health rule lives here, once. Pure: it takes each upstream's "is it being
skipped" flag (:meth:`proxy.upstreams.guard.UpstreamGuard.skipping`), not the guards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class Health(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    CRITICAL = "critical"


class Source(StrEnum):
    """Layers that are not an upstream (an upstream is named by its own name)."""

    CACHE = "cache"
    DEFAULT = "default"
    BUFFER = "buffer"
    NONE = "none"


# made per request, and a frozen one costs 3x to build: never changed, so hashable
@dataclass(slots=True, unsafe_hash=True)
class Outcome:
    """``source``: an upstream's name or a :class:`Source`; ``cache_status``: our RFC 9211
    ``Cache-Status`` member (:mod:`proxy.cache.status`), None when the cache took no part."""

    source: str
    health: Health
    cache_status: str | None = None


# Nothing served the request: an answer of the proxy's own (a 400, a 404, a 503).
UNSERVED = Outcome(Source.NONE, Health.CRITICAL)


def route_health(skipped: Sequence[bool], *, answer_in_hand: bool = False) -> Health:
    """A route's health from whether each of its upstreams, in order, is being skipped.

    ``healthy`` while the first upstream would be tried, ``degraded`` while it is
    skipped; ``critical`` when every upstream is skipped, since a request would then get
    a stale copy, a default payload or an error. ``answer_in_hand``: a fresh copy from
    the cache is being served, which is an answer whatever the upstreams do, so it is
    never worse than degraded (a stale copy refreshed behind is not: no refresh can
    succeed while every upstream is skipped).
    """
    if all(skipped) and not answer_in_hand:
        return Health.CRITICAL
    return Health.DEGRADED if skipped[0] else Health.HEALTHY
