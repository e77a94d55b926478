"""The two failover-proxy targets whose every measured answer comes from its cache.

Each adds a ``cache`` to the route of the config it is compared with, so that its
ratio shows what the cache path costs or saves:

- ``failover-proxy-stale``: the plain ``failover-proxy`` config (one upstream
  ``primary`` with ``max_connections: 100``, one route ``all``) with
  ``cache: {stale_for: 1h}``, and ``primary`` is an upstream of its own (the same kind
  as the shared one) that serves one ``GET /small`` through the proxy, which stores
  it, and is then stopped: its port refuses connections, as when every upstream is
  down. ``primary`` keeps the default circuit breaker, so the
  first five refusals open it and from then on each request skips ``primary`` without
  a connection attempt (``breaker_open``) and is answered from the stale cache.
- ``failover-proxy-fresh``: ``failover-proxy-full``'s config (``full_targets.py``) with
  ``cache: {stale_for: 1h, fresh_for: 1h}``, in front of the shared upstream; one
  ``GET /small`` stores the answer, and every later one is a fresh hit served without
  asking an upstream.

Before any load one request must show that path (``X-Failover-Source: cache`` and the
``Cache-Status`` of a stale or a fresh hit, the exact body), and after the runs one
more must still show it; otherwise the target fails with ``StartError``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import payloads
import targets
from procs import Children, StartError, fetch_with_headers, wait_for_port

STALE_HIT = "failover-proxy; hit; stale"
FRESH_HIT = "failover-proxy; hit"


def with_cache(conf_text: str, cache: str) -> str:
    """``conf_text`` with ``cache`` on its route, which is the config's last entry."""
    return f"{conf_text}    cache: {cache}\n"


def failover_proxy_stale_conf(port: int, upstream_port: int) -> str:
    return with_cache(targets.failover_proxy_conf(port, upstream_port), "{stale_for: 1h}")


def start_failover_proxy_stale(
    children: Children, name: str, port: int, own_upstream_port: int, cpu: int | None, command: str
) -> targets.Proc:
    """The proxy only: its upstream is started, used and stopped by ``ready_stale``."""
    conf = failover_proxy_stale_conf(port, own_upstream_port)
    return targets.start_failover(children, name, conf, cpu, command)


def ready_stale(
    children: Children,
    name: str,
    proc: targets.Proc,
    port: int,
    upstream_kind: str,
    upstream_port: int,
    upstream_cpu: int | None,
    timeout: float,
) -> None:
    """Start the proxy's own upstream, store ``/small`` through the proxy, stop the
    upstream, and check that the next ``/small`` is the stale copy."""
    wait_for_port(proc, port, timeout, children.log_path(name))
    # Its own Children (and directory): stopped here, whatever happens, not at the end.
    scratch = Children(Path(tempfile.mkdtemp(prefix=f"{name}-upstream-", dir=children.log_dir)))
    try:
        upstream = targets.start_upstream(scratch, upstream_kind, upstream_port, upstream_cpu)
        targets.ready(scratch, "upstream", upstream, upstream_port, timeout)
        expect_answer(port, "primary", None, timeout, "warm-up request (upstream up)")
    finally:
        scratch.stop_all()
    expect_answer(port, "cache", STALE_HIT, timeout, "first request with the upstream stopped")


def ready_fresh(
    children: Children, name: str, proc: targets.Proc, port: int, timeout: float
) -> None:
    """Store ``/small`` with one request; the next one must be a fresh hit."""
    wait_for_port(proc, port, timeout, children.log_path(name))
    expect_answer(port, "primary", None, timeout, "warm-up request")
    expect_answer(port, "cache", FRESH_HIT, timeout, "request after the warm-up")


def expect_answer(
    port: int, source: str, cache_status: str | None, timeout: float, which: str
) -> None:
    """One ``GET /small``: 200, the exact body, ``X-Failover-Source: source`` and, unless
    ``cache_status`` is None, exactly that ``Cache-Status``."""
    try:
        status, headers, body = fetch_with_headers(port, payloads.SMALL_PATH, timeout)
    except OSError as exc:
        raise StartError(f"{which}: GET {payloads.SMALL_PATH} failed: {exc!r}") from exc
    got_source = headers.get("X-Failover-Source", "")
    got_cache = headers.get("Cache-Status", "")
    if (
        status != 200
        or body != payloads.SMALL_BODY
        or got_source != source
        or (cache_status is not None and got_cache != cache_status)
    ):
        want = f"X-Failover-Source: {source}"
        if cache_status is not None:
            want += f" and Cache-Status: {cache_status}"
        raise StartError(
            f"{which}: want 200 with the exact body, {want}; got {status}, {len(body)} bytes, "
            f"X-Failover-Source: {got_source!r}, Cache-Status: {got_cache!r}, "
            f"Proxy-Status: {headers.get('Proxy-Status', '')!r}"
        )
