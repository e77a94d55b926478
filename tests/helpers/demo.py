"""Reading the demo's output: shared by the e2e and process parts of test_demo.py."""

from __future__ import annotations

import asyncio
import re
from collections import Counter

LINE = re.compile(r"^t=\s*(\d+)s  .*?served: (.*?)(?: \((\w+)\))?\s+breakers: ")


def served(text: str) -> list[tuple[int, str, str]]:
    """``(second, the layer that served most, the latest health)`` per line."""
    rows = []
    for line in text.splitlines():
        match = LINE.match(line)
        if match:
            counts = Counter(
                {name: int(n) for name, n in re.findall(r"([\w ()]+?) x(\d+)", match[2])}
            )
            layer = counts.most_common(1)[0][0].strip() if counts else "-"
            rows.append((int(match[1]), layer, match[3] or "-"))
    return rows


def ports(text: str) -> list[int]:
    return [int(port) for port in re.findall(r"http://127\.0\.0\.1:(\d+)", text.split("\n\n")[0])]


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False
