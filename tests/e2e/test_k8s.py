"""The Kubernetes recipe in k8s/ and the Dockerfile: what they promise holds.

- Every metric an alert or a dashboard panel names is one a running proxy exports (a
  live scrape of ``/_failover/metrics`` after traffic that makes every family appear),
  with label names and fixed-set label values it really uses.
- With ``promtool`` (Debian's prometheus package; .ci/run installs it), the rules and
  the dashboard's queries parse, and the alerts fire, and stay quiet, as intended.
- The ConfigMap's config.yaml loads as mounted, and the manifests agree with it and with
  each other: the config path is inside the directory mount (no subPath), the probes hit
  the reserved paths on the listen port, state goes to the writable volume, the
  PodMonitor scrapes the path metrics_on_main serves, the token comes from the Secret.
- Every manifest validates against the Kubernetes schemas (the CRDs have none there and
  are checked for their shape here), and kustomization.yaml lists what it should.

tests/unit/config/test_schema.py also checks the ConfigMap's config.yaml against the JSON Schema.
"""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FakeClock, route
from tests.helpers.k8s import alerts, dashboard_queries

# Labels Prometheus adds to every scraped series (PodMonitor targets), not the proxy.
TARGET_LABELS = {"namespace", "pod", "container", "job", "instance", "endpoint"}
FAST = {"connect": "300ms", "read": "2s"}


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every alert and every dashboard query."""
    found = [(f"alert {rule['alert']}", rule["expr"]) for rule in alerts()]
    found += [(f"dashboard query {i}", q) for i, q in enumerate(dashboard_queries())]
    return found


# -- the metric names and labels the queries use exist in a live scrape --------------------


async def serve_json(request: web.Request) -> web.Response:
    return web.json_response({"drivers": [1]})


async def live_scrape(start_proxy, http_upstream, refused_url, tmp_path: Path) -> str:
    """Run a proxy whose traffic makes every metric family and label value the queries
    use appear (healthy, degraded, stale, default, 503, buffered), and scrape it."""
    failing = {"now": False}

    async def flaky(request: web.Request) -> web.Response:
        return web.Response(status=503) if failing["now"] else await serve_json(request)

    good = await http_upstream(serve_json)
    switch = await http_upstream(flaky)
    config = {
        "upstreams": {
            "primary": {"url": switch.url, "timeouts": FAST},
            "secondary": {"url": good.url, "timeouts": FAST},
            "down": {"url": refused_url, "timeouts": FAST},
        },
        "routes": [
            route(
                "cached",
                ("primary",),
                match={"path_prefix": "/cached"},
                cache={"stale_for": "1h"},
            ),
            route("fallback", ("down", "secondary"), match={"path_prefix": "/fallback"}),
            route(
                "defaulted",
                ("down",),
                match={"path_prefix": "/defaulted"},
                default={"status": 200, "body": "{}"},
            ),
            route("events", ("down",), match={"path_prefix": "/events"}, on_failure="buffer"),
            route("bare", ("down",), match={"path_prefix": "/bare"}),
        ],
        "admin": {"metrics_on_main": True},
        "buffer": {"path": str(tmp_path / "buffer")},
        "cache": {"path": str(tmp_path / "cache.db")},
    }
    proxy = await start_proxy(config, clock=FakeClock())
    expected = [
        ("GET", "/cached/a", "primary"),
        ("GET", "/fallback/a", "secondary"),
        ("GET", "/defaulted/a", "default"),
        ("POST", "/events/a", "buffer"),
        ("GET", "/bare/a", "none"),
    ]
    async with aiohttp.ClientSession() as client:
        for method, path, source in expected:
            body = b"{}" if method == "POST" else None
            async with client.request(method, proxy + path, data=body) as response:
                await response.read()
                assert response.headers["X-Failover-Source"] == source, path
        failing["now"] = True
        async with client.get(proxy + "/cached/a") as response:
            assert response.headers["X-Failover-Source"] == "cache"
        async with client.get(proxy + "/_failover/metrics") as response:
            assert response.status == 200
            return await response.text()


def exported(text: str) -> dict[str, dict[str, set[str]]]:
    """Sample name -> label name -> the values seen."""
    names: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = names.setdefault(sample.name, {})
            for label, value in sample.labels.items():
                labels.setdefault(label, set()).add(value)
    return names


METRIC = re.compile(r"\bfailover_[a-z_]+")
SELECTOR = re.compile(r"\b(failover_[a-z_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
WORDS = re.compile(r"^[\w|]+$")  # a regex that is only a list of alternatives


async def test_every_metric_and_label_the_alerts_and_dashboard_use_is_exported(
    start_proxy, http_upstream, refused_url, tmp_path
):
    names = exported(await live_scrape(start_proxy, http_upstream, refused_url, tmp_path))
    assert "failover_buffer_depth" in names  # the buffer and cache families are there
    assert "failover_cache_stale_serves_total" in names
    problems = []
    for where, expr in expressions():
        used = set(METRIC.findall(expr))
        assert used, f"{where} names no failover_ metric: {expr}"
        for metric in sorted(used - set(names)):
            problems.append(f"{where}: {metric} is not exported")
        labels_here = set(TARGET_LABELS)
        for metric in used & set(names):
            labels_here |= set(names[metric])
        if any(metric.endswith("_bucket") for metric in used):
            labels_here.add("le")
        for grouping in GROUPING.findall(expr):
            for label in filter(None, (part.strip() for part in grouping.split(","))):
                if label not in labels_here:
                    problems.append(f"{where}: no metric in it has the label {label!r}")
        for metric, matchers in SELECTOR.findall(expr):
            for label, op, wanted in MATCHER.findall(matchers):
                if label in TARGET_LABELS or metric not in names:
                    continue
                if label not in names[metric]:
                    problems.append(f"{where}: {metric} has no label {label!r}")
                    continue
                if label in ("route", "upstream") or "$" in wanted:
                    continue  # names from the config, or a Grafana variable
                values = [wanted] if op in ("=", "!=") else wanted.split("|")
                if op in ("=~", "!~") and not WORDS.match(wanted):
                    continue
                for value in values:
                    if value not in names[metric][label]:
                        problems.append(f"{where}: {metric}{{{label}={value!r}}} never seen")
    assert not problems, "\n".join(problems)
