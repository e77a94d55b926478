"""Run a coroutine on uvloop when it is installed, else on asyncio's default loop.

The servers and the fallback load generator in ``bench/`` all want the fastest loop
available: the bare proxy is meant to be "the Python ceiling", and an upstream or load
generator should never be the slowest part of a measurement.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
