"""A retry budget per upstream, so a failing upstream is not hammered by retry storms.

Finagle's RetryBudget and Envoy's retry budgets: retries to an upstream may add at most
``ratio`` to the requests it received over the last ``window`` seconds, plus a floor of
``min_per_second`` retries per second so a quiet upstream can still be retried. Counts
are kept in one-second buckets, so memory does not grow with traffic. Pure: an
injected clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    ratio: float = 0.2
    window: float = 10.0
    min_per_second: float = 3.0


class RetryBudget:
    def __init__(self, settings: BudgetSettings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self._clock = clock
        self._buckets: deque[list[int]] = deque()  # [second, first tries, retries]
        self._requests = 0
        self._retries = 0

    def _bucket(self) -> list[int]:
        second = int(self._clock())
        horizon = second - int(self.settings.window)
        while self._buckets and self._buckets[0][0] <= horizon:
            _, requests, retries = self._buckets.popleft()
            self._requests -= requests
            self._retries -= retries
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0])
        return self._buckets[-1]

    def record_request(self) -> None:
        """A first try went to the upstream."""
        self._bucket()[1] += 1
        self._requests += 1

    def try_retry(self) -> bool:
        """Spend one retry if the budget allows it."""
        bucket = self._bucket()
        settings = self.settings
        allowed = settings.ratio * self._requests + settings.min_per_second * settings.window
        if self._retries + 1 > allowed:
            return False
        bucket[2] += 1
        self._retries += 1
        return True
