"""``failover-proxy demo``: run headless, fast, it shows every layer in order; Ctrl-C
stops everything it started."""

from __future__ import annotations

import pytest

from proxy.demo.runner import Clock, demo_config, failed_hops


def test_the_bundled_config_is_pointed_at_the_demo_upstreams_and_sped_up():
    config = demo_config({"primary": 1234, "secondary": 1235}, speed=4)
    assert config.listen.host == "127.0.0.1"
    assert config.listen.port == 0
    assert config.upstreams["primary"].url == "http://127.0.0.1:1234"
    assert config.upstreams["secondary"].url == "http://127.0.0.1:1235"
    assert config.upstreams["primary"].timeouts.read == pytest.approx(0.25)
    assert config.upstreams["primary"].circuit_breaker.open_for == pytest.approx(0.25)
    route = config.routes[0]
    assert route.deadline == pytest.approx(0.75)
    assert route.cache is not None and route.cache.stale_for == pytest.approx(2.5)
    assert route.validate_ is not None and route.validate_.json_nonempty == "$.drivers"
    assert route.default is not None


def test_proxy_status_is_read_as_who_failed_and_why():
    header = (
        'failover-proxy; received-status=500; next-hop=primary; details="http_5xx", '
        "failover-proxy; error=destination_unavailable; next-hop=secondary; "
        'details="breaker_open", '
        'failover-proxy; received-status=200; next-hop=primary; details="invalid_response"'
    )
    assert list(failed_hops(header)) == [
        ("primary", "500"),
        ("secondary", "breaker_open"),
        ("primary", "invalid_response"),
    ]
    assert list(failed_hops("")) == []


def test_the_schedule_clock_runs_at_its_speed():
    clock = Clock(speed=10)
    assert clock.real(45) == 4.5
    assert clock.phase(0).label == "all healthy"
    assert clock.phase(16.5).primary == clock.phase(16.5).secondary == "error"
    assert clock.phase(44).label == "all recovered"
