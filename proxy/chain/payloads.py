"""Bodies the proxy itself answers with: a route's default payload, and the JSON that
explains a 503/504. Default payloads are read and encoded once, at config load."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from proxy.chain.headers import FailedHop
from proxy.config import schema as config


@dataclass(frozen=True, slots=True)
class Payload:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def load_default(default: config.DefaultPayload, base: Path) -> Payload:
    if default.body_file is not None:
        body = (base / default.body_file).read_bytes()
    else:
        body = (default.body or "").encode()
    headers = dict(default.headers)
    if not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/octet-stream"
    return Payload(default.status, tuple(headers.items()), body)


def failure_report(
    route: str, hops: list[FailedHop], status: int, *, deadline_exceeded: bool
) -> Payload:
    """The 503/504 body: which upstreams were tried and why each failed."""
    document = {
        "error": "deadline exceeded" if deadline_exceeded else "no upstream could answer",
        "status": status,
        "route": route,
        "tried": [
            {"upstream": hop.upstream, "failure": hop.failure.value}
            | ({"status": hop.status} if hop.status is not None else {})
            for hop in hops
        ],
    }
    body = json.dumps(document, separators=(",", ":")).encode()
    headers = (("Content-Type", "application/json"), ("Retry-After", "1"))
    return Payload(status, headers, body)


def proxy_error(status: int, message: str) -> Payload:
    """A plain error the proxy answers on its own (bad target, body too large, no route)."""
    body = json.dumps({"error": message, "status": status}, separators=(",", ":")).encode()
    return Payload(status, (("Content-Type", "application/json"),), body)
