"""Our ``Cache-Status`` member (RFC 9211), every form of it in one place: what the cache
did for an answer, written after the members of caches upstream of us (section 2).

The parameters used: ``hit`` (section 2.1: served from the store without going
upstream), ``fwd`` (2.2: why the request went upstream, ``uri-miss`` or ``stale``),
``fwd-status`` (2.3: the status the upstream answered), ``stored`` (2.5: that answer
was kept), ``collapsed`` (2.6: it shared another request's upstream call) and
``detail`` (2.8: ``revalidating`` while a stale copy is refreshed behind).
"""

from __future__ import annotations

from proxy.chain.headers import PROXY_NAME as NAME

HIT = f"{NAME}; hit"
STALE = f"{NAME}; hit; stale"  # every upstream failed; served as the last good copy
REVALIDATING = f"{STALE}; detail=revalidating"  # stale-while-revalidate
COLLAPSED = f"{NAME}; fwd=uri-miss; collapsed"


def forwarded(because: str, status: int, *, stored: bool) -> str:
    """The request went upstream (``because``: ``uri-miss`` or ``stale``), which answered
    ``status``; ``stored``: that answer is now the route's last good copy."""
    return f"{NAME}; fwd={because}; fwd-status={status}{'; stored' if stored else ''}"
