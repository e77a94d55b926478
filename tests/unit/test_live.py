"""What a reload swaps (:mod:`proxy.live`): numbered generations, one owner, and the
count of work still running on each generation so replaced pools close only after it."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config.runtime import Runtime, build_runtime
from proxy.config.schema import Config
from proxy.live import Live
from proxy.upstreams.client import UpstreamClient
from proxy.upstreams.guard import UpstreamGuard


def runtime(*upstreams: str) -> Runtime:
    config = Config.model_validate(
        {
            "upstreams": {
                name: {"url": f"http://127.0.0.1:{9000 + i}"} for i, name in enumerate(upstreams)
            },
            "routes": [{"name": "r", "match": {"path_prefix": "/"}, "upstreams": list(upstreams)}],
        }
    )
    return build_runtime(config, Path())


def guards(served: Runtime) -> dict[str, UpstreamGuard]:
    return {
        name: UpstreamGuard(settings, clock=lambda: 0.0, wall_clock=lambda: 0.0)
        for name, settings in served.upstreams.items()
    }


def live(*upstreams: str) -> Live:
    served = runtime(*upstreams)
    clients: dict[str, UpstreamClient] = {}  # pools are opened in the event loop, not here
    return Live(served, clients, guards(served))


def test_the_first_generation_is_number_zero() -> None:
    assert live("primary").current.number == 0


def test_each_swap_serves_a_new_generation_with_the_next_number() -> None:
    state = live("primary")
    served = runtime("primary", "secondary")
    swapped = state.swap(served, {}, guards(served))
    assert state.current is swapped
    assert (swapped.number, swapped.runtime) == (1, served)
    assert state.swap(served, {}, guards(served)).number == 2


def test_a_generation_read_before_a_swap_keeps_what_it_held() -> None:
    state = live("primary")
    before = state.current
    state.swap(runtime("secondary"), {}, {})
    assert list(before.runtime.upstreams) == ["primary"]
    assert before.number == 0


def test_reorder_tries_the_route_in_the_new_order_with_the_same_pools_and_guards() -> None:
    state = live("primary", "secondary")
    before = state.current
    after = state.reorder("r", ("secondary", "primary"))
    assert state.current is after
    assert after.runtime.routes[0].upstreams == ("secondary", "primary")
    assert after.clients is before.clients
    assert after.guards is before.guards
    assert after.number == before.number  # the same pools: nothing to drain


def test_reorder_refuses_an_order_that_is_not_the_routes_upstreams() -> None:
    state = live("primary", "secondary")
    before = state.current
    with pytest.raises(ValueError, match="exactly primary, secondary"):
        state.reorder("r", ("primary",))
    assert state.current is before


def test_older_generations_are_drained_once_their_work_ends() -> None:
    state = live("primary")
    with state.using(0, background=False):
        state.swap(state.current.runtime, {}, {})
        assert not state.drained(1)  # a request on generation 0 may still use its pools
        with state.using(1):
            assert not state.drained(1)
        assert state.drained(0)  # nothing started before generation 0
    assert state.drained(1)


def test_in_flight_counts_client_requests_not_background_work() -> None:
    state = live("primary")
    assert state.in_flight == 0
    with state.using(0, background=False), state.using(0, background=False):
        with state.using(0):  # a refresh or a replay
            assert state.in_flight == 2
        assert state.in_flight == 2
    assert state.in_flight == 0


def test_work_that_raises_is_still_counted_out() -> None:
    state = live("primary")
    with pytest.raises(RuntimeError), state.using(0, background=False):
        raise RuntimeError("the request failed")
    assert state.in_flight == 0
    state.swap(state.current.runtime, {}, {})
    assert state.drained(1)
