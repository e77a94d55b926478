"""What the docs tests read: the README and the sections of docs/, the bundled config, and
every key the config schema knows."""

from __future__ import annotations

import typing
from pathlib import Path

from pydantic import BaseModel

from tests.conftest import REPO

README = REPO / "README.md"
CONFIGURATION = REPO / "docs" / "configuration.md"
OPERATIONS = REPO / "docs" / "operations.md"
BUNDLED = REPO / "config.yaml"


def section(doc: Path, title: str) -> str:
    return doc.read_text().split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def all_docs() -> str:
    """The README and every document in docs/, as one text."""
    return "\n".join(doc.read_text() for doc in [README, *sorted((REPO / "docs").glob("*.md"))])


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
