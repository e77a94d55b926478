"""``failover-proxy schema``: the JSON Schema editors check config.yaml with. It must
accept every config the project ships and reject what the loader rejects."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from proxy.cli import main
from proxy.config.loader import parse_yaml
from tests.conftest import REPO


@pytest.fixture(scope="module")
def schema() -> dict:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["schema"]) == 0
    document = json.loads(out.getvalue())
    jsonschema.Draft202012Validator.check_schema(document)
    return document


def shipped() -> list[Path]:
    found = [REPO / "config.yaml", *sorted((REPO / "proxy").glob("**/*.yaml"))]
    for manifest in sorted((REPO / "k8s").glob("*.yaml")) if (REPO / "k8s").exists() else []:
        for doc in yaml.safe_load_all(manifest.read_text()):
            if doc and doc.get("kind") == "ConfigMap" and "config.yaml" in doc.get("data", {}):
                found.append(manifest)
    return found


@pytest.mark.parametrize("path", shipped(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_is_valid(schema, path: Path):
    text = path.read_text()
    if path.parent.name == "k8s":
        docs = [d for d in yaml.safe_load_all(text) if d and d.get("kind") == "ConfigMap"]
        text = next(d["data"]["config.yaml"] for d in docs if "config.yaml" in d["data"])
    data, _ = parse_yaml(text)  # keys as written: YAML 1.1 would make `on:` a boolean
    jsonschema.validate(data, schema)


GOOD = {
    "upstreams": {"primary": {"url": "http://127.0.0.1:8000", "timeouts": {"read": "2s"}}},
    "routes": [
        {
            "name": "r",
            "upstreams": ["primary"],
            "failure_statuses": ["5xx", 429],
            "cache": {"stale_for": "24h", "max_entry_size": "1MiB"},
        }
    ],
    "cache": {"max_size": 1048576},
}


def test_a_full_example_is_valid(schema):
    jsonschema.validate(GOOD, schema)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda c: c["routes"][0].update(cache={"stale_for": 86400}), "a duration without unit"),
        (lambda c: c["routes"][0].update(cache={"stale_for": "5 parsecs"}), "an unknown unit"),
        (lambda c: c["routes"][0].update(retries=2), "an unknown key"),
        (lambda c: c["routes"][0].update(failure_statuses=["6xx"]), "no such class"),
        (lambda c: c["upstreams"]["primary"].update(max_connections="lots"), "a wrong type"),
        (lambda c: c.pop("routes"), "a missing required key"),
        (lambda c: c["cache"].update(max_size="a lot"), "a size without a number"),
    ],
)
def test_a_broken_config_is_refused(schema, change, why):
    config = json.loads(json.dumps(GOOD))
    change(config)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, schema)
