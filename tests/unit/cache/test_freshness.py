"""What an upstream's Cache-Control allows, and when a stored answer may be used."""

from __future__ import annotations

import math

import pytest

from proxy.cache.freshness import NO_LIMITS, UpstreamLimits, initial_age, upstream_limits
from proxy.cache.rules import Use, may_serve_stale, use_on_arrival
from proxy.cache.store import Entry

INF = math.inf


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, UpstreamLimits()),
        ({"Cache-Control": "max-age=60"}, UpstreamLimits(fresh=60)),
        ({"Cache-Control": "max-age=60, s-maxage=5"}, UpstreamLimits(5, 5, 5)),
        ({"Cache-Control": "max-age=60, must-revalidate"}, UpstreamLimits(60, 60, 60)),
        ({"Cache-Control": "proxy-revalidate"}, UpstreamLimits(INF, 0, 0)),
        ({"Cache-Control": "no-cache"}, UpstreamLimits(0, 0, 0)),
        ({"Cache-Control": 'no-cache="Set-Cookie", max-age=9'}, UpstreamLimits(0, 0, 0)),
        ({"Cache-Control": "max-age=10, stale-if-error=50"}, UpstreamLimits(10, 60)),
        ({"Cache-Control": "stale-if-error=50"}, UpstreamLimits(INF, 50)),
        ({"Cache-Control": "Max-Age=7"}, UpstreamLimits(fresh=7)),
        ({"Cache-Control": "max-age=soon"}, UpstreamLimits(fresh=0)),  # invalid: stale
        (
            {"Date": "Mon, 23 Nov 2026 10:00:00 GMT", "Expires": "Mon, 23 Nov 2026 10:00:30 GMT"},
            UpstreamLimits(fresh=30),
        ),
        ({"Expires": "0"}, UpstreamLimits(fresh=0)),  # RFC 9111 5.3: invalid means expired
    ],
)
def test_upstream_limits(headers, expected):
    assert upstream_limits(headers) == expected


def test_the_age_an_answer_arrived_with():
    assert initial_age({"Age": "42"}) == 42
    assert initial_age({"Age": "-3"}) == 0
    assert initial_age({}) == 0


def entry(limits: UpstreamLimits = NO_LIMITS) -> Entry:
    return Entry("r", 200, "OK", (), b"{}", 0.0, limits)


@pytest.mark.parametrize(
    ("age", "fresh_for", "swr", "limits", "expected"),
    [
        (5, 10, 0, UpstreamLimits(), Use.FRESH),
        (11, 10, 0, UpstreamLimits(), Use.NONE),
        (11, 10, 30, UpstreamLimits(), Use.REVALIDATE),
        (41, 10, 30, UpstreamLimits(), Use.NONE),
        (0, 0, 0, UpstreamLimits(), Use.NONE),  # fresh_for 0: always ask
        (1, 0, 30, UpstreamLimits(), Use.REVALIDATE),
        (6, 10, 0, UpstreamLimits(fresh=5), Use.NONE),  # max-age narrows fresh_for
        (6, 10, 30, UpstreamLimits(5, 5, 5), Use.NONE),  # must-revalidate: no SWR
        (3, 10, 30, UpstreamLimits(0, 0, 0), Use.NONE),  # no-cache: always ask
    ],
)
def test_use_on_arrival(age, fresh_for, swr, limits, expected):
    assert use_on_arrival(entry(limits), age, fresh_for, swr) is expected


def test_stale_is_served_within_the_stricter_of_route_and_upstream():
    assert may_serve_stale(entry(), 3600, 3600)
    assert not may_serve_stale(entry(), 3601, 3600)
    assert not may_serve_stale(entry(UpstreamLimits(stale=60)), 61, 3600)
    assert may_serve_stale(entry(UpstreamLimits(stale=60)), 60, 3600)
