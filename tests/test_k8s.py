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

tests/test_schema.py also checks the ConfigMap's config.yaml against the JSON Schema.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import aiohttp
import kubernetes_validate
import pytest
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from proxy.config.loader import load_text
from tests.conftest import FakeClock, route

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "k8s"
# Prometheus Operator's CRDs: kubernetes-validate has no schema for them.
CRDS = {("monitoring.coreos.com/v1", "PodMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
# The oldest version with native sidecars on by default, and the newest the tool knows.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
# Labels Prometheus adds to every scraped series (PodMonitor targets), not the proxy.
TARGET_LABELS = {"namespace", "pod", "container", "job", "instance", "endpoint"}
FAST = {"connect": "300ms", "read": "2s"}
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)"
)


# -- reading the manifests ----------------------------------------------------------------


def manifests() -> dict[str, list[dict[str, Any]]]:
    """Every Kubernetes object in k8s/*.yaml by file (kustomization.yaml is not one)."""
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found[path.name] = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def the(kind: str, file: str | None = None) -> dict[str, Any]:
    """The one object of ``kind`` (in ``file``, if given)."""
    docs = [
        doc
        for name, docs in manifests().items()
        if file in (None, name)
        for doc in docs
        if doc["kind"] == kind
    ]
    assert len(docs) == 1, f"expected one {kind} in {file or 'k8s/'}, found {len(docs)}"
    return docs[0]


def rule_groups() -> list[dict[str, Any]]:
    return the("PrometheusRule")["spec"]["groups"]


def alerts() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads((K8S / "dashboard.json").read_text())


def dashboard_queries() -> list[str]:
    """Every panel's query and the template variables' (Grafana syntax)."""
    queries = [
        target["expr"]
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["query"]["query"])
    return queries


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every alert and every dashboard query."""
    found = [(f"alert {rule['alert']}", rule["expr"]) for rule in alerts()]
    found += [(f"dashboard query {i}", q) for i, q in enumerate(dashboard_queries())]
    return found


def configmap_files(tmp_path: Path) -> Path:
    """The ConfigMap's keys as files in a directory, as the kubelet mounts them."""
    mount = tmp_path / "etc-failover-proxy"
    mount.mkdir()
    for name, text in the("ConfigMap", "configmap.yaml")["data"].items():
        (mount / name).write_text(text)
    return mount


def mounted_config(tmp_path: Path) -> Any:
    mount = configmap_files(tmp_path)
    text = (mount / "config.yaml").read_text()
    return load_text(text, source="k8s/configmap.yaml:config.yaml", base=mount)


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


# -- promtool: the rules and queries parse, and the alerts fire as intended ----------------


def promtool(*args: str, cwd: Path) -> str:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@needs_promtool
def test_the_rules_pass_promtool_check(tmp_path):
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups()}))
    out = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert f"SUCCESS: {len(alerts())} rules found" in out


@needs_promtool
def test_every_dashboard_query_parses(tmp_path):
    """Each panel's query as a recording rule, with Grafana's variables filled in."""
    rules = []
    for i, query in enumerate(q for q in dashboard_queries() if not q.startswith("label_values")):
        expr = query.replace("$__rate_interval", "5m").replace("$namespace", ".*")
        expr = expr.replace("$route", ".*")
        assert "$" not in expr, f"a Grafana variable this test does not fill in: {query}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    (tmp_path / "dashboard.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    promtool("check", "rules", "dashboard.yaml", cwd=tmp_path)


SHOP = {"namespace": "shop", "job": "shop/myapp-failover-proxy"}


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    """An input series in promtool's notation, from pod myapp-1 unless ``pod`` says."""
    text = ", ".join(f'{k}="{v}"' for k, v in {**SHOP, "pod": "myapp-1", **labels}.items())
    return {"series": f"{name}{{{text}}}", "values": values}


def answers(values: str, route: str, source: str, health: str, code: str = "2xx") -> dict:
    labels = {"route": route, "source": source, "health": health, "code_class": code}
    return series("failover_requests_total", values, **labels)


def circuit(values: str, upstream: str, state: str) -> dict[str, str]:
    return series("failover_circuit_state", values, upstream=upstream, state=state)


