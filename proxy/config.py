"""The schema of config.yaml: what a valid configuration is.

Key names follow DESIGN.md section 12; they are the interface SREs learn. Every model
refuses unknown keys and wrong types (``extra="forbid"``, ``strict=True``), and is
frozen, so a loaded config can be shared by every request without copying. Checks
that need more than one field (names that refer to other parts of the file, files on
disk) live in :mod:`proxy.loader`, which can point at the offending line.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from yarl import URL

from proxy.units import parse_duration, parse_ratio, parse_size
from proxy.validate import parse_json_path

Duration = Annotated[float, BeforeValidator(parse_duration)]
Ratio = Annotated[float, BeforeValidator(parse_ratio)]
Size = Annotated[int, BeforeValidator(parse_size)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

RETRY_ON_CHOICES = ("connect_error", "timeout", "reset", "5xx", "429", "invalid")


def status_list(value: list[Any]) -> list[int | str]:
    """Status codes and classes (``503``, ``5xx``), as ``failure_statuses`` and checks use."""
    for item in value:
        valid_code = isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599
        if not (valid_code or item in ("2xx", "3xx", "4xx", "5xx")):
            raise ValueError(f"expected a status code or a class such as 5xx, got {item!r}")
    return value


def _as_float(value: object) -> object:
    """YAML writes 50 for 50.0; strict mode would refuse the int."""
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


Number = Annotated[float, BeforeValidator(_as_float)]
StatusList = Annotated[list[Any], AfterValidator(status_list)]


def _header_name(value: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(f"{value!r} is not a valid HTTP header name")
    return value


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


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

    _names = field_validator("source", "health", "proxy_status")(_header_name)


class Limits(Model):
    """Bounds on what a client may send (DESIGN.md section 10)."""

    max_request_line: Size = 8 * 1024
    max_header_size: Size = 8 * 1024
    max_headers: int = Field(default=100, ge=1, le=10_000)
    max_body: Size = 10 * 1024**2
    client_header_timeout: Duration = 60.0
    client_body_timeout: Duration = 30.0
    max_buffered_response: Size = 256 * 1024


class Timeouts(Model):
    connect: Duration = 1.0
    read: Duration = 10.0


class Tls(Model):
    verify: bool = True
    ca_file: str | None = None


class SlowCall(Model):
    duration: Duration
    rate: Ratio = 1.0


class CircuitBreaker(Model):
    """Defaults after Envoy's outlier detection (5 in a row, 30s growing to 5m) and
    Resilience4j (a rate over a window, a bounded number of half-open probes)."""

    enabled: bool = True
    window: int | str = 20  # the last N calls, or a duration such as 30s
    min_calls: int = Field(default=10, ge=1)
    failure_rate: Ratio = 0.5
    consecutive_failures: int = Field(default=5, ge=1)
    slow_call: SlowCall | None = None
    open_for: Duration = 30.0
    max_open_for: Duration = 300.0
    half_open_probes: int = Field(default=3, ge=1, le=1000)

    @field_validator("window")
    @classmethod
    def _calls_or_duration(cls, value: int | str) -> int | str:
        if isinstance(value, int):
            if value < 1:
                raise ValueError("a window of calls holds at least 1")
        else:
            parse_duration(value)
        return value

    def window_calls(self) -> int | None:
        return self.window if isinstance(self.window, int) else None

    def window_seconds(self) -> float | None:
        return None if isinstance(self.window, int) else parse_duration(self.window)


class Quota(Model):
    per_second: Number | None = Field(default=None, gt=0)
    per_minute: int | None = Field(default=None, ge=1)
    per_hour: int | None = Field(default=None, ge=1)
    per_day: int | None = Field(default=None, ge=1)


class HealthCheck(Model):
    path: str = "/healthz"
    interval: Duration = 5.0
    timeout: Duration = 1.0
    healthy_threshold: int = Field(default=2, ge=1)
    unhealthy_threshold: int = Field(default=3, ge=1)
    expected_status: StatusList = ["2xx"]

    @field_validator("path")
    @classmethod
    def _starts_with_slash(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"a path starts with '/', got {value!r}")
        return value

    @field_validator("interval", "timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be longer than 0s")
        return value


class RetryBudget(Model):
    """Finagle's defaults, scaled down: 20% over 10s with a floor of 3 retries a second."""

    ratio: Ratio = 0.2
    window: Duration = 10.0
    min_per_second: Number = Field(default=3.0, ge=0)


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
    headers: dict[str, str] = {}

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
            if not _TOKEN.match(method):
                raise ValueError(f"{method!r} is not an HTTP method")
        return [method.upper() for method in value]

    @field_validator("host")
    @classmethod
    def _lower_host(cls, value: str) -> str:
        return value.lower()

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            _header_name(name)
        return value

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
    headers: dict[str, str] = {}
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
    vary_headers: list[str] = []
    ignore_params: list[str] = []
    methods: list[str] = ["GET", "HEAD"]
    statuses: list[int] = [200, 203, 204, 300, 301, 404, 410]
    max_entry_size: Size = 1024**2
    allow_authorization: bool = (
        False  # keep answers to Authorization/Cookie requests, keyed on them
    )

    @field_validator("vary_headers")
    @classmethod
    def _header_names(cls, value: list[str]) -> list[str]:
        return [_header_name(name).lower() for name in value]


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

    @field_validator("deadline")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("the deadline must be longer than 0s")
        return value


class CacheLimits(Model):
    max_size: Size = 256 * 1024**2
    max_entries: int = Field(default=100_000, ge=1)


class Config(Model):
    listen: Listen = Listen()
    headers: HeaderNames = HeaderNames()
    limits: Limits = Limits()
    shutdown_grace: Duration = 20.0
    upstreams: dict[Name, Upstream] = Field(min_length=1)
    routes: list[Route] = Field(min_length=1)
    cache: CacheLimits = CacheLimits()


def reference_errors(config: Config) -> list[tuple[tuple[str | int, ...], str]]:
    """Names that point nowhere or twice: ``(path, message)`` pairs for the loader to place."""
    errors: list[tuple[tuple[str | int, ...], str]] = []
    seen_routes: set[str] = set()
    for i, route in enumerate(config.routes):
        if route.name in seen_routes:
            errors.append((("routes", i, "name"), f"a route named {route.name!r} exists already"))
        seen_routes.add(route.name)
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
