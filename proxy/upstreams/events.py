"""State changes of an upstream, kept where the metrics and ``/health`` can read them.

Every change (circuit transitions, health-check up/down, cooldown start and end, quota
warnings) is recorded once: logged at WARNING, counted by kind, and kept in a short
history of the most recent ones.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("failover_proxy")

HISTORY = 100


@dataclass(frozen=True, slots=True)
class Event:
    at: float
    upstream: str
    kind: str  # e.g. "circuit_open", "check_down", "cooldown_start", "quota_90"
    detail: str


class EventLog:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.counts: Counter[tuple[str, str]] = Counter()  # (upstream, kind)
        self.recent: deque[Event] = deque(maxlen=HISTORY)

    def record(self, upstream: str, kind: str, detail: str) -> None:
        event = Event(self._clock(), upstream, kind, detail)
        self.counts[upstream, kind] += 1
        self.recent.append(event)
        log.warning(
            "upstream %s: %s (%s)",
            upstream,
            kind.replace("_", " "),
            detail,
            extra={"fields": {"event": kind, "upstream": upstream, "detail": detail}},
        )
