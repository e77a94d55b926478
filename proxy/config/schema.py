"""The schema of config.yaml: what a valid configuration is.

Key names are those of docs/configuration.md, "Configuration reference"; they are the
interface SREs learn. Every model refuses unknown keys and wrong types (``extra="forbid"``,
``strict=True``), and is frozen, so a loaded config can be shared by every request
without copying. Checks that need more than one field (names that refer to other parts
of the file, files on disk) live in :mod:`proxy.config.loader`, which can point at the
offending line.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from proxy.config.route_schema import (
    RETRY_ON_CHOICES,
    DefaultPayload,
    Match,
    Retry,
    Route,
    RouteCache,
    StreamConfig,
    UpgradeConfig,
    Validate,
)
from proxy.config.types import TOKEN, Duration, Model, Name, Size, header_name, positive
from proxy.config.upstream_schema import (
    CircuitBreakerConfig,
    HealthCheck,
    QuotaConfig,
    RetryBudgetConfig,
    SlowCall,
    Timeouts,
    Tls,
    Upstream,
)

# The parts of the file live in route_schema and upstream_schema; they are named here
# too, so ``schema.Route`` reads as "a route of config.yaml" wherever it is used.
__all__ = [
    "RETRY_ON_CHOICES",
    "CircuitBreakerConfig",
    "Config",
    "DefaultPayload",
    "HealthCheck",
    "Match",
    "QuotaConfig",
    "Retry",
    "RetryBudgetConfig",
    "Route",
    "RouteCache",
    "SlowCall",
    "StreamConfig",
    "Timeouts",
    "Tls",
    "UpgradeConfig",
    "Upstream",
    "Validate",
    "reference_errors",
]

# A DNS name or IPv4 address, or an IPv6 address with or without its brackets.
_HOST_NAME = re.compile(r"^(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*)\Z")


class Listen(Model):
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)  # 0: any free port (tests)
    backlog: int = Field(default=1024, ge=1)  # a burst past it waits a SYN retry (1s)


class HeaderNamesConfig(Model):
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
    """Bounds on what a client may send (docs/configuration.md, "Limits and bad input")."""

    max_request_line: Size = 8 * 1024
    max_header_size: Size = 8 * 1024
    max_headers: int = Field(default=100, ge=1, le=10_000)
    max_body: Size = 10 * 1024**2
    client_header_timeout: Duration = 30.0
    client_body_timeout: Duration = 30.0
    max_buffered_response: Size = 256 * 1024


class CacheLimits(Model):
    max_size: Size = 256 * 1024**2
    max_entries: int = Field(default=100_000, ge=1)
    path: str | None = None  # kept on disk here (relative to the config file) when set
    flush_interval: Duration = 1.0  # changes reach the file at most this often

    _positive = field_validator("flush_interval")(positive)


class Buffer(Model):
    """The durable write buffer (docs/configuration.md, "Writes: the durable buffer"),
    shared by routes with ``on_failure: buffer``."""

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
    headers: HeaderNamesConfig = HeaderNamesConfig()
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
