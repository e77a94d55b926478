"""Reading our ``Proxy-Status`` in the demo: which upstream failed on the way, and why."""

from __future__ import annotations

from collections.abc import Iterator

HTTP_FAILURES = frozenset({"http_5xx", "http_429", "http_status"})  # shown as their status


def failed_hops(proxy_status: str) -> Iterator[tuple[str, str]]:
    """``(upstream, why)`` per member of our ``Proxy-Status``: the status it answered
    with, else the failure class (``read_timeout``, ``invalid_response``, ...)."""
    for member in proxy_status.split(","):
        params = dict(
            part.strip().partition("=")[::2] for part in member.split(";")[1:] if "=" in part
        )
        upstream = params.get("next-hop", "").strip('"')
        details = params.get("details", "").strip('"')
        status = params.get("received-status")
        why = status if status and details in HTTP_FAILURES else details
        if upstream and why:
            yield upstream, why
