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
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml

from proxy.config.loader import load_text
from tests.conftest import REPO
from tests.helpers.k8s import K8S, dashboard, manifests, rule_groups, the

# Prometheus Operator's CRDs: kubernetes-validate has no schema for them.
CRDS = {("monitoring.coreos.com/v1", "PodMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
# The oldest version with native sidecars on by default, and the newest the tool knows.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


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
