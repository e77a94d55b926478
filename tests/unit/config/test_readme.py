"""The configuration reference (docs/configuration.md) lists every key the schema knows: a
key added to proxy/config/schema.py without a line in the reference fails here."""

from __future__ import annotations

import re

from proxy.config.loader import parse_yaml
from proxy.config.schema import Config
from tests.helpers.docs import CONFIGURATION, schema_keys


def reference_block() -> str:
    text = CONFIGURATION.read_text()
    section = text.split("## Configuration reference", 1)[1]
    return section.split("```yaml", 1)[1].split("```", 1)[0]


def documented(node: object, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if prefix == "upstreams":  # a map of names: its values are upstreams
                path = "upstreams.*"
            keys.add(path)
            keys |= documented(value, path)
    elif isinstance(node, list):
        for value in node:
            keys |= documented(value, prefix + "[]")
    return keys


def test_every_config_key_is_in_the_readme_reference():
    block = reference_block()
    data, _ = parse_yaml(block)
    listed = documented(data)
    missing = [
        key
        for key in sorted(schema_keys(Config) - listed)
        # a key shown in a comment ("# or body_file: ...") counts as documented
        if not re.search(rf"#.*\b{re.escape(key.rsplit('.', 1)[-1])}:", block)
    ]
    assert missing == []
