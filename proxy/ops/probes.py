"""The read-only operator paths: ``livez``, ``readyz``, ``health`` and ``metrics``.
Served under ``admin.reserved_prefix`` on the main listener (so kubelet reaches the
probes on the pod IP; such paths are never proxied) and on the admin listener."""

from __future__ import annotations

import json

from aiohttp import web

from proxy.ops.health import Observed, report
from proxy.ops.metrics import CONTENT_TYPE, exposition, registry_for


class Ops:
    def __init__(self, observed: Observed) -> None:
        self.observed = observed
        self.registry = registry_for(observed)
        self.ready = False  # listeners up (set by the app); False again while draining

    def answer(self, name: str, *, metrics: bool = True) -> web.Response | None:
        """The answer for one of the paths, or None if ``name`` is not one of them."""
        if name == "livez":
            return json_answer({"live": True})
        if name == "readyz":
            return json_answer({"ready": self.ready}, 200 if self.ready else 503)
        if name == "health":
            return json_answer(report(self.observed))
        if name == "metrics" and metrics:
            return web.Response(
                body=exposition(self.registry), headers={"Content-Type": CONTENT_TYPE}
            )
        return None


def json_answer(body: object, status: int = 200) -> web.Response:
    """JSON for operators: indented, never cached."""
    return web.Response(
        status=status,
        body=json.dumps(body, indent=1).encode(),
        headers={"Content-Type": "application/json", "Cache-Control": "no-store"},
    )
