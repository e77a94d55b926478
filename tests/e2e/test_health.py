"""End to end: what an operator reads on the main listener under the reserved prefix.
``/_failover/health`` for scripted failures (the route-health rule and the
recommendations), the probes, and the promise that nothing under the prefix is ever
proxied. Real loopback upstreams and sockets; only the proxy's clock is faked."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import FakeClock, raw_exchange, route

FAST = {"connect": "300ms", "read": "2s"}
PREFIX = "/_failover"


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="fine")


class Switch:
    """An upstream that answers well until it is told to fail (with a 503)."""

    def __init__(self) -> None:
        self.failing = False

    async def __call__(self, request: web.Request) -> web.Response:
        if self.failing:
            return web.Response(status=503, text="down")
        return web.json_response({"path": request.path})


async def get(client: aiohttp.ClientSession, url: str) -> tuple[int, str, str]:
    """Status, X-Failover-Source and X-Failover-Health of one request."""
    async with client.get(url) as response:
        await response.read()
        return (
            response.status,
            response.headers["X-Failover-Source"],
            response.headers["X-Failover-Health"],
        )


async def health(client: aiohttp.ClientSession, proxy: str) -> dict[str, Any]:
    async with client.get(proxy + PREFIX + "/health") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Cache-Control"] == "no-store"
        return await response.json()


def saying(body: dict[str, Any], *fragments: str) -> list[str]:
    """The recommendations that contain every fragment."""
    return [line for line in body["recommendations"] if all(f in line for f in fragments)]


# -- /health for scripted scenarios ------------------------------------------------------


async def test_all_upstreams_fine_is_healthy_and_says_nothing(http_upstream, start_proxy, client):
    primary = await http_upstream(ok)
    secondary = await http_upstream(ok)
    clock = FakeClock()
    config = {
        "upstreams": {"primary": {"url": primary.url}, "secondary": {"url": secondary.url}},
        "routes": [route()],
    }
    proxy = await start_proxy(config, clock=clock)
    for i in range(4):
        assert await get(client, f"{proxy}/x/{i}") == (200, "primary", "healthy")
    clock.now += 2.5

    body = await health(client, proxy)
    assert body["status"] == "healthy"
    r = body["routes"]["r"]
    assert r["health"] == "healthy"
    assert r["upstreams"] == ["primary", "secondary"]
    assert r["requests_last_minute"] == 4
    assert r["served_last_minute"] == {"primary": 1.0}
    assert r["requests_since_start"] == 4
    assert r["served_since_start"] == {"primary": 1.0}
    assert r["oldest_stale_served_s"] is None
    assert body["uptime_s"] == 2.5
    up = body["upstreams"]["primary"]
    assert up["circuit"]["state"] == "closed"
    assert up["circuit"]["forced"] is False
    assert up["calls_last_minute"] == 4
    assert up["failure_rate_last_minute"] == 0.0
    assert up["failures_since_start"] == {}
    assert up["last_failure"] is None
    assert up["latency_ms"]["p50"] is not None
    assert body["upstreams"]["secondary"]["calls_last_minute"] == 0
    assert body["upstreams"]["secondary"]["failure_rate_last_minute"] is None
    assert body["recommendations"] == []
    assert body["recent_events"] == []
    assert primary.hits == 4  # /health itself was answered by the proxy, not proxied
    assert secondary.hits == 0


async def test_primary_down_with_a_live_secondary_is_degraded_and_names_the_open_circuit(
    http_upstream, refused_url, start_proxy, client
):
    secondary = await http_upstream(ok)
    clock = FakeClock()
    breaker = {"consecutive_failures": 2, "open_for": "10m", "half_open_probes": 1}
    config = {
        "upstreams": {
            "primary": {"url": refused_url, "timeouts": FAST, "circuit_breaker": breaker},
            "secondary": {"url": secondary.url, "timeouts": FAST},
        },
        "routes": [route()],
    }
    proxy = await start_proxy(config, clock=clock)
    for _ in range(3):  # two refused connections open the circuit; the third skips it
        assert await get(client, proxy + "/x") == (200, "secondary", "degraded")
    clock.now += 5

    body = await health(client, proxy)
    assert body["status"] == "degraded"
    r = body["routes"]["r"]
    assert r["health"] == "degraded"
    assert r["served_last_minute"] == {"secondary": 1.0}
    primary = body["upstreams"]["primary"]
    assert primary["circuit"]["state"] == "open"
    assert primary["circuit"]["since"] == "1970-01-01T00:16:40Z"  # the fake wall clock: 1000
    assert 535 <= primary["circuit"]["retry_in_s"] <= 655  # 10m +-10% jitter, 5s later
    assert primary["calls_last_minute"] == 2  # the skip was not a call
    assert primary["failure_rate_last_minute"] == 1.0
    assert primary["failures_since_start"] == {"connection_refused": 2}
    assert primary["skipped_since_start"] == {"breaker_open": 1}
    assert primary["last_failure"]["class"] == "connection_refused"
    assert body["upstreams"]["secondary"]["circuit"]["state"] == "closed"
    assert [(e["upstream"], e["kind"]) for e in body["recent_events"]] == [
        ("primary", "circuit_open")
    ]
    said = saying(body, "upstream primary", "open")
    assert said == [
        "upstream primary has been open since 1970-01-01T00:16:40Z "
        "after 2 connection_refused failures"
    ]
    assert not saying(body, "secondary")


async def test_the_open_circuit_sentence_names_the_failures_not_the_skips_it_caused(
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
    }
    proxy = await start_proxy(config, clock=FakeClock())
    for _ in range(5):  # 2 refused, then 3 skipped
        await get(client, proxy + "/x")
    said = saying(await health(client, proxy), "upstream primary has been open since")
    assert len(said) == 1
    assert said[0].endswith("after 2 connection_refused failures")


async def test_everything_down_with_a_warm_cache_is_critical_and_says_how_stale(
    http_upstream, start_proxy, client
):
    switch = Switch()
    primary = await http_upstream(switch)
    secondary = await http_upstream(switch)
    clock = FakeClock()
    config = {
        "upstreams": {"primary": {"url": primary.url}, "secondary": {"url": secondary.url}},
        "routes": [route(cache={"stale_for": "1h"})],
    }
    proxy = await start_proxy(config, clock=clock)
    assert await get(client, proxy + "/drivers") == (200, "primary", "healthy")
    switch.failing = True
    clock.now += 600
    assert await get(client, proxy + "/drivers") == (200, "cache", "critical")
    assert (primary.hits, secondary.hits) == (2, 1)

    body = await health(client, proxy)
    assert body["status"] == "critical"
    r = body["routes"]["r"]
    assert r["health"] == "critical"
    assert r["requests_last_minute"] == 1  # the first answer is ten minutes old
    assert r["served_last_minute"] == {"cache": 1.0}
    assert r["served_since_start"] == {"primary": 0.5, "cache": 0.5}
    assert r["oldest_stale_served_s"] == 600.0
    assert r["time_in_health_s"] == {"healthy": 600.0, "critical": 0.0}
    cache = body["cache"]
    assert cache["entries"] == 1
    assert cache["oldest_age_s"] == 600.0
    assert cache["stale_serves"] == 1
    assert cache["hits"] == 0
    assert body["upstreams"]["primary"]["failures_since_start"] == {"http_5xx": 1}
    assert saying(body, "serving stale data up to") == [
        "the route r is serving stale data up to 10m old"
    ]


async def test_cold_start_with_only_a_default_payload_is_critical_and_says_so(
    refused_url, start_proxy, client
):
    default = {"body": '{"drivers": []}', "headers": {"Content-Type": "application/json"}}
    config = {
        "upstreams": {
            "primary": {"url": refused_url, "timeouts": FAST},
            "secondary": {"url": refused_url, "timeouts": FAST},
        },
        "routes": [route(default=default)],
    }
    proxy = await start_proxy(config, clock=FakeClock())
    for _ in range(2):
        async with client.get(proxy + "/drivers") as response:
            assert response.status == 200
            assert await response.json() == {"drivers": []}
            assert response.headers["X-Failover-Source"] == "default"
            assert response.headers["X-Failover-Health"] == "critical"

    body = await health(client, proxy)
    assert body["status"] == "critical"
    r = body["routes"]["r"]
    assert r["health"] == "critical"
    assert r["served_last_minute"] == {"default": 1.0}
    for name in ("primary", "secondary"):
        assert body["upstreams"][name]["failures_since_start"] == {"connection_refused": 2}
        assert body["upstreams"][name]["circuit"]["state"] == "closed"  # 2 of 5 in a row
    said = saying(body, "default payload")
    assert said == [
        "the route r served its default payload to 100% of 2 requests in the last minute: "
        "every upstream failed and no cached answer was young enough "
        "(it has no cache: set cache.stale_for)"
    ]
    assert body["recommendations"] == said


async def test_an_idle_route_is_judged_by_what_a_request_would_meet_now(
    http_upstream, refused_url, start_proxy, client
):
    """The rule's idle branch: ``critical`` when every upstream is skipped, ``degraded``
    when the first one is, whatever the last answer (a minute ago or more) carried."""
    backup = await http_upstream(ok)
    clock = FakeClock()
    breaker = {"consecutive_failures": 1, "open_for": "1h"}
    config = {
        "upstreams": {
            "flaky": {"url": refused_url, "timeouts": FAST, "circuit_breaker": breaker},
            "backup": {"url": backup.url, "timeouts": FAST},
        },
        "routes": [
            route("busy", ("flaky", "backup"), match={"path_prefix": "/busy"}),
            route("idle", ("flaky",), match={"path_prefix": "/idle"}),
            route("idle_pair", ("flaky", "backup"), match={"path_prefix": "/pair"}),
            route("idle_fine", ("backup",), match={"path_prefix": "/fine"}),
        ],
    }
    proxy = await start_proxy(config, clock=clock)
    body = await health(client, proxy)
    assert body["status"] == "healthy"  # nothing is skipped before the first request
    assert {name: r["health"] for name, r in body["routes"].items()} == dict.fromkeys(
        ("busy", "idle", "idle_pair", "idle_fine"), "healthy"
    )

    for _ in range(2):  # the first opens flaky's circuit; the second skips it
        assert await get(client, proxy + "/busy/x") == (200, "backup", "degraded")
    body = await health(client, proxy)
    assert body["upstreams"]["flaky"]["circuit"]["state"] == "open"
    routes = body["routes"]
    assert routes["idle"]["requests_last_minute"] == 0
    assert {name: r["health"] for name, r in routes.items()} == {
        "busy": "degraded",  # the health its latest answer carried
        "idle": "critical",  # its only upstream is skipped
        "idle_pair": "degraded",  # its first upstream is skipped
        "idle_fine": "healthy",
    }
    assert body["status"] == "critical"  # the worst of its routes'
    assert saying(body, "upstream flaky has been open since")

    clock.now += 61  # a minute later busy is idle too: judged by the same rule
    body = await health(client, proxy)
    assert body["routes"]["busy"]["requests_last_minute"] == 0
    assert body["routes"]["busy"]["health"] == "degraded"
    assert body["routes"]["idle"]["health"] == "critical"
    assert backup.hits == 2


async def test_an_idle_route_is_not_critical_once_its_circuit_would_let_a_probe_through(
    refused_url, start_proxy, client
):
    clock = FakeClock()
    breaker = {"consecutive_failures": 1, "open_for": "10m"}
    config = {
        "upstreams": {
            "flaky": {"url": refused_url, "timeouts": FAST, "circuit_breaker": breaker},
        },
        "routes": [route("only", ("flaky",))],
    }
    proxy = await start_proxy(config, clock=clock)
    assert await get(client, proxy + "/x") == (503, "none", "critical")
    clock.now += 700  # past open_for (10m, +-10% jitter) and the last minute
    body = await health(client, proxy)
    assert body["upstreams"]["flaky"]["circuit"]["state"] == "half_open"  # a call may probe
    assert body["routes"]["only"]["requests_last_minute"] == 0
    assert body["routes"]["only"]["health"] != "critical"


# -- probes and the reserved prefix ------------------------------------------------------


async def test_livez_and_readyz_answer_after_start(http_upstream, start_proxy, client):
    upstream = await http_upstream(ok)
    config = {
        "upstreams": {"primary": {"url": upstream.url}},
        "routes": [route(upstreams=("primary",))],
    }
    proxy = await start_proxy(config, clock=FakeClock())
    async with client.get(proxy + "/_failover/livez") as response:
        assert response.status == 200
        assert await response.json() == {"live": True}
    async with client.get(proxy + "/_failover/readyz") as response:
        assert response.status == 200
        assert await response.json() == {"ready": True}
    async with client.head(proxy + "/_failover/readyz") as response:
        assert response.status == 200
    assert upstream.hits == 0


async def test_readyz_stays_ready_while_every_upstream_fails(refused_url, start_proxy, client):
    config = {
        "upstreams": {"primary": {"url": refused_url, "timeouts": FAST}},
        "routes": [route(upstreams=("primary",))],
    }
    proxy = await start_proxy(config, clock=FakeClock())
    assert (await get(client, proxy + "/x"))[0] == 503
    async with client.get(proxy + "/_failover/readyz") as response:
        assert response.status == 200
    assert (await health(client, proxy))["status"] == "critical"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/_failover/nope"),
        ("GET", "/_failover/"),
        ("GET", "/_failover"),
        ("GET", "/_failover/livez/extra"),
        ("GET", "/_failover/health.json"),
        ("GET", "/_failover/metrics"),  # metrics_on_main is off by default
        ("POST", "/_failover/livez"),
        ("DELETE", "/_failover/health"),
        ("GET", "/_failover/nope?x=1"),
    ],
)
async def test_an_unknown_operator_path_is_404_and_never_proxied(
    method, path, http_upstream, start_proxy, client
):
    upstream = await http_upstream(ok)
    config = {
        "upstreams": {"primary": {"url": upstream.url}},
        "routes": [route(upstreams=("primary",))],
    }
    proxy = await start_proxy(config, clock=FakeClock())
    async with client.request(method, proxy + path) as response:
        assert response.status == 404
        body = await response.json()
        assert body["error"] == "no such operator path under /_failover"
        assert response.headers["X-Failover-Source"] == "none"
    assert upstream.hits == 0
    assert (await health(client, proxy))["routes"]["r"]["requests_since_start"] == 0


async def test_a_custom_reserved_prefix_moves_the_probes(http_upstream, start_proxy, client):
    upstream = await http_upstream(ok)
    config = {
        "upstreams": {"primary": {"url": upstream.url}},
        "routes": [route(upstreams=("primary",))],
        "admin": {"reserved_prefix": "/ops/proxy"},
    }
    proxy = await start_proxy(config, clock=FakeClock())
    async with client.get(proxy + "/ops/proxy/livez") as response:
        assert response.status == 200
    async with client.get(proxy + "/ops/proxy/whatever") as response:
        assert response.status == 404
    assert upstream.hits == 0
    async with client.get(proxy + "/_failover/livez") as response:  # an ordinary path now
        assert response.status == 200
        assert response.headers["X-Failover-Source"] == "primary"
    assert upstream.hits == 1


@pytest.mark.parametrize(
    "target",
    ["/%5Ffailover/livez", "/_f%61ilover/health", "http://app/_failover/health"],
    ids=["escaped-underscore", "escaped-letter", "absolute-form"],
)
async def test_the_prefix_in_another_spelling_is_never_proxied(target, http_upstream, start_proxy):
    upstream = await http_upstream(ok)
    config = {
        "upstreams": {"primary": {"url": upstream.url}},
        "routes": [route(upstreams=("primary",))],
    }
    proxy = await start_proxy(config, clock=FakeClock())
    raw = await raw_exchange(
        proxy, f"GET {target} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n".encode()
    )
    assert raw.startswith(b"HTTP/1.1 ")
    assert [r["path_qs"] for r in upstream.requests] == []


async def test_a_path_that_only_starts_with_the_prefixs_letters_is_proxied(
    http_upstream, start_proxy, client
):
    upstream = await http_upstream(ok)
    config = {
        "upstreams": {"primary": {"url": upstream.url}},
        "routes": [route(upstreams=("primary",))],
    }
    proxy = await start_proxy(config, clock=FakeClock())
    async with client.get(proxy + "/_failover-docs/x") as response:
        assert response.status == 200
        assert response.headers["X-Failover-Source"] == "primary"
    assert upstream.hits == 1
