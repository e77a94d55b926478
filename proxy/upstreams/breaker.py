"""The circuit breaker of one upstream: a pure state machine with an injected clock.

CLOSED   calls flow; each outcome goes into a sliding window (the last N calls, or the
         calls of the last T seconds). The circuit opens when, over at least
         ``min_calls``, the failure rate reaches ``failure_rate``, or the rate of calls
         slower than ``slow_call_duration`` reaches ``slow_call_rate``; or at once when
         ``consecutive_failures`` failures come in a row.
OPEN     calls are refused without trying. After ``open_for`` it turns HALF_OPEN. Each
         trip in a row multiplies ``open_for`` by ``multiplier`` (capped at
         ``max_open_for``), with +-``jitter`` so a fleet of sidecars does not probe in step.
HALF_OPEN at most ``half_open_probes`` calls are in flight at once; the rest are refused
         as if open. When that many probes have succeeded: CLOSED, window cleared, trip
         count reset. Any probe fails: OPEN again, for longer.

Background calls (a buffered write's replay, ``acquire(background=True)``) go through a
closed circuit like any other, but do not take a probe away from client traffic: they
may probe only once the open time has been up for ``open_for`` (the configured base)
with no client call probing in that time. Otherwise a replay that keeps failing (a
write the upstream refuses) would take every probe, and each failure would re-open the
circuit for twice as long while client requests that would have succeeded never got
to probe it.

Modelled on Resilience4j's CircuitBreaker (count/time windows, slow calls, bounded
half-open permits) and Envoy's outlier detection (consecutive failures, growing
ejection time). Every transition is handed to ``on_transition``: the seam for logs,
metrics and ``/health``. A call admitted in one state whose outcome arrives after the
state changed is ignored (its evidence is about a circuit that no longer exists).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    window_calls: int | None = 20  # a count window, or:
    window_seconds: float | None = None  # a time window (exactly one of the two is set)
    min_calls: int = 10
    failure_rate: float = 0.5
    consecutive_failures: int = 5
    slow_call_duration: float | None = None
    slow_call_rate: float = 1.0
    open_for: float = 30.0
    max_open_for: float = 300.0
    multiplier: float = 2.0
    jitter: float = 0.1
    half_open_probes: int = 3


@dataclass(frozen=True, slots=True)
class Transition:
    from_state: State
    to_state: State
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave to make one call; ``generation`` ties its outcome to the state that let it in."""

    generation: int
    probe: bool


