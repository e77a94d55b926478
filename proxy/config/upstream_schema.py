"""The schema of an upstream in config.yaml: where it is, its timeouts, and its health
settings: circuit breaker, active health check, quota and retry budget
(docs/configuration.md, "Configuration reference"; defaults explained in each class).

The classes that configure a runtime object carry a ``Config`` suffix
(:class:`CircuitBreakerConfig` configures :class:`proxy.upstreams.breaker.CircuitBreaker`);
their JSON Schema titles stay the plain names users have seen.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from yarl import URL

from proxy.config.types import Duration, Model, Number, Ratio, StatusList, positive
from proxy.config.units import parse_duration


class SlowCall(Model):
    duration: Duration
    rate: Ratio = 1.0


class CircuitBreakerConfig(Model):
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


class QuotaConfig(Model):
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

    _positive = field_validator("interval", "timeout")(positive)


class RetryBudgetConfig(Model):
    """Finagle's defaults, scaled down: 20% over 10s with a floor of 3 retries a second."""

    ratio: Ratio = 0.2
    window: Duration = 10.0
    min_per_second: Number = Field(default=3.0, ge=0)


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
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    max_concurrent: int | None = Field(default=None, ge=1)  # more in flight: skip (overloaded)
    max_cooldown: Duration = 60.0  # cap on a Retry-After cooldown
    quota: QuotaConfig | None = None
    health_check: HealthCheck | None = None
    retry_budget: RetryBudgetConfig = RetryBudgetConfig()
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
