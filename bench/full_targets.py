"""failover-proxy as a user would configure it, and the targets built on that config.

``failover-proxy-full`` has every feature on: two upstreams (both the shared fast
upstream, each with its own keep-alive pool of 100 and an active health check on
``/small`` every second, as the bundled ``config.yaml`` has), the default circuit
breaker, retry policy and retry budget, the source and health headers and
``Proxy-Status`` under their default names (spelled out), ``Via`` and
``X-Forwarded-*`` (defaults), the admin listener with a token (so ``/metrics`` is
served; the ready check scrapes it), JSON logs, and the access log off, like nginx's
``access_log off``. One route ``/`` to ``[primary, secondary]``.

Its variants change one thing each:

- ``failover-proxy-open``: ``primary`` points at a loopback port nobody listens on,
  with ``circuit_breaker: {consecutive_failures: 1, open_for: 1h, max_open_for: 1h}``;
  the first request opens it, and every later one skips ``primary`` (``breaker_open``),
  is served by ``secondary`` and carries a ``Proxy-Status`` and ``degraded`` health.
- ``failover-proxy-fresh``: ``cache: {stale_for: 1h, fresh_for: 1h}`` on the route;
  one request stores ``/small``, every later one is a fresh hit.
- ``failover-proxy-log``: the access log on (JSON, one line per request, to stderr,
  which the bench sends to a file, as a container runtime would).
- ``failover-proxy-routes-N``: N prefix routes ``/r00001/`` ... ``/r{N:05d}/`` instead
  of ``/``, all to ``[primary, secondary]``; the load goes to ``/r{N:05d}/small``, so
  the route that matches is the last in file order. The upstream maps
  ``/rNNNNN/small`` to ``/small``.
"""

from __future__ import annotations

import cache_targets
import payloads
import targets
from procs import HOST, Children, StartError, expect_body, fetch_with_headers, wait_for_port

TOKEN_ENV = "FAILOVER_ADMIN_TOKEN"
OPEN_BREAKER = "{consecutive_failures: 1, open_for: 1h, max_open_for: 1h}"
HEALTH_CHECK = "{path: /small, interval: 1s, timeout: 500ms}"


def _upstream(name: str, port: int, breaker: str | None = None) -> str:
    text = (
        f"  {name}:\n    url: http://{HOST}:{port}\n    max_connections: 100\n"
        f"    health_check: {HEALTH_CHECK}\n"
    )
    return text + (f"    circuit_breaker: {breaker}\n" if breaker else "")


def full_conf(
    port: int,
    upstream_port: int,
    admin_port: int,
    *,
    primary_port: int | None = None,
    primary_breaker: str | None = None,
    access_log: bool = False,
    routes: int = 0,
) -> str:
    """The config of ``failover-proxy-full``; the keywords make its variants. With
    ``routes``, that many prefix routes replace the one route ``/``; the route is the
    file's last entry either way (``with_cache`` appends to it)."""
    text = (
        f"listen: {{host: {HOST}, port: {port}}}\n"
        f"admin: {{host: {HOST}, port: {admin_port}}}\n"
        f"logging: {{format: json, access_log: {'true' if access_log else 'false'}}}\n"
        "headers: {source: X-Failover-Source, health: X-Failover-Health, "
        "proxy_status: Proxy-Status}\n"
        "upstreams:\n"
        f"{_upstream('primary', primary_port or upstream_port, primary_breaker)}"
        f"{_upstream('secondary', upstream_port)}"
        "routes:\n"
    )
    if not routes:
        return (
            text
            + "  - name: all\n    match: {path_prefix: /}\n    upstreams: [primary, secondary]\n"
        )
    return text + "".join(
        f"  - {{name: r{i:05d}, match: {{path_prefix: /r{i:05d}/}}, "
        "upstreams: [primary, secondary]}\n"
        for i in range(1, routes + 1)
    )


def routes_path(routes: int) -> str:
    """The path the many-routes load goes to: under the last route."""
    return f"/r{routes:05d}{payloads.SMALL_PATH}"


def conf_for(
    name: str, port: int, upstream_port: int, admin_port: int, refused_port: int, routes: int
) -> str:
    """``name`` is failover-proxy-full, -open, -fresh, -log or -routes-N (``routes`` > 0)."""
    if name.endswith("-open"):
        return full_conf(
            port, upstream_port, admin_port, primary_port=refused_port, primary_breaker=OPEN_BREAKER
        )
    if name.endswith("-fresh"):
        return cache_targets.with_cache(
            full_conf(port, upstream_port, admin_port), "{stale_for: 1h, fresh_for: 1h}"
        )
    if name.endswith("-log"):
        return full_conf(port, upstream_port, admin_port, access_log=True)
    return full_conf(port, upstream_port, admin_port, routes=routes)


def start(
    children: Children, name: str, conf_text: str, cpu: int | None, command: str, token: str
) -> targets.Proc:
    return targets.start_failover(
        children, name, conf_text, cpu, command, extra_env={TOKEN_ENV: token}
    )


def ready(
    children: Children,
    name: str,
    proc: targets.Proc,
    port: int,
    admin_port: int,
    token: str,
    timeout: float,
    routes: int = 0,
) -> None:
    """Both listeners up, ``/metrics`` served on the admin one, and the bodies right
    (for the many-routes targets, ``/small`` under the last route; ``/`` is no route)."""
    wait_for_port(proc, port, timeout, children.log_path(name))
    wait_for_port(proc, admin_port, timeout, children.log_path(name))
    expect_metrics(admin_port, token, timeout)
    if routes:
        expect_body(port, routes_path(routes), payloads.SMALL_BODY, timeout)
    elif name.endswith("-fresh"):  # one request stores /small, the next is a hit
        cache_targets.ready_fresh(children, name, proc, port, timeout)
    elif name.endswith("-open"):
        targets.expect_failover(port, "connection_refused", timeout, "first request")
        targets.expect_failover(port, "breaker_open", timeout, "second request")
        expect_body(port, payloads.BIG_PATH, payloads.BIG_BODY, timeout)
    else:
        targets.ready(children, name, proc, port, timeout)


def expect_metrics(admin_port: int, token: str, timeout: float) -> None:
    try:
        status, _, body = fetch_with_headers(
            admin_port, "/metrics", timeout, headers={"Authorization": f"Bearer {token}"}
        )
    except OSError as exc:
        raise StartError(f"GET /metrics on the admin listener failed: {exc!r}") from exc
    if status != 200 or b"failover" not in body:
        raise StartError(f"GET /metrics on the admin listener: {status}, {body[:200]!r}")
