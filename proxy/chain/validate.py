""" "Is this a good answer?" A route's ``validate:`` rules, compiled once.

An answer that fails validation counts as a failure of that
upstream (``invalid_response``): the chain moves on, and such an answer is never
passed through or stored. An empty-but-200 answer is an outage to the user, so it is
one to the proxy.

``json_nonempty`` takes a dotted path with list indexes: ``$.drivers``,
``$.data.items[0].id``. The value there must exist and be non-empty: not null, not an
empty string, list or object.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]")


def parse_json_path(path: str) -> tuple[str | int, ...]:
    """``$.a.b[0]`` -> ``("a", "b", 0)``; ValueError on anything else."""
    if not path.startswith("$"):
        raise ValueError(f"a JSON path starts with '$', got {path!r}")
    steps: list[str | int] = []
    position = 1
    while position < len(path):
        match = _STEP.match(path, position)
        if match is None:
            raise ValueError(f"cannot read {path!r} at {path[position:]!r} (use $.key and [index])")
        steps.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
        position = match.end()
    return tuple(steps)


def _lookup(document: Any, steps: tuple[str | int, ...]) -> Any:
    for step in steps:
        if isinstance(step, int):
            if not isinstance(document, list) or step >= len(document):
                return None
        elif not isinstance(document, dict) or step not in document:
            return None
        document = document[step]
    return document


@dataclass(frozen=True, slots=True)
class Validator:
    statuses: frozenset[int] | None
    content_type: str | None  # media type, compared without parameters
    min_size: int
    json_path: tuple[str | int, ...] | None
    json_path_text: str | None
    max_body: int  # bodies larger than this cannot be checked, so they fail

    def problem(self, status: int, content_type: str | None, body: bytes) -> str | None:
        """Why the answer is not good, or None when it is."""
        if self.statuses is not None and status not in self.statuses:
            return f"status {status} is not allowed"
        if self.content_type is not None:
            media = (content_type or "").split(";", 1)[0].strip().lower()
            if media != self.content_type:
                return f"content type {media or 'none'} is not {self.content_type}"
        if len(body) < self.min_size:
            return f"body of {len(body)} bytes is smaller than {self.min_size}"
        if self.json_path is not None:
            try:
                document = json.loads(body)
            except ValueError:
                return "body is not JSON"
            value = _lookup(document, self.json_path)
            if value is None or value in ("", [], {}):
                return f"{self.json_path_text} is missing or empty"
        return None
