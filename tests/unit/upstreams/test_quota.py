"""Quotas: a token bucket per second and fixed UTC windows, spent before the provider
refuses; the fake clock is wall-clock seconds."""

from __future__ import annotations

import logging

from proxy.upstreams.events import EventLog
from proxy.upstreams.quota import Quota, QuotaSettings
from tests.conftest import FakeClock


def make(settings: QuotaSettings, clock) -> Quota:
    return Quota("p", settings, clock, EventLog(clock))


def spend(quota: Quota, times: int) -> int:
    return sum(quota.try_spend() for _ in range(times))


def test_the_per_second_bucket_allows_its_rate_and_refills():
    clock = FakeClock()
    quota = make(QuotaSettings(per_second=5), clock)
    assert spend(quota, 10) == 5
    clock.now += 0.41
    assert spend(quota, 10) == 2
    clock.now += 10
    assert spend(quota, 10) == 5  # the bucket holds at most one second's worth


def test_a_fixed_window_resets_on_its_utc_boundary():
    clock = FakeClock()
    clock.now = 3600 * 1000 + 3590  # ten seconds before an hour ends
    quota = make(QuotaSettings(per_hour=3), clock)
    assert spend(quota, 5) == 3
    clock.now += 9
    assert spend(quota, 1) == 0
    clock.now += 1
    assert spend(quota, 5) == 3


def test_every_limit_must_have_room():
    clock = FakeClock()
    quota = make(QuotaSettings(per_second=100, per_minute=4), clock)
    assert spend(quota, 10) == 4


def test_use_is_reported_with_warnings_at_75_and_90_percent(caplog):
    clock = FakeClock()
    clock.now = 0
    events = EventLog(clock)
    quota = Quota("p", QuotaSettings(per_day=20), clock, events)
    with caplog.at_level(logging.WARNING, logger="failover_proxy"):
        spend(quota, 14)
        assert quota.use()[0].warning is None
        spend(quota, 1)
        assert quota.use()[0].warning == 0.75
        spend(quota, 3)
        assert quota.use()[0].warning == 0.9
    (use,) = quota.use()
    assert (use.period, use.used, use.limit) == ("per_day", 18, 20)
    assert [(e.kind, e.detail) for e in events.recent] == [
        ("quota_75", "15 of 20 per day"),
        ("quota_90", "18 of 20 per day"),
    ]
    assert [r.getMessage() for r in caplog.records] == [
        "upstream p: quota 75 (15 of 20 per day)",
        "upstream p: quota 90 (18 of 20 per day)",
    ]
