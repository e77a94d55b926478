"""One request on its way through the failover chain: what the handler reads once and
every later step needs, so it is not handed from method to method piece by piece, and
the upstream answer the chain settled on (:class:`Chosen`). The handler, the chain walk
and the cache front all name these, so they live here and none imports the others."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from multidict import CIMultiDict

from proxy.cache.store import Entry
from proxy.chain.outcome import UNSERVED, Outcome
from proxy.config.runtime import RouteRuntime, Runtime
from proxy.http.request import IncomingRequest
from proxy.upstreams.attempt import Answer
from proxy.upstreams.client import UpstreamClient
from proxy.upstreams.guard import Ticket, UpstreamGuard


@dataclass(slots=True)  # made per request: a frozen one costs 3x to build
class Chosen:
    """The upstream answer the chain settled on, and the call to report when it ends."""

    upstream: str
    guard: UpstreamGuard
    ticket: Ticket
    answer: Answer


@dataclass(slots=True, kw_only=True)
class Exchange:
    """``request`` is None for a background refresh, which has no client to answer."""

    request: IncomingRequest | None
    runtime: Runtime  # the snapshot the request started with (a reload does not change it)
    route: RouteRuntime
    method: str
    headers: Mapping[str, str]
    version: tuple[int, int]
    client_ip: str | None
    path: str
    query: str
    # the upstream pools and guards of the config the request started with, and which
    # config generation that is (a reload closes replaced pools only after it ends)
    clients: Mapping[str, UpstreamClient]
    guards: Mapping[str, UpstreamGuard]
    generation: int
    request_id: str  # the client's X-Request-Id, or one of ours; sent upstream
    attempts: list[tuple[str, str]] = field(default_factory=list)  # (upstream, outcome)
    key: str | None = None  # the cache key, on a route with a cache and a cacheable method
    forwarded_because: str = "uri-miss"  # RFC 9211 ``fwd``: why the cache asked upstream
    stored: Entry | None = None  # what this exchange kept in the cache
    # a buffered write's replay: no client waits, so it takes no half-open probe a client
    # could, and an answer retrying cannot change ends the walk as the write's verdict
    replay: bool = False
    # what served the answer, recorded where that is decided; the headers, the access
    # log and the counters read it (nothing served it until something says so)
    outcome: Outcome = UNSERVED
    # the request target as it arrived, forwarded byte for byte (routing matched its
    # canonical form); a replay or a refresh without one sends ``path?query``
    target: bytes = b""
    chosen: Chosen | None = None  # the upstream answer relayed, once the chain chose one

    def __post_init__(self) -> None:
        if not self.target:
            target = self.path + ("?" + self.query if self.query else "")
            self.target = target.encode("latin-1")

    def behind(self) -> Exchange:
        """A copy for a background refresh of this exchange's cache entry: no client to
        answer, and its own headers, attempts and outcome (the client's request goes on
        with these while the refresh runs)."""
        return dataclasses.replace(
            self,
            request=None,
            headers=CIMultiDict(self.headers),
            attempts=[],
            stored=None,
            outcome=UNSERVED,
        )
