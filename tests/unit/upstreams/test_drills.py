"""Failover drills as pure decisions (fake clock, scripted randomness), and the
operator's circuit pin on a guard."""

from __future__ import annotations

from proxy.chain.errors import Failure
from proxy.config.runtime import upstream_settings
from proxy.config.schema import Upstream
from proxy.upstreams.breaker import State
from proxy.upstreams.drills import Drill, Drills
from proxy.upstreams.events import EventLog
from proxy.upstreams.guard import Ticket, UpstreamGuard
from tests.conftest import FakeClock


def drills(clock: FakeClock, rolls: list[float]) -> Drills:
    return Drills(clock, EventLog(clock), uniform=lambda a, b: rolls.pop(0))


def test_a_drill_hits_its_share_of_calls_and_ends_by_itself():
    clock = FakeClock()
    d = drills(clock, [10.0, 49.9, 50.0, 99.0])
    d.start(Drill("primary", "abort", 50, clock.now, clock.now + 60))
    assert d.pick("secondary") is None  # another upstream: untouched
    assert [d.pick("primary") is not None for _ in range(4)] == [True, True, False, False]
    clock.now += 60
    assert d.pick("primary") is None
    assert d.active() == []
    kinds = [e.kind for e in d._events.recent]
    assert kinds == ["drill_start", "drill_end"]
    assert d._events.recent[-1].detail == "its time ran out"


def test_a_new_drill_replaces_the_running_one():
    clock = FakeClock()
    d = drills(clock, [])
    first = Drill("primary", "abort", 100, clock.now, clock.now + 60)
    assert d.start(first) is None
    assert d.start(Drill("primary", "latency", 100, clock.now, clock.now + 60, 2.0)) == first
    assert [drill.describe() for drill in d.active()] == ["100% of calls delayed by 2s"]


def guard(clock: FakeClock, **upstream) -> UpstreamGuard:
    settings = upstream_settings(
        "primary",
        Upstream.model_validate({"url": "http://127.0.0.1:1", **upstream}),
        None,  # type: ignore[arg-type]
    )
    return UpstreamGuard(settings, clock=clock, wall_clock=clock)


def test_pinned_open_skips_and_pinned_closed_ignores_the_breaker():
    clock = FakeClock()
    g = guard(clock, circuit_breaker={"consecutive_failures": 1})
    g.pin(State.OPEN, "drill day")
    assert g.admit() is Failure.BREAKER_OPEN
    assert g.skipping()
    g.pin(State.CLOSED, "we know better")
    for _ in range(3):  # failures while pinned closed do not trip it
        ticket = g.admit()
        assert isinstance(ticket, Ticket)
        g.finish(ticket, Failure.HTTP_5XX, status=500)
    assert not g.skipping()
    g.pin(None, "back to automatic")
    ticket = g.admit()
    assert isinstance(ticket, Ticket)
    g.finish(ticket, Failure.HTTP_5XX, status=500)
    assert g.admit() is Failure.BREAKER_OPEN  # the breaker works again