def firing(alert: str, at: str, *expected: dict[str, str]) -> dict[str, Any]:
    """At ``at``, ``alert`` fires exactly for ``expected`` (labels beyond SHOP)."""
    severity = next(rule["labels"]["severity"] for rule in alerts() if rule["alert"] == alert)
    return {
        "eval_time": at,
        "alertname": alert,
        "exp_alerts": [
            {"exp_labels": {**SHOP, **labels, "severity": severity}} for labels in expected
        ],
    }


# promtool's notation: "0+90x30" is 0, 90, 180, ... (31 samples, one a minute); "0x5 1x30"
# is six 0s then thirty-one 1s; "_x10" is ten missing samples.
RULE_TESTS = [
    {
        "interval": "1m",
        "input_series": [
            # drivers: 10% of answers from the secondary; search: 2% (under 5%).
            answers("0+90x30", "drivers", "primary", "healthy"),
            answers("0+10x30", "drivers", "secondary", "degraded"),
            answers("0+98x30", "search", "primary", "healthy"),
            answers("0+2x30", "search", "secondary", "degraded"),
        ],
        "alert_rule_test": [
            firing("FailoverSecondaryShareHigh", "4m"),  # pending: not 5 minutes yet
            firing("FailoverSecondaryShareHigh", "12m", {"route": "drivers"}),
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            series("failover_cache_stale_serves_total", "0x10 1x30"),
            series("failover_default_payloads_total", "0x20 4x30", route="drivers"),
            series("failover_default_payloads_total", "0x40", route="search"),
        ],
        "alert_rule_test": [
            firing("FailoverStaleServed", "9m"),
            firing("FailoverStaleServed", "13m", {}),  # one stale answer is enough
            firing("FailoverStaleServed", "25m"),  # and it clears
            firing("FailoverDefaultServed", "22m", {"route": "drivers"}),
            firing("FailoverDefaultServed", "35m"),
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            # The proxy's own 503: its series is there from the start, the first one pages.
            series("failover_unavailable_total", "0x5 1x30", route="bare"),
            series("failover_unavailable_total", "0x40", route="drivers"),
            # The last upstream's 503 passed through, from minute 10.
            answers("_x10 1+1x10", "passthrough", "primary", "critical", "5xx"),
            # A default payload with a 5xx status is the critical alert's, not a page.
            answers("0+1x30", "drivers", "default", "critical", "5xx"),
        ],
        "alert_rule_test": [
            firing("FailoverUnavailable", "4m"),
            firing("FailoverUnavailable", "7m", {"route": "bare"}),
            firing("FailoverUnavailable", "14m", {"route": "passthrough"}),
            firing("FailoverUnavailable", "30m"),
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            # primary: open from minute 3 on; secondary: open and half-open by turns
            # (its probes keep failing) from the start; backup: open for 3 minutes only.
            circuit("0x2 1x30", "primary", "open"),
            circuit("0x30", "primary", "half_open"),
            circuit("1 0 1 0 1 0 1 0 1 0 1 0 1 0 1 0", "secondary", "open"),
            circuit("0 1 0 1 0 1 0 1 0 1 0 1 0 1 0 1", "secondary", "half_open"),
            circuit("0 1x3 0x20", "backup", "open"),
            circuit("0x25", "backup", "half_open"),
        ],
        "alert_rule_test": [
            firing("FailoverBreakerOpen", "11m", {"upstream": "secondary"}),
            firing(
                "FailoverBreakerOpen", "14m", {"upstream": "primary"}, {"upstream": "secondary"}
            ),
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            # myapp-1: writes pile up from minute 2; myapp-2: a backlog draining.
            series("failover_buffer_depth", "0 0 5+5x30", pod="myapp-1"),
            series("failover_buffer_depth", "60-2x30", pod="myapp-2"),
            series("failover_buffer_dead_letters", "0x5 2x10 0x10", pod="myapp-2"),
            series("failover_config_reloads_total", "0x5 1x30", result="failure"),
            series("failover_config_reloads_total", "0+0x35", result="success"),
        ],
        "alert_rule_test": [
            firing("FailoverBufferGrowing", "4m"),
            firing("FailoverBufferGrowing", "12m", {"pod": "myapp-1"}),
            firing("FailoverBufferDeadLetters", "8m", {"pod": "myapp-2"}),
            firing("FailoverBufferDeadLetters", "20m"),
            firing("FailoverConfigReloadFailed", "7m", {}),
            firing("FailoverConfigReloadFailed", "20m"),
        ],
    },
]


