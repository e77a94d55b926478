"""The circuit breaker as a state machine, driven by a fake clock (no sleeping)."""

from __future__ import annotations

import asyncio

from proxy.upstreams.breaker import BreakerSettings, CircuitBreaker, State
from tests.conftest import FakeClock


def breaker(**settings) -> tuple[CircuitBreaker, FakeClock, list]:
    clock = FakeClock()
    transitions: list = []
    cb = CircuitBreaker(
        BreakerSettings(**settings),
        clock,
        uniform=lambda low, high: 0.0,
        on_transition=transitions.append,
    )
    return cb, clock, transitions


def call(cb: CircuitBreaker, *, failed: bool, duration: float = 0.01) -> bool:
    permit = cb.acquire()
    if permit is None:
        return False
    cb.record(permit, failed=failed, duration=duration)
    return True


def test_consecutive_failures_open_the_circuit_and_then_calls_are_refused():
    cb, _, transitions = breaker(consecutive_failures=3, min_calls=100)
    for _ in range(3):
        assert call(cb, failed=True)
    assert cb.state is State.OPEN
    assert transitions[-1].reason == "3 failures in a row"
    assert cb.acquire() is None


def test_a_success_breaks_a_run_of_failures():
    cb, _, _ = breaker(consecutive_failures=3, min_calls=100)
    for failed in (True, True, False, True, True):
        call(cb, failed=failed)
    assert cb.state is State.CLOSED


def test_failure_rate_counts_only_once_min_calls_are_in_the_window():
    cb, _, _ = breaker(window_calls=10, min_calls=6, failure_rate=0.5, consecutive_failures=99)
    for failed in (True, False, True, False, True):
        call(cb, failed=failed)
    assert cb.state is State.CLOSED  # 3 of 5, but fewer than min_calls
    call(cb, failed=False)
    assert cb.state is State.OPEN  # 3 of 6 = 50%


def test_a_count_window_forgets_old_calls():
    cb, _, _ = breaker(window_calls=4, min_calls=4, failure_rate=0.75, consecutive_failures=99)
    for failed in (True, True, False, False, False, True, True):
        call(cb, failed=failed)
    assert cb.state is State.CLOSED  # the window holds F F F T T -> last 4: F F T T = 50%


def test_a_time_window_forgets_calls_older_than_its_span():
    cb, clock, _ = breaker(
        window_calls=None, window_seconds=10, min_calls=3, failure_rate=0.6, consecutive_failures=99
    )
    call(cb, failed=True)
    call(cb, failed=True)
    clock.now += 11
    call(cb, failed=True)
    call(cb, failed=False)
    call(cb, failed=False)
    assert cb.state is State.CLOSED  # the two old failures fell out: 1 of 3


def test_slow_calls_open_the_circuit():
    cb, _, transitions = breaker(
        min_calls=4, slow_call_duration=1.0, slow_call_rate=0.75, consecutive_failures=99
    )
    for duration in (2.0, 2.0, 0.1, 3.0):
        call(cb, failed=False, duration=duration)
    assert cb.state is State.OPEN
    assert "slow" in transitions[-1].reason


def test_open_turns_half_open_after_open_for_and_successful_probes_close_it():
    cb, clock, transitions = breaker(consecutive_failures=1, open_for=30, half_open_probes=2)
    call(cb, failed=True)
    clock.now += 29.9
    assert cb.acquire() is None
    clock.now += 0.2
    assert call(cb, failed=False)
    assert cb.state is State.HALF_OPEN
    assert call(cb, failed=False)
    assert cb.state is State.CLOSED
    assert [t.to_state for t in transitions] == [State.OPEN, State.HALF_OPEN, State.CLOSED]


def test_half_open_lets_only_the_probe_limit_through_at_once():
    cb, clock, _ = breaker(consecutive_failures=1, open_for=5, half_open_probes=2)
    call(cb, failed=True)
    clock.now += 6
    permits = [cb.acquire() for _ in range(5)]
    assert sum(p is not None for p in permits) == 2
    cb.release(permits[0])
    assert cb.acquire() is not None


async def test_half_open_probe_limit_holds_under_concurrency():
    cb, clock, _ = breaker(consecutive_failures=1, open_for=5, half_open_probes=3)
    call(cb, failed=True)
    clock.now += 6
    admitted = 0

    async def one() -> None:
        nonlocal admitted
        permit = cb.acquire()
        if permit is None:
            return
        admitted += 1
        await asyncio.sleep(0.01)
        cb.record(permit, failed=False, duration=0.01)

    await asyncio.gather(*(one() for _ in range(50)))
    assert admitted == 3
    assert cb.state is State.CLOSED


def test_a_failed_probe_reopens_for_longer_each_trip_up_to_the_cap():
    cb, clock, _ = breaker(
        consecutive_failures=1, open_for=10, multiplier=2, max_open_for=35, half_open_probes=1
    )
    call(cb, failed=True)
    spans = []
    for _ in range(4):
        spans.append(round(cb.open_until - clock.now, 3))
        clock.now = cb.open_until
        call(cb, failed=True)  # the probe fails
    assert spans == [10, 20, 35, 35]


def test_closing_resets_the_growth_of_open_for():
    cb, clock, _ = breaker(consecutive_failures=1, open_for=10, half_open_probes=1)
    call(cb, failed=True)
    clock.now = cb.open_until
    call(cb, failed=True)
    clock.now = cb.open_until
    call(cb, failed=False)
    assert cb.state is State.CLOSED
    call(cb, failed=True)
    assert cb.open_until - clock.now == 10


def test_open_for_has_jitter_within_bounds():
    clock = FakeClock()
    cb = CircuitBreaker(
        BreakerSettings(consecutive_failures=1, open_for=100, jitter=0.1),
        clock,
        uniform=lambda low, high: high,
    )
    call(cb, failed=True)
    assert cb.open_until - clock.now == 110


def test_an_outcome_from_before_a_transition_is_ignored():
    cb, _, _ = breaker(consecutive_failures=2, min_calls=100)
    early = cb.acquire()
    call(cb, failed=True)
    call(cb, failed=True)
    assert cb.state is State.OPEN
    cb.record(early, failed=False, duration=0.01)
    assert cb.state is State.OPEN
