"""The admin API: its own listener (``admin.host``, loopback by default), never the main
one. Every call needs ``Authorization: Bearer <token>`` (compared in constant time),
except ``GET /``: the status page's static shell, which holds no state and asks for
the token to read ``/health``. Before the token, every request (``GET /`` too) must
name this listener in its ``Host`` (:mod:`proxy.ops.admin_hosts`; else 421), so a browser
tricked by DNS rebinding cannot reach it. Every action is logged at WARNING with what
changed.

Calls (JSON in, JSON out):

- ``GET /health``, ``/metrics``, ``/livez``, ``/readyz``: as on the main listener.
- ``GET /admin/config``: the effective config (with any operator reorder applied).
- ``PUT /admin/upstreams/{name}/circuit`` ``{"state": "open"|"closed"|"automatic"}``.
- ``PUT /admin/routes/{name}/upstreams`` ``{"order": [...]}``: until the next reload.
- ``POST /admin/cache/purge`` ``{}`` (all), ``{"route": name}`` (404 for a name the
  config lacks) or ``{"key": {"method", "host", "target", "headers"}}`` (the entry a
  request like that would use).
- ``GET /admin/drills``; ``POST /admin/drills`` ``{"upstream", "kind", "percent",
  "duration", "latency", "status"}``; ``DELETE /admin/drills/{upstream}``.
- ``POST /admin/reload``: reload config.yaml now (400 with the reason if refused).
- ``GET /admin/buffer`` (depth, bytes, dead letters with their last answer);
  ``POST /admin/buffer/flush``; ``POST /admin/buffer/dead/{id}/retry``;
  ``DELETE /admin/buffer/dead/{id}``.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http import SERVER_SOFTWARE
from multidict import CIMultiDict

from proxy.buffer.buffer import WriteBuffer
from proxy.cache.rules import cache_key
from proxy.chain.routing import BadTarget, normalise_target
from proxy.config.units import parse_duration
from proxy.ops.admin_hosts import AllowedHosts, host_of
from proxy.ops.health import Observed
from proxy.ops.probes import Ops, json_answer
from proxy.ops.status_page import PAGE
from proxy.reloader import Reloader
from proxy.upstreams.breaker import State
from proxy.upstreams.drills import KINDS, Drill, Drills

log = logging.getLogger("failover_proxy")

TOKEN_ENV = "FAILOVER_ADMIN_TOKEN"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def admin_token(token_file: str | None, base: Path) -> str | None:
    """From ``FAILOVER_ADMIN_TOKEN``, else ``admin.token_file``; None if neither has one."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token and token_file:
        token = (base / token_file).read_text().strip()
    return token or None


