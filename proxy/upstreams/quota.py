"""A provider's quota, spent before the provider starts refusing: a token bucket for the
per-second rate and fixed windows for the longer periods (minute, hour, day, aligned to
UTC boundaries, as providers count them). Pure: an injected wall clock.

A call is allowed only while every configured limit has room; an exhausted quota skips
the upstream (``quota_exhausted``) so traffic moves to the next one in time. Use of each
window is reported, with warnings at 75% and 90% (for ``/health`` and metrics).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from proxy.upstreams.events import EventLog

PERIODS = {"per_minute": 60.0, "per_hour": 3600.0, "per_day": 86400.0}
WARN_AT = (0.75, 0.9)


@dataclass(frozen=True, slots=True)
class QuotaSettings:
    per_second: float | None = None
    per_minute: int | None = None
    per_hour: int | None = None
    per_day: int | None = None


@dataclass(frozen=True, slots=True)
class WindowUse:
    period: str
    used: int
    limit: int

    @property
    def share(self) -> float:
        return self.used / self.limit

    @property
    def warning(self) -> float | None:
        """The highest warning level reached (0.75 or 0.9), or None."""
        reached = [level for level in WARN_AT if self.share >= level]
        return reached[-1] if reached else None


class Quota:
    def __init__(
        self, name: str, settings: QuotaSettings, clock: Callable[[], float], events: EventLog
    ) -> None:
        self.name = name
        self._events = events
        self._clock = clock
        self._rate = settings.per_second
        self._tokens = settings.per_second or 0.0
        self._refilled = clock()
        self._limits = {
            period: limit for period in PERIODS if (limit := getattr(settings, period)) is not None
        }
        self._window_start = {period: -1 for period in self._limits}
        self._used = dict.fromkeys(self._limits, 0)
        self._warned = dict.fromkeys(self._limits, 0.0)

    def try_spend(self) -> bool:
        now = self._clock()
        self._roll_windows(now)
        if any(self._used[p] >= limit for p, limit in self._limits.items()):
            return False
        if self._rate is not None:
            self._tokens = min(self._rate, self._tokens + (now - self._refilled) * self._rate)
            self._refilled = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
        for period in self._limits:
            self._used[period] += 1
            self._warn(period)
        return True

    def use(self) -> list[WindowUse]:
        self._roll_windows(self._clock())
        return [WindowUse(p, self._used[p], limit) for p, limit in self._limits.items()]

    def _roll_windows(self, now: float) -> None:
        for period in self._limits:
            start = int(now // PERIODS[period])
            if start != self._window_start[period]:
                self._window_start[period] = start
                self._used[period] = 0
                self._warned[period] = 0.0

    def _warn(self, period: str) -> None:
        level = WindowUse(period, self._used[period], self._limits[period]).warning
        if level is not None and level > self._warned[period]:
            self._warned[period] = level
            used, limit = self._used[period], self._limits[period]
            self._events.record(
                self.name,
                f"quota_{round(level * 100)}",
                f"{used} of {limit} {period.replace('_', ' ')}",
            )
