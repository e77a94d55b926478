"""The compiled, immutable snapshot of a config that the request path reads.

Everything that can be decided once per config is decided here (regexes compiled,
status sets expanded, default payloads read from disk, retry groups resolved), so
that a request only looks things up. A reload builds a new :class:`Runtime`, and
:mod:`proxy.reloader` swaps it in (with the upstream pools and guards that go with it)
through :meth:`proxy.live.Live.swap`; a request reads :attr:`proxy.live.Live.current`
once at its start and keeps that generation to its end.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

from yarl import URL

from proxy.cache.rules import CachePolicy
from proxy.chain.errors import RETRY_GROUPS, Failure
from proxy.chain.headers import UNKEYED_REQUEST_HEADERS, ForwardingRules
from proxy.chain.payloads import Payload, load_default
from proxy.chain.plan import RetryPolicy
from proxy.chain.routing import RouteMatcher, Router
from proxy.chain.validate import Validator, parse_json_path
from proxy.config import schema as config
from proxy.config.schema import Config, Limits
from proxy.upstreams.breaker import BreakerSettings
from proxy.upstreams.budget import BudgetSettings
from proxy.upstreams.quota import QuotaSettings


@dataclass(frozen=True, slots=True)
class HealthCheckSettings:
    path: str
    interval: float
    timeout: float
    healthy_threshold: int
    unhealthy_threshold: int
    expected_status: frozenset[int]


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    name: str
    origin: URL  # scheme://host:port
    base_path: str  # the URL's path without a trailing slash, prefixed to every request
    connect_timeout: float
    read_timeout: float
    max_connections: int
    preserve_host: bool
    tls_verify: bool
    ca_file: Path | None
    breaker: BreakerSettings | None
    max_concurrent: int | None
    max_cooldown: float
    quota: QuotaSettings | None
    health_check: HealthCheckSettings | None
    retry_budget: BudgetSettings


@dataclass(frozen=True, slots=True)
class RouteCacheRules:
    policy: CachePolicy
    stale_for: float
    fresh_for: float
    stale_while_revalidate: float
    honour_cache_control: bool
    max_entry_size: int
    # request headers not sent upstream on this route: the config's, plus the unkeyed
    # inputs the route does not keep (:data:`proxy.chain.headers.UNKEYED_REQUEST_HEADERS`)
    not_forwarded: frozenset[str]


@dataclass(frozen=True, slots=True)
class StreamSettings:
    hold_max: int
    first_event_timeout: float | None  # None: the upstream's read timeout
    idle_timeout: float
    max_duration: float | None
    abort_on_error_event: bool


@dataclass(frozen=True, slots=True)
class UpgradeSettings:
    enabled: bool
    protocols: frozenset[str] | None  # lower case; None: any
    handshake_timeout: float
    idle_timeout: float
    max_duration: float | None
    max_tunnels: int


# Equal settings are one object: 10,000 routes on the defaults hold one of each.
_stream_settings = functools.lru_cache(maxsize=256)(StreamSettings)
_upgrade_settings = functools.lru_cache(maxsize=256)(UpgradeSettings)


def stream_settings(stream: config.StreamConfig) -> StreamSettings:
    return _stream_settings(
        hold_max=stream.hold_max,
        first_event_timeout=stream.first_event_timeout,
        idle_timeout=stream.idle_timeout,
        max_duration=stream.max_duration,
        abort_on_error_event=stream.abort_on_error_event,
    )


def upgrade_settings(upgrade: config.UpgradeConfig) -> UpgradeSettings:
    return _upgrade_settings(
        enabled=upgrade.enabled,
        protocols=frozenset(upgrade.protocols) if upgrade.protocols else None,
        handshake_timeout=upgrade.handshake_timeout,
        idle_timeout=upgrade.idle_timeout,
        max_duration=upgrade.max_duration,
        max_tunnels=upgrade.max_tunnels,
    )


DEFAULT_STREAM = stream_settings(config.StreamConfig())
DEFAULT_UPGRADE = upgrade_settings(config.UpgradeConfig())


@dataclass(frozen=True, slots=True)
class RouteRuntime:
    name: str
    upstreams: tuple[str, ...]
    deadline: float
    policy: RetryPolicy
    max_replay_body: int
    failure_statuses: frozenset[int]
    default: Payload | None
    validator: Validator | None
    cache: RouteCacheRules | None
    buffers_writes: bool  # on_failure: buffer
    response_mode: str = "auto"  # auto, buffer or stream
    stream: StreamSettings = DEFAULT_STREAM
    upgrade: UpgradeSettings = DEFAULT_UPGRADE


@dataclass(frozen=True, slots=True)
class HeaderNames:
    source: str
    health: str
    proxy_status: str


@dataclass(frozen=True, slots=True)
class Runtime:
    config: Config
    router: Router[RouteRuntime]
    routes: tuple[RouteRuntime, ...]
    upstreams: dict[str, UpstreamSettings]
    forwarding: ForwardingRules
    header_names: HeaderNames
    limits: Limits

    def route(self, name: str) -> RouteRuntime | None:
        """The route called ``name``, if this config has one (a write buffered under an
        older config, or an admin call, may name one a reload removed)."""
        return next((route for route in self.routes if route.name == name), None)


def with_upstream_order(runtime: Runtime, route_name: str, order: tuple[str, ...]) -> Runtime:
    """``runtime`` with one route's upstreams tried in ``order`` (a permutation of them)."""
    old = runtime.route(route_name)
    if old is None:
        raise ValueError(f"there is no route {route_name!r}")
    if sorted(order) != sorted(old.upstreams):
        raise ValueError(f"the order must list exactly {', '.join(old.upstreams)}")
    new = dataclasses.replace(old, upstreams=order)
    return dataclasses.replace(
        runtime,
        router=runtime.router.replacing(old, new),
        routes=tuple(new if route is old else route for route in runtime.routes),
    )


