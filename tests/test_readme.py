"""The README's configuration reference lists every key the schema knows: a key added
to proxy/config/schema.py without a line in the reference fails here."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

from proxy.config.loader import parse_yaml
from proxy.config.schema import Config

README = Path(__file__).resolve().parent.parent / "README.md"


def reference_block() -> str:
    text = README.read_text()
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


def schema_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}.{field.alias or name}" if prefix else (field.alias or name)
        keys.add(path)
        annotation = field.annotation
        origin = typing.get_origin(annotation)
        for inner in (annotation, *typing.get_args(annotation)):
            for candidate in (inner, *typing.get_args(inner)):
                if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                    if origin is list:
                        keys |= schema_keys(candidate, path + "[]")
                    elif origin is dict:
                        keys |= schema_keys(candidate, path + ".*")
                    else:
                        keys |= schema_keys(candidate, path)
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
