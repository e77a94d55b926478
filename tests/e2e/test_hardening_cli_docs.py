"""Issue 12 item 13: what a newcomer tripped on in the docs and the CLI. ``check`` takes
``--config`` as ``run`` does and shows each route's cache step; unknown keys get a "did
you mean"; YAML syntax errors give ``file:line:column``; the README names only keys the
schema has, every ``X-Failover-Source`` value, and no file the repository lacks."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from proxy.chain.errors import Failure
from proxy.chain.payloads import failure_report
from proxy.config.schema import Config
from proxy.upstreams.breaker import State
from tests.conftest import ADMIN_AUTH, LOOPBACK
from tests.helpers.docs import OPERATIONS, schema_keys, section


async def _health_document(start_app, http_upstream, client) -> dict[str, Any]:
    from aiohttp import web

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    upstream = await http_upstream(ok)
    app = await start_app(
        {
            "upstreams": {
                "primary": {
                    "url": upstream.url,
                    "health_check": {"path": "/h", "interval": "50ms", "timeout": "1s"},
                    "quota": {"per_minute": 100},
                }
            },
            "routes": [
                {
                    "name": "r",
                    "upstreams": ["primary"],
                    "match": {"path_prefix": "/"},
                    "cache": {"stale_for": "1h"},
                }
            ],
        }
    )
    admin = f"http://{LOOPBACK}:{app.admin_port}/health"
    async with asyncio.timeout(10):
        while True:
            async with client.get(f"http://{LOOPBACK}:{app.port}/x"):
                pass
            async with client.get(admin, headers=ADMIN_AUTH) as answer:
                body: dict[str, Any] = await answer.json()
            if "detail" in body["upstreams"]["primary"]["health_check"]:
                return body
            await asyncio.sleep(0.05)


def _words(node: object) -> set[str]:
    """Every key and every string value of a JSON document."""
    if isinstance(node, dict):
        return {str(key) for key in node} | {w for value in node.values() for w in _words(value)}
    if isinstance(node, list):
        return {w for value in node for w in _words(value)}
    return {node} if isinstance(node, str) else set()


async def test_troubleshooting_names_only_keys_that_exist(start_app, http_upstream, client):
    """Every `identifier` and `dotted.path` the troubleshooting section tells a reader to
    look at or set is a config key, a /health field or one of their values (a key the
    schema refuses, such as circuit_breaker.multiplier, is not)."""
    schema = {
        part.removesuffix("[]")
        for key in schema_keys(Config)
        for part in key.split(".")
        if part != "*"
    }
    health = _words(await _health_document(start_app, http_upstream, client))
    health |= {"up", "down", "off"}  # health_check.state; only "up" shows while it passes
    values = {s.value for s in State} | {f.value for f in Failure} | {"automatic"}
    report = failure_report("r", [], 503, deadline_exceeded=False).body.decode()
    vocabulary = schema | health | values | _words(__import__("json").loads(report))
    text = section(OPERATIONS, "Troubleshooting")
    unknown = []
    for token in re.findall(r"`([A-Za-z_<>.]+)`", text):
        parts = [p for p in token.split(".") if not p.startswith("<")]
        if all(re.fullmatch(r"[a-z][a-z0-9_]*", p) for p in parts):
            unknown += [p for p in parts if p not in vocabulary]
    assert unknown == []
