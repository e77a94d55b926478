"""Log lines: one structured line per request with its request id, which also reaches
the upstream; one per state change; JSON or text."""

from __future__ import annotations

import json
import logging
import re

from aiohttp import web

from proxy.ops import logs
from tests.conftest import route


def access_lines(caplog) -> list[dict]:
    return [r.fields for r in caplog.records if r.name == logs.ACCESS]


async def test_one_line_per_request_with_its_attempts(
    http_upstream, start_proxy, client, refused_url, caplog
):
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({})

    upstream = await http_upstream(ok)
    config = {
        "upstreams": {"primary": {"url": refused_url}, "secondary": {"url": upstream.url}},
        "routes": [route()],
    }
    proxy = await start_proxy(config)
    with caplog.at_level(logging.INFO, logger=logs.ACCESS):
        async with client.get(proxy + "/drivers?secret=1", headers={"X-Request-Id": "abc-123"}):
            pass
        async with client.get(proxy + "/other"):
            pass
    first, second = access_lines(caplog)
    assert first["request_id"] == "abc-123"
    assert first["path"] == "/drivers"  # never the query: it may carry secrets
    assert {k: first[k] for k in ("route", "method", "status", "source", "health")} == {
        "route": "r",
        "method": "GET",
        "status": 200,
        "source": "secondary",
        "health": "degraded",
    }
    assert first["attempts"] == [
        {"upstream": "primary", "outcome": "connection_refused"},
        {"upstream": "secondary", "outcome": "ok"},
    ]
    assert first["duration_ms"] >= 0
    # the id reaches the upstream: the client's own, or one made up for this request
    seen = [request["headers"]["X-Request-Id"] for request in upstream.requests]
    assert seen == ["abc-123", second["request_id"]]
    assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]{8}", second["request_id"])


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