@needs_promtool
def test_the_alerts_fire_when_they_should_and_only_then(tmp_path):
    # Annotations are templates checked by `promtool check rules`; left out here so the
    # tests compare what fires (labels), not the wording.
    groups = [
        {
            **group,
            "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in group["rules"]],
        }
        for group in rule_groups()
    ]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    tested = {case["alertname"] for test in RULE_TESTS for case in test["alert_rule_test"]}
    assert tested == {rule["alert"] for rule in alerts()}, "every alert has a unit test"
    unit = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": RULE_TESTS}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(unit, sort_keys=False))
    promtool("test", "rules", "tests.yaml", cwd=tmp_path)


# -- the config as mounted, and the manifests that mount it --------------------------------


def test_the_configmap_config_loads_as_mounted(tmp_path):
    config = mounted_config(tmp_path)
    assert config.listen.host == "0.0.0.0"  # the kubelet and Prometheus come in on the pod IP
    assert config.admin.host == "127.0.0.1"  # the admin API stays on loopback
    assert config.admin.metrics_on_main  # what the PodMonitor scrapes
    assert any(r.cache for r in config.routes) and any(r.on_failure for r in config.routes)
    for route_ in config.routes:  # body_file is found next to config.yaml in the mount
        if route_.default and route_.default.body_file:
            assert not PurePosixPath(route_.default.body_file).is_absolute()


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == name]
    assert len(found) == 1
    return found[0]


def under(path: str, directory: str) -> bool:
    return PurePosixPath(directory) in PurePosixPath(path).parents


DEPLOYMENTS = ["deployment.yaml", "deployment-classic-sidecar.yaml"]


@pytest.mark.parametrize("file", DEPLOYMENTS)
def test_the_deployment_agrees_with_the_config(file, tmp_path):
    config = mounted_config(tmp_path)
    pod = the("Deployment", file)["spec"]["template"]["spec"]
    proxy = container(pod, "failover-proxy")
    if file == "deployment.yaml":  # the native sidecar
        assert proxy in pod["initContainers"] and proxy["restartPolicy"] == "Always"
    else:  # the classic one: first, so its postStart hook holds the app back
        assert pod["containers"][0] is proxy and "initContainers" not in pod
        assert {"postStart", "preStop"} <= set(proxy["lifecycle"])

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in proxy["volumeMounts"]}
    args = proxy["args"]
    config_path = args[args.index("--config") + 1]
    (config_dir,) = [p for p, m in mounts.items() if "configMap" in volumes[m["name"]]]
    assert PurePosixPath(config_path).parent == PurePosixPath(config_dir)
    assert not any("subPath" in m or "subPathExpr" in m for m in proxy["volumeMounts"])
    configmap = the("ConfigMap", "configmap.yaml")
    assert volumes[mounts[config_dir]["name"]]["configMap"]["name"] == configmap["metadata"]["name"]
    assert PurePosixPath(config_path).name in configmap["data"]

    writable = [p for p, m in mounts.items() if "emptyDir" in volumes[m["name"]]]
    for state in (config.cache.path, config.buffer.path):
        assert state and any(under(state, d) for d in writable), f"{state} is not on a volume"

    port = next(p for p in proxy["ports"] if p["containerPort"] == config.listen.port)
    prefix = config.admin.reserved_prefix
    probes = {"startupProbe": "readyz", "readinessProbe": "readyz", "livenessProbe": "livez"}
    for probe, path in probes.items():
        get = proxy[probe]["httpGet"]
        assert get["path"] == f"{prefix}/{path}"
        assert get["port"] in (port["name"], port["containerPort"])

    (token,) = [e for e in proxy["env"] if e["name"] == "FAILOVER_ADMIN_TOKEN"]
    ref = token["valueFrom"]["secretKeyRef"]
    secret = the("Secret", "secret.yaml")
    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]

    for c in [proxy, *pod["containers"]]:
        assert {"requests", "limits"} <= set(c["resources"]), c["name"]
    app = container(pod, "app")
    assert {"name": "API_BASE_URL", "value": f"http://127.0.0.1:{config.listen.port}"} in app["env"]
    assert pod["terminationGracePeriodSeconds"] > config.shutdown_grace


