"""The retry budget: retries may add at most a share of an upstream's recent requests."""

from __future__ import annotations

from proxy.upstreams.budget import BudgetSettings, RetryBudget
from tests.conftest import FakeClock


def test_retries_are_capped_at_a_share_of_recent_requests():
    clock = FakeClock()
    budget = RetryBudget(BudgetSettings(ratio=0.2, window=10, min_per_second=0), clock)
    for _ in range(50):
        budget.record_request()
    assert sum(budget.try_retry() for _ in range(30)) == 10


def test_the_floor_allows_a_few_retries_to_a_quiet_upstream():
    budget = RetryBudget(BudgetSettings(ratio=0.2, window=10, min_per_second=0.5), FakeClock())
    assert sum(budget.try_retry() for _ in range(10)) == 5


def test_old_requests_and_retries_leave_the_window():
    clock = FakeClock()
    budget = RetryBudget(BudgetSettings(ratio=0.5, window=10, min_per_second=0), clock)
    for _ in range(10):
        budget.record_request()
    assert sum(budget.try_retry() for _ in range(10)) == 5
    clock.now += 11
    assert budget.try_retry() is False  # no recent requests, no floor
    for _ in range(4):
        budget.record_request()
    assert sum(budget.try_retry() for _ in range(10)) == 2
