"""One request on its way through the failover chain: what the handler reads once and
every later step needs, so it is not handed from method to method piece by piece."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

from proxy.cache.store import Entry
from proxy.config.runtime import RouteRuntime, Runtime
from proxy.upstreams.client import UpstreamClient
from proxy.upstreams.guard import UpstreamGuard


@dataclass(slots=True)
class Exchange:
    """``request`` is None for a background refresh, which has no client to answer."""

    request: web.BaseRequest | None
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