def test_the_podmonitor_scrapes_what_the_config_serves(tmp_path):
    config = mounted_config(tmp_path)
    monitor = the("PodMonitor")["spec"]
    pod = the("Deployment", "deployment.yaml")["spec"]["template"]
    proxy = container(pod["spec"], "failover-proxy")
    (endpoint,) = monitor["podMetricsEndpoints"]
    assert endpoint["path"] == f"{config.admin.reserved_prefix}/metrics"
    assert endpoint["port"] in [p["name"] for p in proxy["ports"]]
    labels = pod["metadata"]["labels"]
    selectors = [
        monitor["selector"]["matchLabels"],
        the("Service")["spec"]["selector"],
        the("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        the("NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= labels.items()
    # The Service leaves the proxy's port out: it is the app's way out, not a way in.
    service_ports = {p["targetPort"] for p in the("Service")["spec"]["ports"]}
    assert not service_ports & {config.listen.port, *[p["name"] for p in proxy["ports"]]}


def test_the_dockerfile_agrees_with_the_config(tmp_path):
    config = mounted_config(tmp_path)
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[12]-slim", text, re.M)
    assert 'ENTRYPOINT ["failover-proxy"]' in text
    assert 'CMD ["run", "--config", "/etc/failover-proxy/config.yaml"]' in text
    assert "STOPSIGNAL SIGTERM" in text and re.search(r"^USER \d+", text, re.M)
    port = config.listen.port
    assert f"http://127.0.0.1:{port}{config.admin.reserved_prefix}/livez" in text
    assert f"EXPOSE {port}" in text
    for state in (config.cache.path, config.buffer.path):
        assert state and under(state, "/var/lib/failover-proxy")


# -- schemas ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(version):
    for docs in manifests().values():
        for doc in docs:
            if (doc["apiVersion"], doc["kind"]) in CRDS:
                continue  # no schema there; their shape is checked below
            kubernetes_validate.validate(doc, version, strict=True)  # raises if unknown
    generated = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "failover-proxy-dashboard", "labels": {"grafana_dashboard": "1"}},
        "data": {"failover-proxy.json": (K8S / "dashboard.json").read_text()},
    }
    kubernetes_validate.validate(generated, version, strict=True)


POD_MONITOR_SPEC = {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel"}
ENDPOINT = {"port", "path", "interval", "scrapeTimeout", "scheme", "relabelings"}
RULE = {"alert", "expr", "for", "labels", "annotations"}


def test_the_crds_have_the_fields_prometheus_operator_reads():
    monitor = the("PodMonitor")
    assert set(monitor["spec"]) <= POD_MONITOR_SPEC
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert set(endpoint) <= ENDPOINT
    for group in rule_groups():
        assert set(group) <= {"name", "interval", "rules"}
        for rule in group["rules"]:
            assert set(rule) <= RULE and {"alert", "expr", "labels"} <= set(rule)
            assert rule["labels"]["severity"] in ("warning", "critical", "page")
            assert {"summary", "description"} <= set(rule["annotations"])


def test_kustomization_lists_every_manifest_but_the_secret_and_the_alternative():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == set(manifests()) - {"secret.yaml", "deployment-classic-sidecar.yaml"}
    (generator,) = kustomization["configMapGenerator"]
    assert generator["files"] == ["failover-proxy.json=dashboard.json"]


def test_the_dashboard_has_the_panels_the_issue_asks_for():
    titles = [panel["title"] for panel in dashboard()["panels"]]
    for wanted in ("Requests by source", "Health state", "Breaker states", "Cache", "Buffer depth"):
        assert any(title.startswith(wanted) for title in titles), wanted
    ids = [panel["id"] for panel in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
