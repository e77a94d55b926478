"""Log lines: one structured line per request with its request id, which also reaches
the upstream; one per state change; JSON or text."""

from __future__ import annotations

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
