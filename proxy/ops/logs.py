"""Log lines: JSON objects, one per line (for a log pipeline), or text (for a terminal).

Structured fields travel in a record's ``extra={"fields": {...}}``; the JSON format
puts them at the top level of the line, the text format appends them as ``key=value``.
The access log (``failover_proxy.access``, one line per request) can be switched off
on its own.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

ACCESS = "failover_proxy.access"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _fields(record)
        if fields and record.name != ACCESS:
            text += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        elif fields:
            attempts = ",".join(f"{a['upstream']}:{a['outcome']}" for a in fields["attempts"])
            text += (
                f" route={fields['route']} source={fields['source']} health={fields['health']}"
                f" attempts={attempts or '-'} ms={fields['duration_ms']}"
                f" id={fields['request_id']}"
            )
        return text


def _iso(created: float) -> str:
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{whole}.{int(created % 1 * 1000):03d}Z"


def configure(level: str, fmt: str, access_log: bool) -> None:
    """Replace the root handler with one writing to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger(ACCESS).setLevel(logging.INFO if access_log else logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # ours replaces it
