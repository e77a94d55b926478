"""Log lines: one structured line per request with its request id, which also reaches
the upstream; one per state change; JSON or text."""

from __future__ import annotations

import io
import json
import logging

from proxy.ops import logs


def test_json_lines_carry_the_fields_at_the_top_level():
    record = logging.LogRecord(logs.ACCESS, logging.INFO, __file__, 1, "GET /x 200", (), None)
    record.fields = {"route": "r", "status": 200}
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["route"] == "r"
    assert line["status"] == 200
    assert line["message"] == "GET /x 200"
    assert line["level"] == "info"
    assert line["time"].endswith("Z")


def test_text_lines_are_for_people():
    record = logging.LogRecord(logs.ACCESS, logging.INFO, __file__, 1, "GET /x 200", (), None)
    record.fields = {
        "route": "r",
        "source": "cache",
        "health": "critical",
        "attempts": [{"upstream": "primary", "outcome": "read_timeout"}],
        "duration_ms": 1.5,
        "request_id": "id1",
    }
    text = logs.TextFormatter().format(record)
    assert "GET /x 200 route=r source=cache health=critical attempts=primary:read_timeout" in text


def test_state_changes_are_structured(caplog):
    from proxy.upstreams.events import EventLog

    with caplog.at_level(logging.WARNING, logger="failover_proxy"):
        EventLog(lambda: 0.0).record("primary", "circuit_open", "5 failures in a row")
    (record,) = caplog.records
    assert record.fields == {
        "event": "circuit_open",
        "upstream": "primary",
        "detail": "5 failures in a row",
    }


def test_the_access_log_can_be_switched_off_alone():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("info", "json", access_log=False)
        assert not logging.getLogger(logs.ACCESS).isEnabledFor(logging.INFO)
        assert logging.getLogger("failover_proxy").isEnabledFor(logging.INFO)
        logs.configure("warning", "text", access_log=True)
        assert logging.getLogger(logs.ACCESS).isEnabledFor(logging.INFO)
        assert not logging.getLogger("failover_proxy").isEnabledFor(logging.INFO)
    finally:
        root.handlers[:], _ = saved[0], None
        root.setLevel(saved[1])
        logging.getLogger(logs.ACCESS).setLevel(logging.NOTSET)


def _access_record(created: float) -> logging.LogRecord:
    record = logging.LogRecord(logs.ACCESS, logging.INFO, __file__, 1, "%s %s %s", (), None)
    record.args = ("GET", '/caf\u00e9 "q"', 503)
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0
    record.fields = {
        "request_id": "id-1",
        "route": "r.1",
        "method": "GET",
        "path": '/caf\u00e9 "q"',
        "status": 503,
        "source": "none",
        "health": "critical",
        "attempts": [
            {"upstream": "primary", "outcome": "connection_refused"},
            {"upstream": "backup", "outcome": "http_5xx"},
        ],
        "duration_ms": 12.346,
    }
    return record


def test_an_access_line_written_directly_is_the_line_a_record_would_give(monkeypatch):
    """The access log's fast path builds its line without a record: it must be the same
    bytes the formatter gives a record (JSON and text), escapes and all."""
    created = 1_700_000_000.25
    monkeypatch.setattr(logs.time, "time", lambda: created)
    for formatter in (logs.JsonFormatter(), logs.TextFormatter()):
        out = io.StringIO()
        handler = logs.BatchingHandler(out)
        handler.setFormatter(formatter)
        monkeypatch.setattr(logs, "_batching", handler)
        monkeypatch.setattr(logging.root, "handlers", [handler])
        attempts = [("primary", "connection_refused"), ("backup", "http_5xx")]
        assert logs.write_access(
            "id-1", "r.1", "GET", '/caf\u00e9 "q"', 503, "none", "critical", attempts, 0.0123456
        )
        assert out.getvalue() == formatter.format(_access_record(created)) + "\n"


def test_without_configure_the_access_line_is_left_to_a_record(monkeypatch):
    monkeypatch.setattr(logs, "_batching", None)
    assert not logs.write_access("id", "r", "GET", "/", 200, "p", "healthy", [], 0.001)
