"""The targets ``run.py`` measures, by name, and which comparison each one is for.

``failover-proxy`` is the plain one-upstream config every earlier run of this bench
measured (kept so that figures stay comparable over time, and shared with
``instructions.py`` and ``buffer.py``). ``failover-proxy-full`` is the proxy as a user
would configure it, every feature on; the issue-14 targets judge that one, and the
open-breaker, fresh-hit, access-log and many-routes targets are variants of it.
"""

from __future__ import annotations

DIRECT = "direct"
PROXY = "failover-proxy"
PROXY_FULL = "failover-proxy-full"
PROXY_OPEN = "failover-proxy-open"
PROXY_STALE = "failover-proxy-stale"
PROXY_FRESH = "failover-proxy-fresh"
PROXY_LOG = "failover-proxy-log"
BARE = "bare-aiohttp"
NGINX = "nginx"

# Many routes, the matching one last in file order: name -> number of routes.
ROUTES = {
    "failover-proxy-routes-10": 10,
    "failover-proxy-routes-1000": 1000,
    "failover-proxy-routes-10000": 10000,
}
ROUTES_FEW, ROUTES_MID, ROUTES_MANY = ROUTES

# The order they run in, in every round: each variant next to what it is divided by,
# so that every ratio compares targets measured close together in time.
TARGETS = (
    DIRECT, PROXY_STALE, PROXY, PROXY_FULL, PROXY_OPEN, PROXY_FRESH, PROXY_LOG,
    BARE, NGINX, *ROUTES,
)  # fmt: skip

# Every failover-proxy target (their RSS is reported).
FAILOVER = (PROXY, PROXY_FULL, PROXY_OPEN, PROXY_STALE, PROXY_FRESH, PROXY_LOG, *ROUTES)

# About the per-request path: no 1 MiB run.
PER_REQUEST = (PROXY_OPEN, PROXY_STALE, PROXY_FRESH)
# Compared with failover-proxy-full at -c 50 only: one run each.
THROUGHPUT_ONLY = (PROXY_LOG, *ROUTES)

# Same-proxy comparisons: (variant, reference, what the variant measures).
VARIANTS = (
    (PROXY_OPEN, PROXY_FULL, "open-breaker path"),
    (PROXY_FRESH, PROXY_FULL, "fresh_for hits"),
    (PROXY_STALE, PROXY, "every answer from the stale cache"),
    (PROXY_LOG, PROXY_FULL, "access log on"),
    (ROUTES_MID, ROUTES_FEW, "1,000 routes over 10, the match last"),
    (ROUTES_MANY, ROUTES_FEW, "10,000 routes over 10, the match last"),
)
