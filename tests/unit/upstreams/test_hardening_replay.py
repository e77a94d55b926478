"""Issue 12, items 10 and 11: a buffered write's replay does not take a half-open probe a
client could take, and an answer retrying cannot change (501, 505, most 4xx) makes the
write a dead letter at once without counting against the upstream's breaker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from proxy.chain.errors import Failure
from proxy.config.runtime import upstream_settings
from proxy.config.schema import Upstream
from proxy.upstreams.breaker import BreakerSettings, CircuitBreaker, State
from proxy.upstreams.guard import Ticket, UpstreamGuard
from tests.conftest import FakeClock

# -- item 10: replay and half-open probes, on a fake clock --------------------------


def breaker(**settings: Any) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    defaults: dict[str, Any] = {"consecutive_failures": 1, "open_for": 10.0}
    cb = CircuitBreaker(
        BreakerSettings(**{**defaults, **settings}), clock, uniform=lambda low, high: 0.0
    )
    return cb, clock


def trip(cb: CircuitBreaker) -> None:
    permit = cb.acquire()
    assert permit is not None
    cb.record(permit, failed=True, duration=0.0)
    assert cb.state is State.OPEN


def test_a_background_call_goes_through_a_closed_circuit() -> None:
    cb, _ = breaker()
    permit = cb.acquire(background=True)
    assert permit is not None and not permit.probe


def test_a_background_call_leaves_the_first_probe_to_a_client() -> None:
    cb, clock = breaker(half_open_probes=1)
    trip(cb)
    clock.now += 10  # the open time is up: the next call would be the probe
    assert cb.acquire(background=True) is None
    assert cb.state is State.OPEN  # refusing a replay moved nothing
    permit = cb.acquire()
    assert permit is not None and permit.probe
    cb.record(permit, failed=False, duration=0.0)
    assert cb.state is State.CLOSED


def test_a_background_call_does_not_take_the_probes_left_while_clients_probe() -> None:
    cb, clock = breaker(half_open_probes=3)
    trip(cb)
    clock.now += 10
    client_probe = cb.acquire()
    assert client_probe is not None and client_probe.probe
    clock.now += 9  # clients probed 9 s ago: still theirs
    assert cb.acquire(background=True) is None
    assert cb.acquire() is not None  # a client still gets one of the two left


def test_a_background_call_probes_a_circuit_no_client_probed_for_open_for() -> None:
    cb, clock = breaker(half_open_probes=1)
    trip(cb)
    clock.now += 10 + 9.9  # open time up 9.9 s ago, nobody came
    assert cb.acquire(background=True) is None
    clock.now += 0.1  # up for open_for (10 s) with no client probing: a replay may
    permit = cb.acquire(background=True)
    assert permit is not None and permit.probe
    assert cb.state is State.HALF_OPEN
    assert cb.acquire() is None  # the one probe is in flight
    cb.record(permit, failed=False, duration=0.0)
    assert cb.state is State.CLOSED


def test_a_background_call_waits_open_for_after_the_last_client_probe() -> None:
    cb, clock = breaker(half_open_probes=2)
    trip(cb)
    clock.now += 10
    first = cb.acquire()
    assert first is not None
    clock.now += 5
    cb.release(first)  # the client went away: the circuit stays half-open
    clock.now += 4
    assert cb.acquire(background=True) is None  # 9 s since that client probe
    clock.now += 1
    assert cb.acquire(background=True) is not None


def guard(clock: FakeClock, **upstream: Any) -> UpstreamGuard:
    settings = upstream_settings(
        "p", Upstream.model_validate({"url": "http://127.0.0.1:1", **upstream}), Path()
    )
    return UpstreamGuard(settings, clock=clock, wall_clock=clock)


def test_the_guard_passes_background_to_the_breaker() -> None:
    clock = FakeClock()
    g = guard(clock, circuit_breaker={"consecutive_failures": 1, "open_for": "10s"})
    ticket = g.admit()
    assert isinstance(ticket, Ticket)
    g.finish(ticket, Failure.HTTP_5XX, status=500)
    clock.now += 12  # past the open time even with +10% jitter
    assert g.admit(background=True) is Failure.BREAKER_OPEN
    assert g.in_flight == 0
    assert isinstance(g.admit(), Ticket)
