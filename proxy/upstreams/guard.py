"""Whether an upstream is tried at all: its circuit breaker, a ``Retry-After`` cooldown,
its concurrency limit, its quota and its retry budget, kept together per upstream.
Pure: an injected clock, no I/O.

``admit()`` either lets a call through (a :class:`Ticket`) or names why the upstream is
skipped (``breaker_open``, ``cooling_down``, ``overloaded``, ``quota_exhausted``,
``retry_budget_exhausted``): the failover chain then moves to the next upstream at
once, without a connection attempt.
``finish()`` reports how the call went, which is where the rules on what counts live:

- a failure the route counts (5xx, timeouts, connection errors, a body cut short)
  counts against the breaker;
- a ``429`` or ``503`` carrying ``Retry-After`` starts a cooldown (capped at
  ``max_cooldown``) instead, and does not count: the upstream told us when to return;
- a 4xx other than 429 is an answer, and counts as a success;
- a deadline cut short by the route's own budget, or a client that went away, does
  not count either way;
- a replayed write's answer that retrying cannot change (a 501) is the application's
  verdict on the write: the replay reports it as an answer (``failure`` None).

A replay is admitted with ``background=True``: it takes no half-open probe a client
could take (:mod:`proxy.upstreams.breaker` says when it may).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from proxy.chain.errors import Failure
from proxy.config.runtime import UpstreamSettings
from proxy.upstreams.breaker import CircuitBreaker, Permit, State, Transition
from proxy.upstreams.budget import RetryBudget
from proxy.upstreams.events import EventLog
from proxy.upstreams.quota import Quota

_NOT_COUNTED = frozenset({Failure.DEADLINE_EXCEEDED})


@dataclass(slots=True)  # made per call: a frozen one costs 3x to build
class Ticket:
    started: float  # 0.0 unless the breaker watches for slow calls
    permit: Permit | None  # None when the upstream has no breaker


class UpstreamGuard:
    def __init__(
        self,
        settings: UpstreamSettings,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float] = time.time,
        events: EventLog | None = None,
    ) -> None:
        self.name = name = settings.name
        self._clock = clock
        self.events = events or EventLog(clock)
        self.breaker = (
            CircuitBreaker(settings.breaker, clock, on_transition=self._on_transition)
            if settings.breaker
            else None
        )
        self.max_concurrent = settings.max_concurrent
        self.max_cooldown = settings.max_cooldown
        self.cooldown_until = 0.0
        self._cooling = False
        self.in_flight = 0
        self.quota = (
            Quota(name, settings.quota, wall_clock, self.events) if settings.quota else None
        )
        self.retry_budget = RetryBudget(settings.retry_budget, clock)
        # Call durations matter only to a breaker that watches for slow calls.
        self._timed = (
            settings.breaker is not None and settings.breaker.slow_call_duration is not None
        )
        self._untimed = Ticket(0.0, None)
        self.check_healthy = True
        self._check_passes = 0
        self._check_failures = 0
        self.check_results: Counter[bool] = Counter()
        self.last_check: tuple[bool, str, float] | None = None  # passed, detail, wall time
        self._wall_clock = wall_clock
        # An operator's decision (admin API): OPEN skips the upstream whatever happens,
        # CLOSED calls it whatever its breaker and health checks say; None: automatic.
        self.pinned: State | None = None
        self.pinned_since = 0.0

    def pin(self, state: State | None, reason: str) -> None:
        """Force the circuit open or closed until told ``None`` (back to automatic)."""
        self.pinned = state
        self.pinned_since = self._clock()
        kind = "circuit_automatic" if state is None else f"circuit_forced_{state}"
        self.events.record(self.name, kind, reason)
        if state is None and self.breaker is not None:
            self.breaker.force(State.CLOSED, reason)  # it learns again from a clean window

    def admit(self, *, retry: bool = False, background: bool = False) -> Ticket | Failure:
        """``retry``: the same request tried here again, which spends the retry budget.
        ``background``: no client waits for the call (a buffered write's replay): it
        does not take a half-open probe a client could take (see :mod:`proxy.upstreams.breaker`)."""
        pinned = self.pinned
        if pinned is not None:
            if pinned is State.OPEN:
                return Failure.BREAKER_OPEN
        elif not self.check_healthy:
            return Failure.BREAKER_OPEN
        if self._cooling:
            if self._clock() < self.cooldown_until:
                return Failure.COOLING_DOWN
            self._cooling = False
            self.events.record(self.name, "cooldown_end", "Retry-After has passed")
        if self.max_concurrent is not None and self.in_flight >= self.max_concurrent:
            return Failure.OVERLOADED
        permit = None
        if self.breaker is not None and pinned is None:
            permit = self.breaker.acquire(background=background)
            if permit is None:
                return Failure.BREAKER_OPEN
        refusal = self._spend(retry)
        if refusal is not None:
            if permit is not None and self.breaker is not None:
                self.breaker.release(permit)
            return refusal
        self.in_flight += 1
        if self._timed:
            return Ticket(self._clock(), permit)
        if permit is not self._untimed.permit:  # one shared ticket per breaker generation
            self._untimed = Ticket(0.0, permit)
        return self._untimed

    def _spend(self, retry: bool) -> Failure | None:
        if retry and not self.retry_budget.try_retry():
            return Failure.RETRY_BUDGET_EXHAUSTED
        if self.quota is not None and not self.quota.try_spend():
            return Failure.QUOTA_EXHAUSTED
        if not retry:
            self.retry_budget.record_request()
        return None

    def circuit(self, now: float | None = None) -> State:
        """The circuit as a call at ``now`` (by default, now) would find it: an open
        circuit whose time is up is half open, since the breaker moves only when the next
        call asks, which an idle route never does. A failing health check holds it open."""
        if self.pinned is not None:
            return self.pinned
        if not self.check_healthy:
            return State.OPEN
        breaker = self.breaker
        if breaker is None:
            return State.CLOSED
        now = self._clock() if now is None else now
        if breaker.state is State.OPEN and now >= breaker.open_until:
            return State.HALF_OPEN
        return breaker.state

    def skipping(self) -> bool:
        """Whether a call now would be skipped for the upstream's health (not its load):
        an open circuit, or a ``Retry-After`` cooldown the operator has not overridden.
        ``/health``, the cache's hits and the route-health rule all ask this."""
        if self.pinned is None and self._cooling and self._clock() < self.cooldown_until:
            return True
        return self.circuit() is State.OPEN

    def finish(
        self,
        ticket: Ticket,
        failure: Failure | None,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Report a call's end; ``failure`` None means the upstream answered acceptably."""
        self.in_flight -= 1
        if status in (429, 503) and retry_after is not None:
            self._cool_down(retry_after)
            self._release(ticket)
        elif failure in _NOT_COUNTED:
            self._release(ticket)
        elif self.breaker is not None and ticket.permit is not None:
            duration = self._clock() - ticket.started if self._timed else 0.0
            self.breaker.record(ticket.permit, failed=failure is not None, duration=duration)

    def abandon(self, ticket: Ticket) -> None:
        """The call ended for a reason that says nothing about the upstream."""
        self.in_flight -= 1
        self._release(ticket)

    def check_result(
        self, passed: bool, detail: str, *, healthy_threshold: int, unhealthy_threshold: int
    ) -> None:
        """An active health check's result: enough failures in a row hold the circuit open
        before users pay for it; enough passes in a row close it (Envoy's semantics)."""
        self.check_results[passed] += 1
        self.last_check = (passed, detail, self._wall_clock())
        if passed:
            self._check_failures = 0
            self._check_passes += 1
            if not self.check_healthy and self._check_passes >= healthy_threshold:
                self.check_healthy = True
                reason = f"health check passed {self._check_passes} times in a row"
                self.events.record(self.name, "check_up", reason)
                if self.breaker is not None:
                    self.breaker.force(State.CLOSED, reason)
            return
        self._check_passes = 0
        self._check_failures += 1
        if self.check_healthy and self._check_failures >= unhealthy_threshold:
            self.check_healthy = False
            reason = f"health check failed {self._check_failures} times in a row ({detail})"
            self.events.record(self.name, "check_down", reason)
            if self.breaker is not None and self.breaker.state is not State.OPEN:
                self.breaker.force(State.OPEN, reason)

    def _release(self, ticket: Ticket) -> None:
        if self.breaker is not None and ticket.permit is not None:
            self.breaker.release(ticket.permit)

    def _cool_down(self, seconds: float) -> None:
        seconds = min(seconds, self.max_cooldown)
        until = self._clock() + seconds
        if until > self.cooldown_until:
            if not self._cooling:
                self._cooling = True
                self.events.record(self.name, "cooldown_start", f"Retry-After {seconds:g}s")
            self.cooldown_until = until

    def _on_transition(self, transition: Transition) -> None:
        self.events.record(self.name, f"circuit_{transition.to_state}", transition.reason)
