"""The schema of config.yaml: what a valid configuration is.

Key names are those of the README's "Configuration reference"; they are the interface
SREs learn. Every model refuses unknown keys and wrong types (``extra="forbid"``,
``strict=True``), and is frozen, so a loaded config can be shared by every request
without copying. Checks that need more than one field (names that refer to other parts
of the file, files on disk) live in :mod:`proxy.config.loader`, which can point at the
offending line.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from yarl import URL

from proxy.cache.rules import DEFAULT_STATUSES
from proxy.chain.headers import UNKEYED_REQUEST_HEADER_NAMES, UNKEYED_REQUEST_HEADERS
from proxy.chain.validate import parse_json_path
from proxy.config.types import (
    TOKEN,
    Duration,
    HeaderName,
    HeaderValue,
    Model,
    Name,
    Size,
    StatusList,
    header_name,
)
from proxy.config.upstream_schema import CircuitBreaker, HealthCheck, Quota, RetryBudget

__all__ = ["CircuitBreaker", "Config", "HealthCheck", "Quota", "RetryBudget", "Route"]

# A DNS name or IPv4 address, or an IPv6 address with or without its brackets.
_HOST_NAME = re.compile(r"^(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*)\Z")

RETRY_ON_CHOICES = ("connect_error", "timeout", "reset", "5xx", "429", "invalid")


class Listen(Model):
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)  # 0: any free port (tests)
    backlog: int = Field(default=1024, ge=1)  # a burst past it waits a SYN retry (1s)


class HeaderNames(Model):
    """Names of the headers the proxy adds, and whether it adds Via / X-Forwarded-*."""

    source: str = "X-Failover-Source"
    health: str = "X-Failover-Health"
    proxy_status: str = "Proxy-Status"
    via: str = "failover-proxy"  # the pseudonym in Via; "" sends no Via
    forwarded: bool = True  # X-Forwarded-For/-Proto/-Host to upstreams

    _names = field_validator("source", "health", "proxy_status")(header_name)

    @field_validator("via")
    @classmethod
    def _pseudonym(cls, value: str) -> str:
        """RFC 9110 7.6.3: a pseudonym is a token; anything else could break the Via line."""
        if value and not TOKEN.match(value):
            raise ValueError(f"{value!r} is not a valid Via pseudonym (RFC 9110 token)")
        return value


class Limits(Model):
    """Bounds on what a client may send (README, "Limits and bad input")."""

    max_request_line: Size = 8 * 1024
    max_header_size: Size = 8 * 1024
    max_headers: int = Field(default=100, ge=1, le=10_000)
    max_body: Size = 10 * 1024**2
    client_header_timeout: Duration = 30.0
    client_body_timeout: Duration = 30.0
    max_buffered_response: Size = 256 * 1024


class Timeouts(Model):
    connect: Duration = 1.0
    read: Duration = 10.0


class Tls(Model):
    verify: bool = True
    ca_file: str | None = None


class Upstream(Model):
    url: str
    timeouts: Timeouts = Timeouts()
    max_connections: int = Field(default=100, ge=1, le=100_000)
    circuit_breaker: CircuitBreaker = CircuitBreaker()
    max_concurrent: int | None = Field(default=None, ge=1)  # more in flight: skip (overloaded)
    max_cooldown: Duration = 60.0  # cap on a Retry-After cooldown
    quota: Quota | None = None
    health_check: HealthCheck | None = None
    retry_budget: RetryBudget = RetryBudget()
    preserve_host: bool = False
    tls: Tls = Tls()

    @field_validator("url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        try:
            url = URL(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"expected an http:// or https:// URL with a host, got {value!r}")
        if url.query_string or url.fragment or url.user:
            raise ValueError("an upstream URL may not carry a query, fragment or credentials")
        return value


class Match(Model):
    path: str | None = None
    path_prefix: str | None = None
    path_regex: str | None = None
    methods: list[str] | None = None
    host: str | None = None
    headers: dict[HeaderName, HeaderValue] = {}

    @field_validator("path", "path_prefix")
    @classmethod
    def _starts_with_slash(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"a path starts with '/', got {value!r}")
        return value

    @field_validator("path_regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @field_validator("methods")
    @classmethod
    def _method_tokens(cls, value: list[str]) -> list[str]:
        for method in value:
            if not TOKEN.match(method):
                raise ValueError(f"{method!r} is not an HTTP method")
        return [method.upper() for method in value]

    @field_validator("host")
    @classmethod
    def _lower_host(cls, value: str) -> str:
        return value.lower()

    @model_validator(mode="after")
    def _one_path_rule(self) -> Match:
        given = [key for key in ("path", "path_prefix", "path_regex") if getattr(self, key)]
        if len(given) > 1:
            raise ValueError(f"use one of path, path_prefix, path_regex, not {' and '.join(given)}")
        return self


class Retry(Model):
    """Same-upstream retries; moving on to the next upstream needs no retry budget."""

    attempts: int = Field(default=1, ge=1, le=10)  # tries per upstream, counting the first
    backoff: Duration = 0.025
    max_backoff: Duration = 1.0  # also caps the Retry-After the proxy is willing to wait
    on: list[Any] = ["connect_error", "timeout", "5xx", "429"]
    non_idempotent: bool = False
    max_replay_body: Size = 1024**2

    @field_validator("on")
    @classmethod
    def _known_conditions(cls, value: list[Any]) -> list[str]:
        names = [str(item) for item in value]
        for name in names:
            if name not in RETRY_ON_CHOICES:
                raise ValueError(f"{name!r} is not one of {', '.join(RETRY_ON_CHOICES)}")
        return names


class DefaultPayload(Model):
    status: int = Field(default=200, ge=200, le=599)
    headers: dict[HeaderName, HeaderValue] = {}  # checked at load: no header injection
    body: str | None = None
    body_file: str | None = None

    @model_validator(mode="after")
    def _one_body(self) -> DefaultPayload:
        if self.body is not None and self.body_file is not None:
            raise ValueError("use body or body_file, not both")
        return self


class Validate(Model):
    status: StatusList | None = None  # codes or classes; default: any the route accepts
    content_type: str | None = None
    min_size: Size = 0
    json_nonempty: str | None = None
    max_body: Size = 1024**2

    @field_validator("json_nonempty")
    @classmethod
    def _json_path(cls, value: str) -> str:
        parse_json_path(value)
        return value


class RouteCache(Model):
    stale_for: Duration  # how long a stored answer may be served when every upstream fails
    fresh_for: Duration = 0.0  # how long it may be served without asking an upstream at all
    stale_while_revalidate: Duration = 0.0  # past fresh_for: served while refreshed behind
    honour_cache_control: bool = True  # the upstream's Cache-Control may narrow the above
    vary_headers: list[str] = []
    ignore_params: list[str] = []
    methods: list[str] = ["GET", "HEAD"]
    # what may become the last good answer: a 404 or a redirect is not, unless listed
    statuses: list[Annotated[int, Field(ge=200, le=599)]] = list(DEFAULT_STATUSES)
    max_entry_size: Size = 1024**2
    allow_authorization: bool = (
        False  # keep answers to Authorization/Cookie requests, keyed on them
    )
    keep_headers: list[str] = []  # unkeyed inputs still forwarded (then part of the key)

    @field_validator("vary_headers")
    @classmethod
    def _header_names(cls, value: list[str]) -> list[str]:
        return [header_name(name).lower() for name in value]

    @field_validator("statuses")
    @classmethod
    def _whole_answers(cls, value: list[int]) -> list[int]:
        """206 is a part of an answer and 304 none at all (it refers to a copy the
        client holds): neither can stand in for the resource in an outage."""
        for status in value:
            if status in (206, 304):
                raise ValueError(f"{status} is not a whole answer and cannot be kept")
        return value

    @field_validator("keep_headers")
    @classmethod
    def _unkeyed_names(cls, value: list[str]) -> list[str]:
        """Only the names the route would strip: any other header is forwarded anyway
        (put it in vary_headers to key on it), so another name is most likely a typo."""
        for name in value:
            if name.lower() not in UNKEYED_REQUEST_HEADERS:
                known = ", ".join(sorted(UNKEYED_REQUEST_HEADER_NAMES))
                raise ValueError(f"{name!r} is not stripped on cached routes (those are: {known})")
        return [name.lower() for name in value]


class Route(Model):
    name: Name
    match: Match = Match()
    upstreams: list[Name] = Field(min_length=1)
    deadline: Duration = 15.0
    retry: Retry = Retry()
    failure_statuses: StatusList = ["5xx", 429]
    default: DefaultPayload | None = None
    validate_: Validate | None = Field(default=None, alias="validate")
    cache: RouteCache | None = None
    on_failure: str | None = None  # "buffer": writes are kept on disk when every upstream failed

    @field_validator("on_failure")
    @classmethod
    def _on_failure(cls, value: str | None) -> str | None:
        if value not in (None, "buffer"):
            raise ValueError("the only choice is buffer")
        return value

    @field_validator("deadline")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("the deadline must be longer than 0s")
        return value


class CacheLimits(Model):
    max_size: Size = 256 * 1024**2
    max_entries: int = Field(default=100_000, ge=1)
    path: str | None = None  # kept on disk here (relative to the config file) when set
    flush_interval: Duration = 1.0  # changes reach the file at most this often

    @field_validator("flush_interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be longer than 0s")
        return value


class Buffer(Model):
    """The durable write buffer (README, "Writes: the durable buffer"), shared by routes
    with ``on_failure: buffer``."""

    path: str | None = None  # a directory (relative to the config file); required to buffer
    max_size: Size = 1024**3  # bytes of buffered writes; full: 503 with Retry-After
    max_records: int = Field(default=1_000_000, ge=1)
    ordering: str = "strict"  # strict: while a route has buffered writes, new ones queue behind
    idempotency_header: str = "Idempotency-Key"
    replay_backoff: Duration = 1.0  # first wait after a failed replay; doubles per failure
    max_replay_backoff: Duration = 60.0
    segment_size: Size = 64 * 1024**2  # journal files are this large before the next starts

    _header = field_validator("idempotency_header")(header_name)

    @field_validator("ordering")
    @classmethod
    def _ordering(cls, value: str) -> str:
        if value not in ("strict", "none"):
            raise ValueError("strict or none")
        return value


class Reload(Model):
    poll_interval: Duration = 2.0  # how often the file is looked at; 0: only SIGHUP and admin


class Admin(Model):
    """The operator's side: its own listener, and a few read-only paths on the main one."""

    host: str = "127.0.0.1"  # loopback by default: reach it with kubectl port-forward
    port: int = Field(default=9901, ge=0, le=65535)
    token_file: str | None = None  # or FAILOVER_ADMIN_TOKEN; without a token: no listener
    allowed_hosts: list[str] = []  # Host names besides its own address and localhost: 421
    reserved_prefix: str = "/_failover"  # main listener: livez, readyz, health (never proxied)
    metrics_on_main: bool = False  # also serve /metrics under reserved_prefix

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: list[str]) -> list[str]:
        """Names as a Host header carries them, without a port: compared lower case."""
        for name in value:
            if not _HOST_NAME.match(name):
                raise ValueError(f"{name!r} is not a host name or IP address (no port)")
        return [name.lower().removeprefix("[").removesuffix("]") for name in value]

    @field_validator("reserved_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", value) or "/../" in value + "/":
            raise ValueError("a path such as /_failover: one or more /segments, no trailing /")
        return value


