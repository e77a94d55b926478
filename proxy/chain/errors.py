"""The failure taxonomy that drives failover, retries and ``Proxy-Status``.

One flat enum of failure classes, and the rules that speak in them (which statuses fail,
which failures were never sent, how ``Proxy-Status`` names them). What aiohttp and
asyncio raise is turned into a class beside the client, by
:func:`proxy.upstreams.exceptions.classify_exception` (the ``map_exceptions`` idea of
httpcore), so this module needs no network library. Every other module speaks in these
classes, never in exception types.
"""

from __future__ import annotations

from enum import StrEnum


class Failure(StrEnum):
    CONNECTION_REFUSED = "connection_refused"
    CONNECTION_RESET = "connection_reset"
    CONNECTION_ERROR = "connection_error"  # could not connect, for another reason
    DNS_ERROR = "dns_error"
    CONNECT_TIMEOUT = "connect_timeout"
    READ_TIMEOUT = "read_timeout"
    TLS_ERROR = "tls_error"
    HTTP_5XX = "http_5xx"
    HTTP_429 = "http_429"
    HTTP_STATUS = "http_status"  # another status the route counts as failure
    BODY_TRUNCATED = "body_truncated"
    PROTOCOL_ERROR = "protocol_error"  # the upstream spoke broken HTTP
    INVALID_RESPONSE = "invalid_response"  # an answer that failed the route's validation
    DEADLINE_EXCEEDED = "deadline_exceeded"
    # Skips: the upstream was not tried at all.
    BREAKER_OPEN = "breaker_open"
    COOLING_DOWN = "cooling_down"
    OVERLOADED = "overloaded"
    QUOTA_EXHAUSTED = "quota_exhausted"
    RETRY_BUDGET_EXHAUSTED = "retry_budget_exhausted"


SKIPPED = frozenset(
    {
        Failure.BREAKER_OPEN,
        Failure.COOLING_DOWN,
        Failure.OVERLOADED,
        Failure.QUOTA_EXHAUSTED,
        Failure.RETRY_BUDGET_EXHAUSTED,
    }
)
"""The upstream was passed over without a connection: move on at once, never retry it."""


NEVER_SENT = SKIPPED | {
    Failure.CONNECTION_REFUSED,
    Failure.CONNECTION_ERROR,
    Failure.DNS_ERROR,
    Failure.CONNECT_TIMEOUT,
    Failure.TLS_ERROR,
}
"""Failures that prove the request never reached the upstream: any method may move on."""

RETRY_GROUPS: dict[str, frozenset[Failure]] = {
    "connect_error": NEVER_SENT - SKIPPED - {Failure.CONNECT_TIMEOUT},
    "timeout": frozenset({Failure.CONNECT_TIMEOUT, Failure.READ_TIMEOUT}),
    "reset": frozenset({Failure.CONNECTION_RESET, Failure.BODY_TRUNCATED, Failure.PROTOCOL_ERROR}),
    "5xx": frozenset({Failure.HTTP_5XX, Failure.HTTP_STATUS}),
    "429": frozenset({Failure.HTTP_429}),
    "invalid": frozenset({Failure.INVALID_RESPONSE}),
}
"""The names a route's ``retry.on`` may use, and the classes each stands for."""

# RFC 9209 section 2.3 proxy error types; statuses carry received-status instead.
_PROXY_STATUS_ERROR = {
    Failure.CONNECTION_REFUSED: "connection_refused",
    Failure.CONNECTION_RESET: "connection_terminated",
    Failure.CONNECTION_ERROR: "destination_unavailable",
    Failure.DNS_ERROR: "dns_error",
    Failure.CONNECT_TIMEOUT: "connection_timeout",
    Failure.READ_TIMEOUT: "http_response_timeout",
    Failure.TLS_ERROR: "tls_protocol_error",
    Failure.BODY_TRUNCATED: "http_response_incomplete",
    Failure.PROTOCOL_ERROR: "http_protocol_error",
    Failure.DEADLINE_EXCEEDED: "http_response_timeout",
    Failure.BREAKER_OPEN: "destination_unavailable",
    Failure.COOLING_DOWN: "destination_unavailable",
    Failure.OVERLOADED: "connection_limit_reached",
    Failure.QUOTA_EXHAUSTED: "destination_unavailable",
    Failure.RETRY_BUDGET_EXHAUSTED: "destination_unavailable",
}


def proxy_status_error(failure: Failure) -> str | None:
    """The RFC 9209 error type for ``failure``; None for failures that are an HTTP status."""
    return _PROXY_STATUS_ERROR.get(failure)


def classify_status(status: int, failure_statuses: frozenset[int]) -> Failure | None:
    if status not in failure_statuses:
        return None
    if status == 429:
        return Failure.HTTP_429
    return Failure.HTTP_5XX if status >= 500 else Failure.HTTP_STATUS
