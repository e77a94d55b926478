"""The two response bodies every benchmark upstream serves.

Kept in one stdlib-only module so that the nginx upstream (files written by
``run.py``), the aiohttp upstream (``upstream.py``) and the response check in
``run.py`` all agree byte for byte on what a correct answer is.
"""

from __future__ import annotations

import json

BIG_SIZE = 1024 * 1024

SMALL_PATH = "/small"
BIG_PATH = "/big"


def _small_body(size: int = 100) -> bytes:
    """A JSON object padded to exactly ``size`` bytes: a typical tiny API answer."""
    doc = {"status": "ok", "service": "bench-upstream", "pad": ""}
    shortfall = size - len(json.dumps(doc, separators=(",", ":")))
    doc["pad"] = "x" * shortfall
    return json.dumps(doc, separators=(",", ":")).encode()


SMALL_BODY = _small_body()

# Repeating all byte values keeps the body incompressible enough to be honest and
# cheap to build; nothing in the benchmark compresses anyway.
BIG_BODY = bytes(range(256)) * (BIG_SIZE // 256)

SMALL_CONTENT_TYPE = "application/json"
BIG_CONTENT_TYPE = "application/octet-stream"
