"""Fallback load generator: a bounded aiohttp client, used only when wrk is missing.

It keeps ``--connections`` requests in flight on keep-alive connections for
``--duration`` seconds and prints one JSON object with the same fields ``run.py``
parses out of wrk's output (requests, req/s, p50/p99 in ms, bytes, errors). A Python
client on one core saturates long before nginx or a good proxy does, so its absolute
numbers are far below wrk's and the ratios between targets are squeezed towards 1:
``run.py`` labels every result it produced as coming from this fallback.

Bounded by construction: workers stop issuing at the deadline, and each request has
a timeout, so the process ends within ``duration + timeout`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp
import evloop


class Tally:
    """What the workers observed; latencies in nanoseconds."""

    def __init__(self) -> None:
        self.latencies: list[int] = []
        self.bytes = 0
        self.errors = 0
        self.non_2xx = 0


async def worker(session: aiohttp.ClientSession, url: str, deadline: float, tally: Tally) -> None:
    while time.monotonic() < deadline:
        started = time.perf_counter_ns()
        try:
            async with session.get(url) as resp:
                body = await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            tally.errors += 1
            continue
        tally.latencies.append(time.perf_counter_ns() - started)
        tally.bytes += len(body)
        if not 200 <= resp.status < 400:
            tally.non_2xx += 1


def percentile_ms(sorted_ns: list[int], fraction: float) -> float | None:
    if not sorted_ns:
        return None
    index = min(len(sorted_ns) - 1, int(fraction * len(sorted_ns)))
    return sorted_ns[index] / 1e6


async def load(url: str, connections: int, duration: float, timeout: float) -> dict[str, object]:
    tally = Tally()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=timeout),
        auto_decompress=False,
    )
    async with session:
        started = time.monotonic()
        deadline = started + duration
        await asyncio.gather(*(worker(session, url, deadline, tally) for _ in range(connections)))
        elapsed = time.monotonic() - started
    latencies = sorted(tally.latencies)
    return {
        "requests": len(latencies),
        "duration_s": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile_ms(latencies, 0.50),
        "p99_ms": percentile_ms(latencies, 0.99),
        "mib_per_s": tally.bytes / elapsed / 2**20,
        "errors": tally.errors,
        "non_2xx": tally.non_2xx,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=5.0, help="per request, seconds")
    args = parser.parse_args()
    result = evloop.run(load(args.url, args.connections, args.duration, args.timeout))
    result["tool"] = f"python-aiohttp-fallback ({evloop.loop_name()})"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
