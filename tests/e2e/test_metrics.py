"""End to end: the Prometheus exposition on the main listener (``admin.metrics_on_main``)
after known traffic, and a series count that does not grow with it. Real loopback
upstreams and sockets; only the proxy's clock is faked."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FakeClock, route

FAST = {"connect": "300ms", "read": "2s"}
METRICS = "/_failover/metrics"
ON_MAIN = {"metrics_on_main": True}

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="fine")


async def scrape(client: aiohttp.ClientSession, proxy: str) -> Series:
    """Every sample of the exposition, keyed by its name and labels."""
    async with client.get(proxy + METRICS) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await response.text()
    series: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in series, f"duplicate series {key}"
            series[key] = sample.value
    return series


def value(series: Series, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (a counter never added to)."""
    return series.get((name, frozenset(labels.items())), 0.0)


def total(series: Series, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, got), v in series.items() if n == name and wanted <= got)


async def get(client: aiohttp.ClientSession, url: str) -> tuple[int, str, str]:
    async with client.get(url) as response:
        await response.read()
        return (
            response.status,
            response.headers["X-Failover-Source"],
            response.headers["X-Failover-Health"],
        )


# -- where the exposition is served ------------------------------------------------------


@pytest.mark.parametrize("admin", [{}, {"metrics_on_main": False}], ids=["default", "off"])
async def test_metrics_are_not_on_the_main_listener_unless_asked_for(
    admin, http_upstream, start_proxy, client
):
    upstream = await http_upstream(ok)
    config = {
        "upstreams": {"primary": {"url": upstream.url}},
        "routes": [route(upstreams=("primary",))],
        "admin": admin,
    }
    proxy = await start_proxy(config, clock=FakeClock())
    async with client.get(proxy + METRICS) as response:
        assert response.status == 404
        assert b"failover_requests" not in await response.read()
    assert upstream.hits == 0  # answered by the proxy, not proxied


async def test_metrics_on_main_serves_the_exposition_and_is_not_proxied(
    http_upstream, start_proxy, client
):
    upstream = await http_upstream(ok)
    config = {
        "upstreams": {"primary": {"url": upstream.url}},
        "routes": [route(upstreams=("primary",))],
        "admin": ON_MAIN,
    }
    proxy = await start_proxy(config, clock=FakeClock())
    series = await scrape(client, proxy)
    assert upstream.hits == 0
    assert value(series, "failover_requests_total", route="r") == 0  # no such series yet
    assert value(series, "failover_default_payloads_total", route="r") == 0
    assert ("failover_default_payloads_total", frozenset({("route", "r")})) in series
    assert value(series, "failover_circuit_state", upstream="primary", state="closed") == 1
    assert value(series, "failover_config_reloads_total", result="success") == 0
    assert (await scrape(client, proxy)) == series  # scraping is not traffic


# -- counters after known traffic --------------------------------------------------------


async def test_requests_served_by_the_primary_are_counted_by_source_health_and_class(
    http_upstream, start_proxy, client
):
    async def by_path(request: web.Request) -> web.Response:
        return web.Response(status=404 if request.path == "/missing" else 200)

    primary = await http_upstream(by_path)
    secondary = await http_upstream(ok)
    config = {
        "upstreams": {"primary": {"url": primary.url}, "secondary": {"url": secondary.url}},
        "routes": [route()],
        "admin": ON_MAIN,
    }
    proxy = await start_proxy(config, clock=FakeClock())
    for i in range(5):
        assert await get(client, f"{proxy}/x/{i}?n={i}") == (200, "primary", "healthy")
    assert await get(client, proxy + "/missing") == (404, "primary", "healthy")

    series = await scrape(client, proxy)
    requests = "failover_requests_total"
    assert (
        value(series, requests, route="r", source="primary", health="healthy", code_class="2xx")
        == 5
    )
    assert (
        value(series, requests, route="r", source="primary", health="healthy", code_class="4xx")
        == 1
    )
    assert total(series, requests) == 6
    assert value(series, "failover_request_duration_seconds_count", route="r") == 6
    assert value(series, "failover_request_duration_seconds_bucket", route="r", le="+Inf") == 6
    assert value(series, "failover_upstream_attempts_total", upstream="primary", outcome="ok") == 6
    assert total(series, "failover_upstream_attempts_total", upstream="secondary") == 0
    assert value(series, "failover_upstream_in_flight", upstream="primary") == 0
    assert value(series, "failover_default_payloads_total", route="r") == 0
    assert value(series, "failover_unavailable_total", route="r") == 0
    assert secondary.hits == 0


