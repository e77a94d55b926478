"""Log lines: JSON objects, one per line (for a log pipeline), or text (for a terminal).

Structured fields travel in a record's ``extra={"fields": {...}}``; the JSON format
puts them at the top level of the line, the text format appends them as ``key=value``.
The access log (``failover_proxy.access``, one line per request) can be switched off
on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import threading
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
        return _encoder.encode(line)


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


_second: list[Any] = [-1, ""]  # the last whole second formatted, and its text


def _iso(created: float) -> str:
    whole = int(created)
    if whole != _second[0]:  # once a second, not once a line
        _second[:] = [whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))]
    return f"{_second[1]}.{int(created % 1 * 1000):03d}Z"


_encoder = json.JSONEncoder(separators=(",", ":"), default=str)  # one, not one per line
_quoted = json.encoder.encode_basestring_ascii  # a JSON string, as json.dumps writes it
_batching: BatchingHandler | None = None  # the handler configure() installed, if it ran
_MAIN_THREAD = threading.main_thread().ident


def write_access(
    request_id: str,
    route: str,
    method: str,
    path: str,
    status: int,
    source: str,
    health: str,
    attempts: list[tuple[str, str]],
    seconds: float,
) -> bool:
    """One access line written straight to the batching handler, in the configured
    format, byte for byte as a record through :class:`JsonFormatter` or
    :class:`TextFormatter` would come out (tests/unit/ops/test_logs.py holds them
    equal), without building a record: the access log then costs a few microseconds a
    request. False unless configure()'s handler is the only one (the caller then logs a
    record)."""
    handler = _batching
    installed = logging.root.handlers
    if handler is None or len(installed) != 1 or installed[0] is not handler:
        return False  # another handler listens too (a test's capture): it gets a record
    now = time.time()
    message = f"{method} {path} {status}"
    duration = round(seconds * 1000, 3)
    if isinstance(handler.formatter, JsonFormatter):
        # route, upstream, source, health and outcome names are config names or fixed
        # words, and the method an HTTP token: none holds a character JSON escapes
        tried = ",".join([f'{{"upstream":"{up}","outcome":"{why}"}}' for up, why in attempts])
        line = (
            f'{{"time":"{_iso(now)}","level":"info","logger":"{ACCESS}",'
            f'"message":{_quoted(message)},"request_id":{_quoted(request_id)},'
            f'"route":"{route}","method":"{method}","path":{_quoted(path)},'
            f'"status":{status},"source":"{source}","health":"{health}",'
            f'"attempts":[{tried}],"duration_ms":{float(duration)!r}}}'
        )
    else:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        tried = ",".join([f"{up}:{why}" for up, why in attempts])
        line = (
            f"{stamp},{int(now % 1 * 1000):03d} INFO {ACCESS}: {message}"
            f" route={route} source={source} health={health}"
            f" attempts={tried or '-'} ms={duration} id={request_id}"
        )
    handler.add(line)
    return True


class BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Lines written together once per turn of the event loop, not one write (and one
    flush) per line: under load the access log costs a write per batch of requests.
    Outside a running loop (start-up, shutdown, a thread) a line goes out at once."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._pending: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.add(line)

    def add(self, line: str) -> None:
        """A formatted line, out with this turn's others."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if threading.get_ident() != _MAIN_THREAD:
            self._write([line])  # another thread's line: never touches the loop's batch
            return
        if loop is None:  # start-up, shutdown: out at once, after what waits
            lines, self._pending = [*self._pending, line], []
            self._write(lines)
            return
        if not self._pending:
            loop.call_soon(self.flush)
        self._pending.append(line)

    def flush(self) -> None:
        if self._pending:
            lines, self._pending = self._pending, []
            self._write(lines)
        super().flush()

    def _write(self, lines: list[str]) -> None:
        try:
            with self.lock or contextlib.nullcontext():  # one thread's lines at a time
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": "the log stream failed"}))


def configure(level: str, fmt: str, access_log: bool) -> None:
    """Replace the root handler with one writing to stderr in the chosen format.
    Records skip what no line shows (the caller's file and line, thread and process
    names: the logging HOWTO's "Optimization"), which halves an access line's cost."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    global _batching
    handler = _batching = BatchingHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger(ACCESS).setLevel(logging.INFO if access_log else logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # ours replaces it
