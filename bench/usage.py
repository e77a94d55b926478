"""CPU time and resident memory of a benchmarked server, read from ``/proc``.

A server is everything in its process group: ``Children.start`` gives each child its own
session, so the group is the server's pid, and nginx's worker is counted with its
master (the master is idle; the worker does the work). ``taskset`` and ``env`` exec,
so a failover-proxy started through them is the group leader itself.

CPU time is ``utime + stime`` (fields 14 and 15 of ``/proc/<pid>/stat``, in clock
ticks, every thread included), RSS is field 24 (pages). Read before and after a load
run, the CPU difference divided by the requests wrk completed is the server's CPU time
per request. On a shared machine that figure holds much steadier than req/s: a
neighbour that steals the core lowers req/s, but the work each request needs stays
the same.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
PROC = Path("/proc")


@dataclass(frozen=True)
class Usage:
    cpu_s: float  # user + system, summed over the group
    rss_bytes: int  # resident set, summed over the group
    processes: int


def available() -> bool:
    return (PROC / "self" / "stat").exists()


def group_usage(pgid: int) -> Usage | None:
    """CPU time and RSS of every live process in process group ``pgid``; None without
    /proc or when the group has no process left."""
    if not available():
        return None
    cpu_ticks = rss_pages = count = 0
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry / "stat")
        # fields[0] is field 3 (state): field n is fields[n - 3]
        if fields is None or len(fields) < 22 or int(fields[2]) != pgid:
            continue
        cpu_ticks += int(fields[11]) + int(fields[12])
        rss_pages += int(fields[21])
        count += 1
    if not count:
        return None
    return Usage(cpu_ticks / _TICK, rss_pages * _PAGE, count)


def _stat_fields(path: Path) -> list[str] | None:
    try:
        text = path.read_text()
    except OSError:  # gone meanwhile, or not ours to read
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ")".
    return text[text.rfind(")") + 2 :].split()