async def test_a_refused_upstream_counts_its_attempts_and_shows_its_circuit_open(
    http_upstream, refused_url, start_proxy, client
):
    secondary = await http_upstream(ok)
    breaker = {"consecutive_failures": 2, "open_for": "10m"}
    config = {
        "upstreams": {
            "primary": {"url": refused_url, "timeouts": FAST, "circuit_breaker": breaker},
            "secondary": {"url": secondary.url, "timeouts": FAST},
        },
        "routes": [route()],
        "admin": ON_MAIN,
    }
    proxy = await start_proxy(config, clock=FakeClock())
    for _ in range(5):
        assert await get(client, proxy + "/x") == (200, "secondary", "degraded")

    series = await scrape(client, proxy)
    attempts = "failover_upstream_attempts_total"
    assert value(series, attempts, upstream="primary", outcome="connection_refused") == 2
    assert value(series, attempts, upstream="primary", outcome="breaker_open") == 3
    assert value(series, attempts, upstream="primary", outcome="ok") == 0
    assert value(series, attempts, upstream="secondary", outcome="ok") == 5
    assert (
        value(
            series,
            "failover_requests_total",
            route="r",
            source="secondary",
            health="degraded",
            code_class="2xx",
        )
        == 5
    )
    state = "failover_circuit_state"
    assert value(series, state, upstream="primary", state="open") == 1
    assert value(series, state, upstream="primary", state="closed") == 0
    assert value(series, state, upstream="primary", state="half_open") == 0
    assert total(series, state, upstream="primary") == 1
    assert value(series, state, upstream="secondary", state="closed") == 1
    assert total(series, state, upstream="secondary") == 1
    events = "failover_upstream_events_total"
    assert value(series, events, upstream="primary", kind="circuit_open") == 1
    assert total(series, events) == 1


async def test_default_payloads_and_the_proxys_own_errors_are_counted(
    refused_url, start_proxy, client
):
    config = {
        "upstreams": {"primary": {"url": refused_url, "timeouts": FAST}},
        "routes": [
            route(
                "drivers", ("primary",), match={"path_prefix": "/drivers"}, default={"body": "[]"}
            ),
            route("bare", ("primary",), match={"path_prefix": "/bare"}),
        ],
        "admin": ON_MAIN,
    }
    proxy = await start_proxy(config, clock=FakeClock())
    for _ in range(3):
        assert await get(client, proxy + "/drivers") == (200, "default", "critical")
    for _ in range(2):  # refused: the fifth in a row opens the circuit (the default)
        assert await get(client, proxy + "/bare") == (503, "none", "critical")
    async with client.get(proxy + "/elsewhere") as response:  # no route: not counted
        assert response.status == 404

    series = await scrape(client, proxy)
    assert value(series, "failover_default_payloads_total", route="drivers") == 3
    assert value(series, "failover_default_payloads_total", route="bare") == 0
    assert value(series, "failover_unavailable_total", route="bare") == 2
    assert value(series, "failover_unavailable_total", route="drivers") == 0
    requests = "failover_requests_total"
    assert (
        value(
            series, requests, route="drivers", source="default", health="critical", code_class="2xx"
        )
        == 3
    )
    assert (
        value(series, requests, route="bare", source="none", health="critical", code_class="5xx")
        == 2
    )
    assert total(series, requests) == 5
    attempts = "failover_upstream_attempts_total"
    assert value(series, attempts, upstream="primary", outcome="connection_refused") == 5
    assert value(series, "failover_circuit_state", upstream="primary", state="open") == 1


async def test_cache_hits_and_stale_serves_are_counted(http_upstream, start_proxy, client):
    failing = {"now": False}

    async def switch(request: web.Request) -> web.Response:
        return web.Response(status=503) if failing["now"] else web.json_response({"ok": 1})

    upstream = await http_upstream(switch)
    clock = FakeClock()
    config = {
        "upstreams": {"primary": {"url": upstream.url}},
        "routes": [route(upstreams=("primary",), cache={"stale_for": "1h", "fresh_for": "10s"})],
        "admin": ON_MAIN,
    }
    proxy = await start_proxy(config, clock=clock)
    assert await get(client, proxy + "/a") == (200, "primary", "healthy")
    series = await scrape(client, proxy)
    assert value(series, "failover_cache_misses_total") == 1
    assert value(series, "failover_cache_stores_total") == 1
    assert value(series, "failover_cache_entries") == 1
    assert value(series, "failover_cache_bytes") > 0
    assert value(series, "failover_cache_hits_total") == 0

    clock.now += 5
    for _ in range(2):
        assert await get(client, proxy + "/a") == (200, "cache", "healthy")
    clock.now += 10  # past fresh_for
    failing["now"] = True
    for _ in range(3):
        assert await get(client, proxy + "/a") == (200, "cache", "critical")
    assert upstream.hits == 4

    series = await scrape(client, proxy)
    assert value(series, "failover_cache_hits_total") == 2
    assert value(series, "failover_cache_stale_serves_total") == 3
    assert value(series, "failover_cache_stores_total") == 1
    assert value(series, "failover_cache_entries") == 1
    assert value(series, "failover_cache_evictions_total") == 0
    requests = "failover_requests_total"
    assert (
        value(series, requests, route="r", source="cache", health="healthy", code_class="2xx") == 2
    )
    assert (
        value(series, requests, route="r", source="cache", health="critical", code_class="2xx") == 3
    )
    assert (
        value(series, "failover_upstream_attempts_total", upstream="primary", outcome="http_5xx")
        == 3
    )


