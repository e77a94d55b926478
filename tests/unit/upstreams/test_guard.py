"""The per-upstream gate: what is skipped, what counts, and the events it records."""

from __future__ import annotations

from pathlib import Path

from proxy.chain.errors import Failure
from proxy.config.runtime import upstream_settings
from proxy.config.schema import Upstream
from proxy.upstreams.guard import Ticket, UpstreamGuard
from tests.conftest import FakeClock


def guard(clock: FakeClock, **upstream) -> UpstreamGuard:
    settings = upstream_settings(
        "p", Upstream.model_validate({"url": "http://127.0.0.1:1", **upstream}), Path()
    )
    return UpstreamGuard(settings, clock=clock, wall_clock=clock)


def kinds(g: UpstreamGuard) -> list[str]:
    return [event.kind for event in g.events.recent]


def test_every_state_change_is_recorded_once_and_counted():
    clock = FakeClock()
    g = guard(
        clock, circuit_breaker={"consecutive_failures": 2, "open_for": "10s", "half_open_probes": 1}
    )
    for _ in range(2):
        ticket = g.admit()
        assert isinstance(ticket, Ticket)
        g.finish(ticket, Failure.HTTP_5XX, status=500)
    assert g.admit() is Failure.BREAKER_OPEN
    clock.now += 12
    ticket = g.admit()
    assert isinstance(ticket, Ticket)
    g.finish(ticket, None)
    assert kinds(g) == ["circuit_open", "circuit_half_open", "circuit_closed"]
    assert g.events.counts[g.name, "circuit_open"] == 1


def test_a_cooldown_starts_and_ends_once():
    clock = FakeClock()
    g = guard(clock)
    for _ in range(2):
        ticket = g.admit()
        if isinstance(ticket, Ticket):
            g.finish(ticket, Failure.HTTP_5XX, status=503, retry_after=5)
    assert g.admit() is Failure.COOLING_DOWN
    clock.now += 6
    assert isinstance(g.admit(), Ticket)
    assert kinds(g) == ["cooldown_start", "cooldown_end"]


def test_health_checks_hold_the_upstream_out_until_enough_pass():
    clock = FakeClock()
    g = guard(clock)
    for passed in (False, False):
        g.check_result(passed, "status 503", healthy_threshold=2, unhealthy_threshold=2)
    assert g.admit() is Failure.BREAKER_OPEN
    g.check_result(True, "status 200", healthy_threshold=2, unhealthy_threshold=2)
    assert g.admit() is Failure.BREAKER_OPEN
    g.check_result(True, "status 200", healthy_threshold=2, unhealthy_threshold=2)
    assert isinstance(g.admit(), Ticket)
    assert kinds(g) == ["check_down", "circuit_open", "check_up", "circuit_closed"]


def test_a_deadline_cut_short_does_not_count_against_the_breaker():
    clock = FakeClock()
    g = guard(clock, circuit_breaker={"consecutive_failures": 1})
    ticket = g.admit()
    assert isinstance(ticket, Ticket)
    g.finish(ticket, Failure.DEADLINE_EXCEEDED)
    assert isinstance(g.admit(), Ticket)
    assert g.in_flight == 1