class AdminApi:
    def __init__(
        self,
        token: str,
        observed: Observed,
        drills: Drills,
        ops: Ops,
        reloader: Reloader | None = None,
    ) -> None:
        self.reloader = reloader
        self._expected = f"Bearer {token}".encode()
        self.observed = observed
        self.live = observed.live  # read for every call; changed only by a reorder
        self.drills = drills
        self.ops = ops
        # The address the listener was bound to; a reload cannot move it (restart).
        self._listen_host = self.live.current.runtime.config.admin.host
        self._hosts_for: tuple[str, ...] | None = None
        self._hosts = AllowedHosts.build(self._listen_host, [])

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._host, self._auth, self._errors])
        app.router.add_get("/", self._page)
        for name in ("livez", "readyz", "health", "metrics"):
            app.router.add_get(f"/{name}", self._ops)
        app.router.add_get("/admin/config", self._config)
        app.router.add_put("/admin/upstreams/{name}/circuit", self._circuit)
        app.router.add_put("/admin/routes/{name}/upstreams", self._reorder)
        app.router.add_post("/admin/cache/purge", self._purge)
        app.router.add_get("/admin/drills", self._list_drills)
        app.router.add_post("/admin/drills", self._start_drill)
        app.router.add_delete("/admin/drills/{upstream}", self._stop_drill)
        app.router.add_post("/admin/reload", self._reload)
        app.router.add_get("/admin/buffer", self._buffer_status)
        app.router.add_post("/admin/buffer/flush", self._buffer_flush)
        app.router.add_post("/admin/buffer/dead/{id}/retry", self._dead_retry)
        app.router.add_delete("/admin/buffer/dead/{id}", self._dead_delete)
        return app

    def _allowed_hosts(self) -> AllowedHosts:
        """``admin.allowed_hosts`` as the running config has it (a reload applies it)."""
        names = tuple(self.live.current.runtime.config.admin.allowed_hosts)
        if names != self._hosts_for:
            self._hosts = AllowedHosts.build(self._listen_host, list(names))
            self._hosts_for = names
        return self._hosts

    @web.middleware
    async def _host(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """421 unless ``Host`` names this listener, whatever the token says. No ``Host``:
        400 on HTTP/1.1 (RFC 9112 3.2 requires it), 421 on HTTP/1.0 (nothing says the
        request is meant for us); several, or one that is not a host: 400."""
        given = request.headers.getall("Host", [])
        if len(given) > 1 or (not given and request.version >= (1, 1)):
            return json_answer({"error": "exactly one Host header is required"}, 400)
        host = host_of(given[0]) if given else None
        if given and host is None:
            return json_answer({"error": "the Host header is not a host"}, 400)
        if host is None or not self._allowed_hosts().allows(host):
            log.warning(
                "admin: refused %s %s from %s: Host %r is not this listener",
                request.method,
                request.path,
                request.remote,
                given[0] if given else None,
            )
            message = "this listener does not answer to that Host (see admin.allowed_hosts)"
            return json_answer({"error": message}, 421)
        return await handler(request)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/" and request.method in ("GET", "HEAD"):
            return await handler(request)
        # surrogateescape: a header with bytes that are not UTF-8 is a wrong token, not a 500
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, self._expected):
            log.warning(
                "admin: refused %s %s from %s: no valid token",
                request.method,
                request.path,
                request.remote,
            )
            return web.json_response(
                {"error": "a valid 'Authorization: Bearer <token>' is required"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except AdminError as exc:
            return json_answer({"error": str(exc)}, exc.status)

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(
            text=PAGE, content_type="text/html", headers={"Cache-Control": "no-store"}
        )

    async def _ops(self, request: web.Request) -> web.StreamResponse:
        answer = self.ops.answer(request.path.lstrip("/"))
        assert answer is not None
        return answer

    async def _config(self, request: web.Request) -> web.Response:
        runtime = self.live.current.runtime
        config = runtime.config.model_dump(mode="json", by_alias=True)
        for i, route in enumerate(runtime.routes):
            config["routes"][i]["upstreams"] = list(route.upstreams)  # as in effect now
        return json_answer(config)

    async def _circuit(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        guard = self.observed.guards.get(name)
        if guard is None:
            raise AdminError(404, f"no upstream named {name!r}")
        state = (await _body(request)).get("state")
        choices = {"open": State.OPEN, "closed": State.CLOSED, "automatic": None}
        if state not in choices:
            raise AdminError(400, "state must be one of open, closed, automatic")
        before = "forced " + str(guard.pinned) if guard.pinned else "automatic"
        guard.pin(choices[state], f"admin API (was {before})")
        log.warning("admin: circuit of %s set to %s (was %s)", name, state, before)
        return json_answer({"upstream": name, "circuit": state, "was": before})

    async def _reorder(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        runtime = self.live.current.runtime
        route = runtime.route(name)
        if route is None:
            raise AdminError(404, f"no route named {name!r}")
        order = (await _body(request)).get("order")
        if not isinstance(order, list) or not all(isinstance(u, str) for u in order):
            raise AdminError(400, "order must be a list of upstream names")
        try:
            self.live.reorder(name, tuple(order))
        except ValueError as exc:
            raise AdminError(400, str(exc)) from None
        log.warning(
            "admin: route %s now tries %s (was %s) until the next reload",
            name,
            " -> ".join(order),
            " -> ".join(route.upstreams),
        )
        return json_answer({"route": name, "upstreams": order, "was": list(route.upstreams)})

    async def _purge(self, request: web.Request) -> web.Response:
        body = await _body(request)
        store = self.observed.store
        if "key" in body:
            key = self._key(body["key"])
            existed = store.get(key) is not None
            store.remove(key)
            purged, what = int(existed), "one key"
        elif "route" in body:
            name = str(body["route"])
            if all(route.name != name for route in self.live.current.runtime.routes):
                raise AdminError(404, f"no route named {name!r}")  # a typo is not "0 purged"
            purged, what = store.purge(name), f"route {name}"
        elif not body:
            purged, what = store.purge(), "everything"
        else:
            raise AdminError(400, 'send {}, {"route": name} or {"key": {...}}')
        log.warning("admin: cache purged (%s): %d entries", what, purged)
        return json_answer({"purged": purged})

    def _key(self, spec: Any) -> str:
        if not isinstance(spec, dict) or not isinstance(spec.get("target"), str):
            raise AdminError(
                400, "key needs target (path?query), and may have method, host, headers"
            )
        method = str(spec.get("method", "GET")).upper()
        host = str(spec.get("host", ""))
        given = spec.get("headers", {})
        if not isinstance(given, dict):
            raise AdminError(400, "key.headers must be an object of header names and values")
        headers = CIMultiDict({str(k): str(v) for k, v in given.items()})
        try:
            path, query = normalise_target(spec["target"])
        except BadTarget as exc:
            raise AdminError(400, str(exc)) from None
        route = self.live.current.runtime.router.find(method, path, host, headers)
        if route is None or route.cache is None:
            raise AdminError(404, "no route with a cache matches that request")
        return cache_key(route.name, method, host, path, query, headers, route.cache.policy)

    async def _list_drills(self, request: web.Request) -> web.Response:
        return json_answer([_drill_json(d, self.observed.clock()) for d in self.drills.active()])

    async def _start_drill(self, request: web.Request) -> web.Response:
        body = await _body(request)
        upstream = body.get("upstream")
        if upstream not in self.observed.guards:
            raise AdminError(400, f"unknown upstream {upstream!r}")
        kind = body.get("kind")
        if kind not in KINDS:
            raise AdminError(400, f"kind must be one of {', '.join(KINDS)}")
        percent = body.get("percent", 100)
        if not isinstance(percent, int | float) or not 0 < percent <= 100:
            raise AdminError(400, "percent must be a number in (0, 100]")
        status = body.get("status", 503)
        if kind == "error" and (
            not isinstance(status, int) or not (500 <= status <= 599 or status == 429)
        ):
            raise AdminError(400, "status must be a 5xx or 429")
        try:
            duration = parse_duration(body.get("duration", "5m"))
            latency = parse_duration(body.get("latency", "1s"))
        except ValueError as exc:
            raise AdminError(400, str(exc)) from None
        if duration <= 0:
            raise AdminError(400, "duration must be longer than 0s")
        now = self.observed.clock()
        drill = Drill(str(upstream), kind, float(percent), now, now + duration, latency, status)
        self.drills.start(drill)
        log.warning("admin: drill on %s: %s for %ss", upstream, drill.describe(), duration)
        return json_answer(_drill_json(drill, now), 201)

    async def _stop_drill(self, request: web.Request) -> web.Response:
        upstream = request.match_info["upstream"]
        drill = self.drills.stop(upstream)
        if drill is None:
            raise AdminError(404, f"no drill runs on {upstream!r}")
        log.warning("admin: drill on %s stopped", upstream)
        return json_answer({"stopped": upstream})

    async def _reload(self, request: web.Request) -> web.Response:
        if self.reloader is None:
            raise AdminError(404, "this proxy was not started from a config file")
        result = await self.reloader.reload("admin API")
        body = {"reloaded": result.applied, "message": result.message}
        if result.needs_restart:
            body["needs_restart"] = list(result.needs_restart)
        return json_answer(body, 200 if result.applied else 400)

    def _write_buffer(self) -> WriteBuffer:
        if self.observed.buffer is None:
            raise AdminError(404, "no write buffer is configured (buffer.path)")
        return self.observed.buffer

    async def _buffer_status(self, request: web.Request) -> web.Response:
        """The summary and the oldest dead letters (``?limit=``, 100 by default)."""
        buffer = self._write_buffer()
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            raise AdminError(400, "limit must be a whole number") from None
        return json_answer({**buffer.status().json(), "dead": buffer.dead_letters(max(0, limit))})

    async def _buffer_flush(self, request: web.Request) -> web.Response:
        buffer = self._write_buffer()
        buffer.flush()
        log.warning("admin: buffer flush: every route's replay tried now")
        return json_answer({"flushing": buffer.status().depth})

    async def _dead_retry(self, request: web.Request) -> web.Response:
        write_id = request.match_info["id"]
        if not await self._write_buffer().retry_dead(write_id):
            raise AdminError(404, f"no dead letter {write_id!r}")
        log.warning("admin: dead letter %s sent back to the replay queue", write_id)
        return json_answer({"retrying": write_id})

    async def _dead_delete(self, request: web.Request) -> web.Response:
        write_id = request.match_info["id"]
        if not await self._write_buffer().delete_dead(write_id):
            raise AdminError(404, f"no dead letter {write_id!r}")
        log.warning("admin: dead letter %s deleted", write_id)
        return json_answer({"deleted": write_id})


def _drill_json(drill: Drill, now: float) -> dict[str, Any]:
    return {
        "upstream": drill.upstream,
        "kind": drill.kind,
        "percent": drill.percent,
        "what": drill.describe(),
        "ends_in_s": round(drill.until - now, 1),
    }


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise AdminError(400, "the body must be JSON") from None
    if not isinstance(body, dict):
        raise AdminError(400, "the body must be a JSON object")
    return body


def without_server_software(response: web.StreamResponse) -> None:
    """Drop the ``Server: Python/3.x aiohttp/3.y`` that aiohttp adds to every answer
    without one: the proxy's answers do not advertise versions (known by identity: the
    one string object aiohttp sets)."""
    if response.headers.get(hdrs.SERVER) is SERVER_SOFTWARE:
        del response.headers[hdrs.SERVER]


class _AdminRequest(web.Request):
    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        await super()._prepare_hook(response)
        without_server_software(response)


def serve_without_versions(runner: web.AppRunner) -> None:
    """After ``runner.setup()``: admin answers do not advertise versions either. A
    request class rather than ``on_response_prepare``, which aiohttp does not send for
    a request it could not parse (its 400 would still say ``Server: ... aiohttp/3.y``)."""
    server = runner.server
    assert server is not None, "called before setup()"
    server.request_factory = functools.partial(runner.app._make_request, _cls=_AdminRequest)
