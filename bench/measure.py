"""One bounded load run against one URL, with wrk or the Python fallback.

wrk is the load generator of record: ``wrk -t1 -cN -dDs --latency URL``, one thread
pinned to its own CPU, and we parse its text report (``Requests/sec``, the ``50%`` and
``99%`` lines of the latency distribution, ``Transfer/sec``, and the error counters,
which matter: a proxy answering 502 quickly would otherwise look fast). Without wrk,
``loadgen.py`` produces the same fields; results say which tool made them.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from procs import pinned

BENCH_DIR = Path(__file__).resolve().parent

_TIME_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_BYTES = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}

_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TRANSFER = re.compile(r"^Transfer/sec:\s+([\d.]+)([KMGTP]?)B", re.MULTILINE)
_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h), ([\d.]+)([KMGTP]?)B read")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


class LoadError(RuntimeError):
    """The load generator failed or printed something we cannot read."""


@dataclass(frozen=True)
class LoadResult:
    tool: str
    requests: int
    duration_s: float
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    mib_per_s: float
    errors: int
    non_2xx: int
    # The server's CPU time over the run (user + system, from /proc; see usage.py) and
    # that divided by ``requests``; None when not measured (no /proc, the fallback).
    cpu_s: float | None = None
    cpu_us_per_request: float | None = None

    @property
    def clean(self) -> bool:
        return self.errors == 0 and self.non_2xx == 0

    @classmethod
    def median_of(cls, runs: list[LoadResult]) -> LoadResult:
        """Rounds of the same run combined: medians of the rates and latencies (each on
        its own), totals of the counts. One noisy round then cannot decide a ratio."""

        def mid(values: list[float | None]) -> float | None:
            known = [v for v in values if v is not None]
            return statistics.median(known) if known else None

        return cls(
            tool=runs[0].tool,
            requests=sum(r.requests for r in runs),
            duration_s=sum(r.duration_s for r in runs),
            rps=statistics.median(r.rps for r in runs),
            p50_ms=mid([r.p50_ms for r in runs]),
            p99_ms=mid([r.p99_ms for r in runs]),
            mib_per_s=statistics.median(r.mib_per_s for r in runs),
            errors=sum(r.errors for r in runs),
            non_2xx=sum(r.non_2xx for r in runs),
            cpu_s=_total([r.cpu_s for r in runs]),
            cpu_us_per_request=mid([r.cpu_us_per_request for r in runs]),
        )

    def with_cpu(self, cpu_s: float | None) -> LoadResult:
        """This run with the server's CPU time over it, and per completed request."""
        if cpu_s is None or self.requests <= 0:
            return self
        return replace(self, cpu_s=cpu_s, cpu_us_per_request=cpu_s / self.requests * 1e6)


def _total(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def wrk_version() -> str:
    out = subprocess.run(
        ["wrk", "--version"], check=False, capture_output=True, text=True, timeout=10
    )
    first = (out.stdout or out.stderr).splitlines()[:1]
    return " ".join(first[0].split()[:2]) if first else "wrk"


def run_load(tool: str, url: str, connections: int, duration: int, cpu: int | None) -> LoadResult:
    """``tool`` is ``wrk`` or ``python``; the run lasts ``duration`` seconds."""
    if tool == "wrk":
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url]
        return parse_wrk(run_bounded(argv, duration, cpu))
    argv = [
        sys.executable, str(BENCH_DIR / "loadgen.py"), "--url", url,
        "--connections", str(connections), "--duration", str(duration),
    ]  # fmt: skip
    return _parse_loadgen(run_bounded(argv, duration, cpu))


def run_bounded(argv: list[str], duration: int, cpu: int | None) -> str:
    """Run a load generator meant to last ``duration`` seconds, pinned to ``cpu``; its
    stdout. ``LoadError`` when it fails or overruns by 30 s."""
    try:
        out = subprocess.run(
            pinned(argv, cpu), check=False, capture_output=True, text=True, timeout=duration + 30
        )
    except subprocess.TimeoutExpired as exc:
        raise LoadError(f"{argv[0]} did not finish within {duration + 30}s") from exc
    if out.returncode != 0:
        raise LoadError(f"{argv[0]} exited with {out.returncode}: {out.stderr.strip()[-500:]}")
    return out.stdout


def parse_wrk(text: str) -> LoadResult:
    rps, transfer, total = _RPS.search(text), _TRANSFER.search(text), _TOTAL.search(text)
    if not (rps and transfer and total):
        raise LoadError(f"unreadable wrk output:\n{text.strip()[-800:]}")
    percentiles = {m[1]: float(m[2]) * _TIME_MS[m[3]] for m in _PERCENTILE.finditer(text)}
    socket_errors = _SOCKET.search(text)
    non_2xx = _NON_2XX.search(text)
    return LoadResult(
        tool="wrk",
        requests=int(total[1]),
        duration_s=float(total[2]) * _TIME_MS[total[3]] / 1e3,
        rps=float(rps[1]),
        p50_ms=percentiles.get("50"),
        p99_ms=percentiles.get("99"),
        mib_per_s=float(transfer[1]) * _BYTES[transfer[2]] / 2**20,
        errors=sum(int(n) for n in socket_errors.groups()) if socket_errors else 0,
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
    )


def _parse_loadgen(text: str) -> LoadResult:
    try:
        doc = json.loads(text.strip().splitlines()[-1])
        return LoadResult(**doc)
    except (ValueError, IndexError, TypeError) as exc:
        raise LoadError(f"unreadable loadgen output: {text.strip()[-800:]}") from exc