def expand_statuses(items: list[int | str]) -> frozenset[int]:
    """``[5xx, 429]`` as the set of statuses; routes mostly share one list, so they share
    one set (10,000 routes with their own ``5xx`` set held 63 MB of them)."""
    return _expanded(tuple(items))


@functools.lru_cache(maxsize=256)
def _expanded(items: tuple[int | str, ...]) -> frozenset[int]:
    statuses: set[int] = set()
    for item in items:
        if isinstance(item, int):
            statuses.add(item)
        else:
            first = int(item[0]) * 100
            statuses.update(range(first, first + 100))
    return frozenset(statuses)


def upstream_settings(name: str, upstream: config.Upstream, base: Path) -> UpstreamSettings:
    url = URL(upstream.url)
    return UpstreamSettings(
        name=name,
        origin=url.origin(),
        base_path=url.raw_path.rstrip("/"),
        connect_timeout=upstream.timeouts.connect,
        read_timeout=upstream.timeouts.read,
        max_connections=upstream.max_connections,
        preserve_host=upstream.preserve_host,
        tls_verify=upstream.tls.verify,
        ca_file=base / upstream.tls.ca_file if upstream.tls.ca_file else None,
        breaker=_breaker(upstream.circuit_breaker),
        max_concurrent=upstream.max_concurrent,
        max_cooldown=upstream.max_cooldown,
        quota=QuotaSettings(**upstream.quota.model_dump()) if upstream.quota else None,
        health_check=_health_check(upstream.health_check) if upstream.health_check else None,
        retry_budget=BudgetSettings(**upstream.retry_budget.model_dump()),
    )


def _health_check(check: config.HealthCheck) -> HealthCheckSettings:
    return HealthCheckSettings(
        path=check.path,
        interval=check.interval,
        timeout=check.timeout,
        healthy_threshold=check.healthy_threshold,
        unhealthy_threshold=check.unhealthy_threshold,
        expected_status=expand_statuses(check.expected_status),
    )


def _breaker(cb: config.CircuitBreakerConfig) -> BreakerSettings | None:
    if not cb.enabled:
        return None
    return BreakerSettings(
        window_calls=cb.window_calls(),
        window_seconds=cb.window_seconds(),
        min_calls=cb.min_calls,
        failure_rate=cb.failure_rate,
        consecutive_failures=cb.consecutive_failures,
        slow_call_duration=cb.slow_call.duration if cb.slow_call else None,
        slow_call_rate=cb.slow_call.rate if cb.slow_call else 1.0,
        open_for=cb.open_for,
        max_open_for=max(cb.max_open_for, cb.open_for),
        half_open_probes=cb.half_open_probes,
    )


