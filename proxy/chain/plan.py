"""The failover chain's decisions: which upstream next, after how long, and what to
answer when none is left. No sockets here; :mod:`proxy.http.walk` does the I/O and asks
this module what to do after every try.

Order (docs/configuration.md, "What happens to a request"): the route's upstreams in
order, each tried up to ``retry.attempts`` times; then the last good answer from the
cache, if younger than the route's ``stale_for``; then the default payload; then the
last upstream's own complete error answer (a 5xx or 429: the application's error body
and ``Retry-After`` are worth more to a client than ours, as nginx and Envoy do); then
503, or 504 when the route's deadline ran out.

On a route with ``on_failure: buffer``, a write (any method but GET, HEAD, OPTIONS and
TRACE) whose upstreams all failed goes to the write buffer (202) before any of that,
when :func:`proxy.buffer.rules.may_buffer` allows it, or gets 502/504 when it does not:
it never meets the cache or the default payload
(:meth:`proxy.http.handler.ProxyHandler.proxy` decides that after the walk). While
such a route has writes queued (``buffer.ordering: strict``), a new one joins the queue
without trying an upstream.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from proxy.chain.errors import NEVER_SENT, Failure
from proxy.chain.headers import FailedHop
from proxy.chain.outcome import Health

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int
    backoff: float
    max_backoff: float
    retry_on: frozenset[Failure]
    non_idempotent: bool

    def may_resend(self, method: str, has_idempotency_key: bool) -> bool:
        """RFC 9110 section 9.2.2: only an idempotent request may be sent twice."""
        return method in IDEMPOTENT_METHODS or has_idempotency_key or self.non_idempotent

    def backoff_delay(self, retry_number: int, uniform: Callable[[float, float], float]) -> float:
        """Exponential backoff with equal jitter: half fixed, half random."""
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** (retry_number - 1))
        return ceiling / 2 + uniform(0, ceiling / 2)


@dataclass(slots=True)  # made per try: a frozen one costs 3x to build
class Step:
    """What to do next: try ``upstream`` after ``delay`` seconds, or stop (None).
    ``retry``: it is the same upstream again (spends its retry budget)."""

    upstream: str | None
    delay: float = 0.0
    retry: bool = False


@dataclass(slots=True)
class FailoverPlan:
    """The state of one request's way through its route's upstreams."""

    upstreams: tuple[str, ...]
    policy: RetryPolicy
    may_resend: bool
    deadline_at: float
    uniform: Callable[[float, float], float] = random.uniform
    hops: list[FailedHop] = field(default_factory=list)
    deadline_exceeded: bool = False
    _index: int = 0
    _tries_here: int = 0

    def first(self) -> Step:
        self._tries_here = 1
        return Step(self.upstreams[0])

    def after_failure(
        self,
        failure: Failure,
        *,
        now: float,
        status: int | None = None,
        retry_after: float | None = None,
        body_replayable: bool = True,
    ) -> Step:
        """Record a failed try on the current upstream and decide the next step."""
        self.hops.append(FailedHop(self.upstreams[self._index], failure, status))
        if failure is Failure.DEADLINE_EXCEEDED or now >= self.deadline_at:
            self.deadline_exceeded = True
            return Step(None)
        if not body_replayable:
            return Step(None)
        if failure not in NEVER_SENT and not self.may_resend:
            return Step(None)
        if failure in self.policy.retry_on and self._tries_here < self.policy.attempts:
            if retry_after is None:
                delay = self.policy.backoff_delay(self._tries_here, self.uniform)
            else:
                delay = retry_after
            if delay <= self.policy.max_backoff and now + delay < self.deadline_at:
                self._tries_here += 1
                return Step(self.upstreams[self._index], delay, retry=True)
        if self._index + 1 < len(self.upstreams):
            self._index += 1
            self._tries_here = 1
            return Step(self.upstreams[self._index])
        return Step(None)

    def health_of(self, upstream: str) -> Health:
        return Health.HEALTHY if upstream == self.upstreams[0] else Health.DEGRADED


class Final(Enum):
    """The answer when no upstream gave a good one."""

    STALE = "stale"
    DEFAULT = "default"
    PASS_THROUGH = "pass_through"
    UNAVAILABLE = 503
    TIMEOUT = 504


def final_answer(
    *, has_stale: bool, has_default: bool, last_answer_complete: bool, deadline_exceeded: bool
) -> Final:
    if has_stale:
        return Final.STALE
    if has_default:
        return Final.DEFAULT
    if last_answer_complete:
        return Final.PASS_THROUGH
    return Final.TIMEOUT if deadline_exceeded else Final.UNAVAILABLE