class CircuitBreaker:
    def __init__(
        self,
        settings: BreakerSettings,
        clock: Callable[[], float],
        *,
        uniform: Callable[[float, float], float] = random.uniform,
        on_transition: Callable[[Transition], None] | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._uniform = uniform
        self._on_transition = on_transition
        self.state = State.CLOSED
        self.since = clock()
        self.open_until = 0.0
        self.trips_in_a_row = 0
        self._generation = 0
        self._window: deque[tuple[float, bool, bool]] = deque()  # (time, failed, slow)
        self._failures = 0
        self._slow = 0
        self._consecutive = 0
        self._probes_in_flight = 0
        self._probes_succeeded = 0
        self._closed_permit = Permit(self._generation, probe=False)
        self._client_probed_at = 0.0  # when a client call last took a half-open probe

    # -- admission -----------------------------------------------------------------

    def acquire(self, *, background: bool = False) -> Permit | None:
        """A permit to call, or None: the circuit refuses (``breaker_open``).
        ``background``: a call no client waits for, which probes only a quiet circuit."""
        if self.state is State.OPEN:
            now = self._clock()
            if now < self.open_until or (background and not self._quiet(now)):
                return None
            self._move(State.HALF_OPEN, f"open for {self._open_duration_text()}")
        if self.state is State.HALF_OPEN:
            if self._probes_in_flight >= self.settings.half_open_probes:
                return None
            if background:
                if not self._quiet(self._clock()):
                    return None
            else:
                self._client_probed_at = self._clock()
            self._probes_in_flight += 1
            return Permit(self._generation, probe=True)
        return self._closed_permit  # one per generation: nothing to allocate per call

    def _quiet(self, now: float) -> bool:
        """Whether the circuit's open time has been up for ``open_for`` with no client
        call probing it: then no client is kept from a probe by a background call."""
        return now - max(self.open_until, self._client_probed_at) >= self.settings.open_for

    def release(self, permit: Permit) -> None:
        """The permit's call ended without an outcome that counts (e.g. the client left)."""
        if permit.probe and permit.generation == self._generation:
            self._probes_in_flight -= 1

    # -- outcomes ------------------------------------------------------------------

    def record(self, permit: Permit, *, failed: bool, duration: float) -> None:
        if permit.generation != self._generation:
            return
        if permit.probe:
            self._probes_in_flight -= 1
            if failed:
                self._trip("a half-open probe failed")
                return
            self._probes_succeeded += 1
            if self._probes_succeeded >= self.settings.half_open_probes:
                self.trips_in_a_row = 0
                self._move(State.CLOSED, f"{self._probes_succeeded} probes succeeded")
            return
        slow = self._add(failed, duration)
        # In a count window a fast success replaces one old call and cannot raise either
        # rate, unless it brings the window up to min_calls; in a time window, evictions
        # can raise them, so every outcome is checked.
        if (
            failed
            or slow
            or self.settings.window_calls is None
            or len(self._window) == self.settings.min_calls
        ):
            reason = self._trip_reason()
            if reason:
                self._trip(reason)

    def _add(self, failed: bool, duration: float) -> bool:
        settings = self.settings
        slow = settings.slow_call_duration is not None and duration >= settings.slow_call_duration
        now = self._clock() if settings.window_calls is None else 0.0  # only time windows ask
        self._window.append((now, failed, slow))
        self._failures += failed
        self._slow += slow
        self._consecutive = self._consecutive + 1 if failed else 0
        window = self._window
        if settings.window_calls is not None:
            while len(window) > settings.window_calls:
                self._forget(window.popleft())
        else:
            horizon = now - (settings.window_seconds or 0.0)
            while window and window[0][0] <= horizon:
                self._forget(window.popleft())
        return slow

    def _forget(self, entry: tuple[float, bool, bool]) -> None:
        self._failures -= entry[1]
        self._slow -= entry[2]

    def _trip_reason(self) -> str | None:
        settings = self.settings
        if self._consecutive >= settings.consecutive_failures:
            return f"{self._consecutive} failures in a row"
        calls = len(self._window)
        if calls < settings.min_calls:
            return None
        if self._failures / calls >= settings.failure_rate:
            return f"{self._failures} of the last {calls} calls failed"
        slow_rate = self._slow / calls
        if settings.slow_call_duration is not None and slow_rate >= settings.slow_call_rate:
            return f"{self._slow} of the last {calls} calls were slow"
        return None

    # -- transitions ---------------------------------------------------------------

    def _open_duration(self) -> float:
        settings = self.settings
        base = settings.open_for * settings.multiplier ** max(0, self.trips_in_a_row - 1)
        capped = min(settings.max_open_for, base)
        return capped * (1 + self._uniform(-settings.jitter, settings.jitter))

    def _open_duration_text(self) -> str:
        return f"{self.open_until - self.since:.1f}s"

    def _trip(self, reason: str) -> None:
        self.trips_in_a_row += 1
        now = self._clock()
        self._move(State.OPEN, reason)
        self.open_until = now + self._open_duration()

    def force(self, state: State, reason: str) -> None:
        """An operator's decision (the admin API): open or close the circuit now."""
        if state is State.OPEN:
            self.trips_in_a_row += 1
            self._move(State.OPEN, reason)
            self.open_until = self._clock() + self._open_duration()
        else:
            self.trips_in_a_row = 0
            self._move(state, reason)

    def _move(self, to_state: State, reason: str) -> None:
        transition = Transition(self.state, to_state, reason, self._clock())
        self.state = to_state
        self.since = transition.at
        self._generation += 1
        self._window.clear()
        self._failures = self._slow = self._consecutive = 0
        self._probes_in_flight = self._probes_succeeded = 0
        self._closed_permit = Permit(self._generation, probe=False)
        if self._on_transition is not None:
            self._on_transition(transition)
