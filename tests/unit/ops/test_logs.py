"""Log lines: one structured line per request with its request id, which also reaches
the upstream; one per state change; JSON or text."""

from __future__ import annotations

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