@functools.lru_cache(maxsize=1024)
def _upstream_order(order: tuple[str, ...]) -> tuple[str, ...]:
    """Routes that list the same upstreams share one tuple."""
    return order


@functools.lru_cache(maxsize=256)
def _retry_policy(
    attempts: int, backoff: float, max_backoff: float, on: tuple[str, ...], non_idempotent: bool
) -> RetryPolicy:
    """Routes mostly share one retry policy, so they share one object (10,000 routes
    held 4 MB of copies)."""
    retry_on: frozenset[Failure] = frozenset().union(*(RETRY_GROUPS[name] for name in on))
    return RetryPolicy(attempts, backoff, max_backoff, retry_on, non_idempotent)


def _route(route: config.Route, base: Path, forwarding: ForwardingRules) -> RouteRuntime:
    retry = route.retry
    policy = _retry_policy(
        retry.attempts, retry.backoff, retry.max_backoff, tuple(retry.on), retry.non_idempotent
    )
    return RouteRuntime(
        name=route.name,
        upstreams=_upstream_order(tuple(route.upstreams)),
        deadline=route.deadline,
        policy=policy,
        max_replay_body=route.retry.max_replay_body,
        failure_statuses=expand_statuses(route.failure_statuses),
        default=load_default(route.default, base) if route.default else None,
        validator=_validator(route.validate_) if route.validate_ else None,
        cache=_cache_rules(route.cache, forwarding) if route.cache else None,
        buffers_writes=route.on_failure == "buffer",
        response_mode=route.response_mode,
        stream=stream_settings(route.stream),
        upgrade=upgrade_settings(route.upgrade),
    )


def _cache_rules(cache: config.RouteCache, forwarding: ForwardingRules) -> RouteCacheRules:
    """A kept unkeyed input is forwarded, so it joins the key (after ``vary_headers``)."""
    kept = [name for name in dict.fromkeys(cache.keep_headers) if name not in cache.vary_headers]
    policy = CachePolicy(
        methods=frozenset(method.upper() for method in cache.methods),
        statuses=frozenset(cache.statuses),
        vary_headers=(*cache.vary_headers, *kept),
        ignore_params=frozenset(cache.ignore_params),
        allow_authorization=cache.allow_authorization,
    )
    return RouteCacheRules(
        policy,
        stale_for=cache.stale_for,
        fresh_for=cache.fresh_for,
        stale_while_revalidate=cache.stale_while_revalidate,
        honour_cache_control=cache.honour_cache_control,
        max_entry_size=cache.max_entry_size,
        not_forwarded=forwarding.not_forwarded(UNKEYED_REQUEST_HEADERS - set(cache.keep_headers)),
    )


def _validator(rules: config.Validate) -> Validator:
    return Validator(
        statuses=expand_statuses(rules.status) if rules.status is not None else None,
        content_type=rules.content_type.lower() if rules.content_type else None,
        min_size=rules.min_size,
        json_path=parse_json_path(rules.json_nonempty) if rules.json_nonempty else None,
        json_path_text=rules.json_nonempty,
        max_body=rules.max_body,
    )


def build_runtime(cfg: config.Config, base: Path) -> Runtime:
    """``base`` is the config file's folder: ``body_file`` and ``ca_file`` are relative to it."""
    forwarding = ForwardingRules(
        via=cfg.headers.via,
        forwarded=cfg.headers.forwarded,
        own=(cfg.headers.source, cfg.headers.health),
        proxy_status=cfg.headers.proxy_status,
    )
    routes = tuple(_route(route, base, forwarding) for route in cfg.routes)
    matchers = [RouteMatcher.compile(route.match) for route in cfg.routes]
    return Runtime(
        config=cfg,
        router=Router(list(zip(matchers, routes, strict=True))),
        routes=routes,
        upstreams={name: upstream_settings(name, up, base) for name, up in cfg.upstreams.items()},
        forwarding=forwarding,
        header_names=HeaderNames(
            source=cfg.headers.source,
            health=cfg.headers.health,
            proxy_status=cfg.headers.proxy_status,
        ),
        limits=cfg.limits,
    )
