"""The write buffer's decisions, free of I/O: which failed writes may be buffered, what
a replayed write's answer means, and how long to wait before the next replay."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from proxy.chain.errors import NEVER_SENT
from proxy.chain.headers import FailedHop

READS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
NOT_PROCESSED = frozenset({503, 429})  # by convention refused before any processing
RETRYABLE_4XX = frozenset({408, 409, 425, 429})
FINAL_5XX = frozenset({501, 505})  # not implemented, version not supported: no retry helps


def not_applied(hops: Iterable[FailedHop]) -> bool:
    """Whether every failed try proves the write was not applied: it never left
    (refused, DNS, connect timeout, TLS, or skipped: breaker, cooldown, quota), or the
    upstream refused it with 503 or 429."""
    return all(hop.failure in NEVER_SENT or hop.status in NOT_PROCESSED for hop in hops)


def may_buffer(method: str, hops: Iterable[FailedHop], has_idempotency_key: bool) -> bool:
    """A write that failed everywhere may be kept for replay when it was surely not
    applied, or when the client's Idempotency-Key makes a second application harmless.
    Otherwise it may have been applied: replaying it could apply it twice."""
    if method in READS:
        return False
    return has_idempotency_key or not_applied(hops)


class Verdict(Enum):
    DELIVERED = "delivered"  # a 2xx: it leaves the journal
    DEAD = "dead"  # retrying cannot fix it: to the dead letters, the answer kept
    RETRY = "retry"  # later, with backoff


def final(status: int) -> bool:
    """Whether the upstream's answer to a replayed write is the application's verdict
    on that write, one that sending it again cannot change: ``501`` and ``505`` (the
    method or the version will not be supported a minute later), and every 4xx but
    the ones that mean "not now" (408, 409, 425, 429). Such an answer is not an outage
    of the upstream, so it does not count against its breaker either."""
    if status in FINAL_5XX:
        return True
    return 400 <= status < 500 and status not in RETRYABLE_4XX


def verdict(status: int) -> Verdict:
    """What a replayed write's answer means (a failure status or no answer: RETRY)."""
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if final(status) or status < 200 or 300 <= status < 400:
        return Verdict.DEAD  # and 1xx/3xx, which a replay cannot act on
    return Verdict.RETRY  # other 5xx, and 4xx that mean "not now"


def replay_backoff(failures: int, first: float, cap: float) -> float:
    """Doubling from ``first`` per failed replay in a row, capped."""
    return min(cap, first * 2.0 ** max(0, failures - 1))