# -- the series count does not grow with traffic ------------------------------------------

# Each kind of request, and the answer (status, source, health) it must get.
KINDS: dict[str, tuple[int, str, str]] = {
    "ok": (200, "primary", "healthy"),  # /api/ok/...: the primary answers
    "missing": (404, "primary", "healthy"),  # /api/missing/...: the primary's own 404
    "p500": (200, "secondary", "degraded"),  # /api/p500/...: the primary fails, secondary not
    "down": (500, "secondary", "critical"),  # /api/down/...: both fail, nothing cached
    "once": (200, "cache", "critical"),  # /api/once/<pool>: cached once, both fail since
    "static": (200, "cache", "healthy"),  # /static/<pool>: fresh hits (fresh_for 1h)
    "other": (200, "default", "critical"),  # /other/...: its only upstream is down
    "bare": (503, "none", "critical"),  # /bare/...: the same, and no default
    "nowhere": (404, "none", "critical"),  # no route matches
    "reserved": (404, "none", "critical"),  # an unknown path under the reserved prefix
}
ROUTELESS = {"nowhere", "reserved"}
WEIGHTS = {  # most of them cheap (no upstream call), to keep 10,000 quick
    "ok": 10,
    "missing": 4,
    "p500": 6,
    "down": 4,
    "once": 6,
    "static": 25,
    "other": 15,
    "bare": 10,
    "nowhere": 12,
    "reserved": 8,
}
POOL = 16  # paths of the kinds that need an answer stored first


def series_config(primary: str, secondary: str, dead: str) -> dict[str, Any]:
    no_breaker = {"enabled": False}
    return {
        "upstreams": {
            "primary": {"url": primary, "timeouts": FAST, "circuit_breaker": no_breaker},
            "secondary": {"url": secondary, "timeouts": FAST, "circuit_breaker": no_breaker},
            # Opened by the first request and held open: the fake clock does not move.
            "dead": {
                "url": dead,
                "timeouts": FAST,
                "circuit_breaker": {"consecutive_failures": 1, "open_for": "1h"},
            },
        },
        "routes": [
            route(
                "api",
                ("primary", "secondary"),
                match={"path_prefix": "/api/"},
                cache={"stale_for": "1h"},
            ),
            route(
                "static",
                ("primary",),
                match={"path_prefix": "/static/"},
                cache={"stale_for": "1h", "fresh_for": "1h"},
            ),
            route("other", ("dead",), match={"path_prefix": "/other/"}, default={"body": "{}"}),
            route("bare", ("dead",), match={"path_prefix": "/bare/"}),
        ],
        "admin": ON_MAIN,
    }


def random_path(rng: random.Random, kind: str, n: int) -> str:
    def word() -> str:
        return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789-_~", k=rng.randint(1, 12)))

    def query() -> str:
        pairs = [f"{word()}={word()}" for _ in range(rng.randint(0, 3))]
        return "?" + "&".join(pairs) if pairs else ""

    if kind == "once":
        return f"/api/once/{rng.randrange(POOL)}"
    if kind == "static":
        return f"/static/{rng.randrange(POOL)}?v=1"
    segments = "/".join(word() for _ in range(rng.randint(1, 4)))
    prefix = {
        "nowhere": "/nowhere",
        "reserved": "/_failover/x",
        "other": "/other",
        "bare": "/bare",
    }.get(kind, f"/api/{kind}")
    return f"{prefix}/{n}/{segments}{query()}"


