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
        self._past: deque[tuple[int, int, int]] = deque()  # (second, first tries, retries)
        self._past_requests = 0
        self._past_retries = 0
        self._second = int(clock())
        self._requests = 0  # in the current second
        self._retries = 0

    def _roll(self, second: int) -> None:
        """Close the current second's bucket and forget those older than the window."""
        self._past.append((self._second, self._requests, self._retries))
        self._past_requests += self._requests
        self._past_retries += self._retries
        self._second, self._requests, self._retries = second, 0, 0
        horizon = second - int(self.settings.window)
        while self._past and self._past[0][0] <= horizon:
            _, requests, retries = self._past.popleft()
            self._past_requests -= requests
            self._past_retries -= retries

    def record_request(self) -> None:
        """A first try went to the upstream (on every request: kept to a few operations)."""
        second = int(self._clock())
        if second != self._second:
            self._roll(second)
        self._requests += 1

    def try_retry(self) -> bool:
        """Spend one retry if the budget allows it."""
        second = int(self._clock())
        if second != self._second:
            self._roll(second)
        settings = self.settings
        requests = self._past_requests + self._requests
        allowed = settings.ratio * requests + settings.min_per_second * settings.window
        if self._past_retries + self._retries + 1 > allowed:
            return False
        self._retries += 1
        return True
