"""What the write buffer reports: its status and its dead letters, in the one JSON form
``/health``, the admin API and the metrics share. Plain records: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from proxy.buffer.journal import Entry


@dataclass(frozen=True, slots=True)
class BufferStatus:
    """What waits in the buffer now: read by ``/health`` (and its advice), the admin API
    and the metrics; :meth:`BufferStatus.json` is the one JSON form of it."""

    depth: int  # writes waiting to be replayed (dead letters not counted)
    bytes: int  # journal frames still held, dead letters included
    max_bytes: int
    oldest_age_s: float | None  # the oldest waiting write's age
    by_route: dict[str, int]  # routes with writes waiting -> how many
    delivered_last_minute: int
    failed_replays_last_minute: int
    dead_letters: int

    def json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def dead_letter_json(live: Entry) -> dict[str, Any]:
    """A dead letter as ``GET /admin/buffer`` lists it: the write, and the answer that
    made it one."""
    write = live.write
    return {
        "id": write.id,
        "route": write.route,
        "method": write.method,
        "target": write.target,
        "idempotency_key": write.idempotency_key,
        "arrived": write.arrived,
        "answer": live.dead,
    }