async def test_the_series_count_stays_fixed_after_ten_thousand_random_requests(
    http_upstream, refused_url, start_proxy
):
    served_once: set[str] = set()

    async def primary_handler(request: web.Request) -> web.Response:
        path = request.path
        if path.startswith(("/api/p500/", "/api/down/")):
            return web.Response(status=500)
        if path.startswith("/api/missing/"):
            return web.Response(status=404)
        if path.startswith("/api/once/"):
            if path in served_once:
                return web.Response(status=500)
            served_once.add(path)
        return web.Response(text=path)

    async def secondary_handler(request: web.Request) -> web.Response:
        if request.path.startswith(("/api/down/", "/api/once/")):
            return web.Response(status=500)
        return web.Response(text="secondary")

    primary = await http_upstream(primary_handler)
    secondary = await http_upstream(secondary_handler)
    proxy = await start_proxy(
        series_config(primary.url, secondary.url, refused_url), clock=FakeClock()
    )
    rng = random.Random(20261123)
    connector = aiohttp.TCPConnector(limit=50)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(kind: str, path: str) -> tuple[str, tuple[int, str, str]]:
            async with session.get(proxy + path) as response:
                await response.read()
                return kind, (
                    response.status,
                    response.headers["X-Failover-Source"],
                    response.headers["X-Failover-Health"],
                )

        # Warm-up, one at a time: every kind, every pool path stored (and "once" served
        # stale), and the dead upstream's circuit opened by its first refused connection.
        warm: list[tuple[str, str]] = [("other", "/other/first")]  # refused: opens it
        warm += [(kind, random_path(rng, kind, 0)) for kind in KINDS]
        warm += [("once", f"/api/once/{i}") for i in range(POOL)]  # from the primary
        warm += [("static", f"/static/{i}?v=1") for i in range(POOL)]  # from the primary
        first_time = {path for kind, path in warm[1:] if kind in ("once", "static")}
        for kind, path in warm:
            got = await one(kind, path)
            if path in first_time:
                first_time.discard(path)
                assert got[1] == (200, "primary", "healthy"), path
            else:
                assert got == (kind, KINDS[kind]), path
        for i in range(POOL):  # now every pool path answers as its kind
            assert await one("once", f"/api/once/{i}") == ("once", KINDS["once"])
            assert await one("static", f"/static/{i}?v=1") == ("static", KINDS["static"])

        before = await scrape(session, proxy)
        sources = {
            (dict(labels)["route"], dict(labels)["source"])
            for name, labels in before
            if name == "failover_requests_total"
        }
        assert sources == {
            ("api", "primary"),
            ("api", "secondary"),
            ("api", "cache"),
            ("static", "primary"),
            ("static", "cache"),
            ("other", "default"),
            ("bare", "none"),
        }

        kinds = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()), k=10_000)
        results: list[tuple[str, tuple[int, str, str]]] = []
        batch = 500
        for start in range(0, len(kinds), batch):
            results += await asyncio.gather(
                *(
                    one(kind, random_path(rng, kind, start + i))
                    for i, kind in enumerate(kinds[start : start + batch])
                )
            )
        after = await scrape(session, proxy)

    wrong = Counter((kind, got) for kind, got in results if got != KINDS[kind])
    assert not wrong, wrong
    assert len(after) == len(before)
    assert sorted(after) == sorted(before)  # not one new name or label set

    # ... and the traffic was counted where it belongs.
    counted = Counter(kind for kind in kinds if kind not in ROUTELESS)
    requests = "failover_requests_total"
    routed = {
        "ok": ("api", "2xx"),
        "missing": ("api", "4xx"),
        "p500": ("api", "2xx"),
        "down": ("api", "5xx"),
        "once": ("api", "2xx"),
        "static": ("static", "2xx"),
        "other": ("other", "2xx"),
        "bare": ("bare", "5xx"),
    }
    for kind, (route_name, code_class) in routed.items():
        _, source, health = KINDS[kind]
        labels = {
            "route": route_name,
            "source": source,
            "health": health,
            "code_class": code_class,
        }
        grew = value(after, requests, **labels) - value(before, requests, **labels)
        assert grew == counted[kind], kind
    assert total(after, requests) - total(before, requests) == sum(counted.values())
    assert (
        value(after, "failover_default_payloads_total", route="other")
        - value(before, "failover_default_payloads_total", route="other")
        == counted["other"]
    )
    assert (
        value(after, "failover_cache_stale_serves_total")
        - value(before, "failover_cache_stale_serves_total")
        == counted["once"]
    )
    assert (
        value(after, "failover_cache_hits_total") - value(before, "failover_cache_hits_total")
        == counted["static"]
    )
    assert value(after, "failover_circuit_state", upstream="dead", state="open") == 1
