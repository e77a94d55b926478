"""Which answers may be kept as "last known good", under which key, and when a kept
answer may be served.

Each storage rule is numbered, cites RFC 9111 (HTTP Caching) (docs/configuration.md,
"The cache", sums them up), and is one expression. Rules that a route may relax say
so. Only complete, final answers that passed validation reach these rules at all (the caller's job).
What removes a stored answer is :func:`invalidates` (and a purge, or a newer answer
stored under the same key): never an answer that merely may not be stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Protocol
from urllib.parse import parse_qsl, urlencode

from proxy.cache.freshness import UpstreamLimits, directives


class Kept(Protocol):
    """What the serving rules read of a stored answer (:class:`proxy.cache.store.Entry`):
    a protocol, so the rules sit below the store that imports them."""

    @property
    def limits(self) -> UpstreamLimits: ...


# RFC 9110 15.1 lists more statuses as heuristically cacheable (204, 301, 404, ...), but
# a "last known good" answer is a good one: a 404 or a redirect kept for ``stale_for``
# would be served through every outage in place of the real thing. Routes may add more.
DEFAULT_STATUSES = (200, 203)

# RFC 9110 9.2.1: methods whose success may change the resource (RFC 9111 4.4).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


@dataclass(frozen=True, slots=True)
class CachePolicy:
    methods: frozenset[str]
    statuses: frozenset[int]
    vary_headers: tuple[str, ...]  # lower-case request header names that are part of the key
    ignore_params: frozenset[str]
    allow_authorization: bool  # the route opted in; Authorization/Cookie then join the key


def not_storable(
    method: str,
    status: int,
    request_headers: Mapping[str, str],
    response_headers: Mapping[str, str],
    policy: CachePolicy,
) -> str | None:
    """Why this answer must not be stored, or None when it may be."""
    cache_control = directives(response_headers)
    # 1. RFC 9111 3: "the request method is understood by the cache" - and the route
    #    says which methods it keeps (GET, HEAD by default).
    if method not in policy.methods:
        return f"method {method} is not cached"
    # 2. RFC 9111 3: "the response status code is final" and, here, one the route keeps
    #    (200 and 203 unless it lists others: a last known good answer is a good one).
    if status not in policy.statuses:
        return f"status {status} is not cached"
    # 3. RFC 9111 5.2.2.5: "no-store ... a cache MUST NOT store any part of" the response.
    if "no-store" in cache_control:
        return "Cache-Control: no-store"
    # 4. RFC 9111 5.2.2.7: "private ... a shared cache MUST NOT store the response".
    if "private" in cache_control:
        return "Cache-Control: private"
    # 5. RFC 9111 3.5: "a shared cache MUST NOT use a cached response to a request with an
    #    Authorization header field" unless allowed; Cookie is the same risk.
    if not policy.allow_authorization and (
        "Authorization" in request_headers or "Cookie" in request_headers
    ):
        return "the request carries Authorization or Cookie"
    # 6. RFC 9111 7.3 (Set-Cookie in a shared cache hands one user's cookie to the next).
    if "Set-Cookie" in response_headers:
        return "the response sets a cookie"
    # 7. RFC 9111 4.1: "Vary: * ... always fails to match".
    vary = {name.strip().lower() for name in response_headers.get("Vary", "").split(",")} - {""}
    if "*" in vary:
        return "Vary: *"
    # 8. RFC 9111 4.1: the selecting headers must be in the key; only the route's are.
    unkeyed = vary - set(policy.vary_headers)
    if "accept-encoding" in unkeyed and not _encoded(response_headers):
        # An unencoded body suits every client, whatever it accepts.
        unkeyed.discard("accept-encoding")
    if unkeyed:
        return f"Vary names {', '.join(sorted(unkeyed))}, which the route does not key on"
    return None


def _encoded(headers: Mapping[str, str]) -> bool:
    return headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")


def cache_key(
    route: str,
    method: str,
    host: str,
    path: str,
    query: str,
    request_headers: Mapping[str, str],
    policy: CachePolicy,
) -> str:
    """The route, method, host, path, the query sorted (minus ignored parameters), and
    the headers the route names - never anything the route did not ask for. The route
    is in it because two routes may match the same URL (on a header, or after a
    reload reorders them) with different upstreams: one's answer is not the other's.
    A keyed header sent on several lines is keyed on all of them, as the upstream
    receives all of them."""
    parts = [route, method, host.lower(), path, _query(query, policy)]
    names = policy.vary_headers
    if policy.allow_authorization:
        names = (*names, "authorization", "cookie")
    getall = getattr(request_headers, "getall", None)
    for name in names:
        value = ", ".join(getall(name, ())) if getall else request_headers.get(name, "")
        parts.append(f"{name}={value}")
    return "\n".join(parts)


def _query(query: str, policy: CachePolicy) -> str:
    if not query:
        return ""  # most targets have none: no parsing
    params = sorted(
        (name, value)
        for name, value in parse_qsl(query, keep_blank_values=True)
        if name not in policy.ignore_params
    )
    return urlencode(params)


def uri_key(route: str, host: str, path: str, query: str, policy: CachePolicy) -> str:
    """What every :func:`cache_key` of one target URI on one route shares, whatever the
    method and keyed headers: the unit RFC 9111 4.4 invalidates."""
    return "\n".join((route, host.lower(), path, _query(query, policy)))


def uri_of(key: str) -> str:
    """The :func:`uri_key` a :func:`cache_key` belongs to (its method and headers left out)."""
    parts = key.split("\n", 5)
    return "\n".join(parts[:1] + parts[2:5])


def invalidates(method: str, status: int) -> bool:
    """Whether an upstream's answer removes the stored copies of its target URI.

    RFC 9111 4.4: "A cache MUST invalidate the target URI ... when it receives a
    non-error status code in response to an unsafe request method" (2xx or 3xx). That,
    a newer storable answer for the same key, and a purge are the only ways a stored
    answer goes. An answer that may not be stored (an error, ``no-store``, a status the
    route does not keep) says nothing about the stored one: if it evicted it, a client
    able to make the origin fail once (an oversized header, say) could empty the cache
    just before an outage.
    """
    return method not in SAFE_METHODS and 200 <= status < 400


class Use(Enum):
    """What a stored answer may do for a request that finds it."""

    FRESH = "fresh"  # serve it; no upstream is asked
    REVALIDATE = "revalidate"  # serve it, and refresh it in the background
    NONE = "none"  # ask the upstreams


def use_on_arrival(entry: Kept, age: float, fresh_for: float, stale_while_revalidate: float) -> Use:
    """Before any upstream is asked: the route's windows, narrowed by the upstream's own
    limits (RFC 9111 4.2, RFC 5861 3)."""
    fresh = min(fresh_for, entry.limits.fresh)
    if age <= fresh and fresh > 0:
        return Use.FRESH
    if stale_while_revalidate > 0 and age <= min(
        fresh + stale_while_revalidate, entry.limits.revalidating
    ):
        return Use.REVALIDATE
    return Use.NONE


def may_serve_stale(entry: Kept, age: float, stale_for: float) -> bool:
    """After every upstream failed (RFC 9111 4.2.4: unless the upstream forbade it)."""
    return age <= min(stale_for, entry.limits.stale)