class Logging(Model):
    level: str = "info"
    format: str = "json"  # json: one object per line; text: for people at a terminal
    access_log: bool = True  # one line per request

    @field_validator("level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value not in ("debug", "info", "warning", "error"):
            raise ValueError("one of debug, info, warning, error")
        return value

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value not in ("json", "text"):
            raise ValueError("json or text")
        return value


class Config(Model):
    listen: Listen = Listen()
    headers: HeaderNames = HeaderNames()
    limits: Limits = Limits()
    shutdown_grace: Duration = 20.0
    upstreams: dict[Name, Upstream] = Field(min_length=1)
    routes: list[Route] = Field(min_length=1)
    cache: CacheLimits = CacheLimits()
    admin: Admin = Admin()
    logging: Logging = Logging()
    buffer: Buffer = Buffer()
    reload: Reload = Reload()


def reference_errors(config: Config) -> list[tuple[tuple[str | int, ...], str]]:
    """Names that point nowhere or twice: ``(path, message)`` pairs for the loader to place."""
    errors: list[tuple[tuple[str | int, ...], str]] = []
    seen_routes: set[str] = set()
    for i, route in enumerate(config.routes):
        if route.name in seen_routes:
            errors.append((("routes", i, "name"), f"a route named {route.name!r} exists already"))
        seen_routes.add(route.name)
        if route.on_failure == "buffer" and config.buffer.path is None:
            errors.append(
                (("routes", i, "on_failure"), "buffering writes needs buffer.path (a directory)")
            )
        for j, upstream in enumerate(route.upstreams):
            if upstream not in config.upstreams:
                known = ", ".join(sorted(config.upstreams))
                errors.append(
                    (
                        ("routes", i, "upstreams", j),
                        f"unknown upstream {upstream!r} (known: {known})",
                    )
                )
            elif upstream in route.upstreams[:j]:
                errors.append((("routes", i, "upstreams", j), f"{upstream!r} is listed twice"))
    return errors
