"""Reading k8s/ (the manifests, the alert rules, the dashboard): shared by the unit,
e2e and process parts of test_k8s.py."""

from __future__ import annotations

import json
from typing import Any

import yaml

from tests.conftest import REPO

K8S = REPO / "k8s"


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
