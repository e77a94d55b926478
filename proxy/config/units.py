"""Human-readable durations (``250ms``, ``5s``, ``24h``), sizes (``64KiB``) .

Config files are read by people at 3 a.m.; ``stale_for: 86400`` is a bug waiting to
happen, ``stale_for: 24h`` is not. A bare number is refused for durations (seconds or
milliseconds?) but accepted for sizes as bytes, and ``0`` is accepted for both.
"""

from __future__ import annotations

import re

_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}


def parse_duration(value: object) -> float:
    """Seconds from ``250ms``, ``1.5s``, ``5m``, ``24h``, ``7d`` or the number 0."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 250ms, 5s or 24h, got a boolean")
    if isinstance(value, int | float) and value == 0:
        return 0.0
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    raise ValueError(f"expected a duration such as 250ms, 5s or 24h, got {value!r}")


def parse_size(value: object) -> int:
    """Bytes from ``512``, ``512B``, ``64KiB``, ``1MiB``, ``1GiB`` (KB/MB/GB are powers of 1000)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 64KiB or 1MiB, got a boolean")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
    raise ValueError(f"expected a size such as 64KiB or 1MiB, got {value!r}")


def parse_ratio(value: object) -> float:
    """A fraction in [0, 1] from ``50%`` (or a number between 0 and 1)."""
    ratio: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        ratio = float(value)
    elif isinstance(value, str) and (match := _PERCENT.match(value)):
        ratio = float(match.group(1)) / 100
    if ratio is None or not 0 <= ratio <= 1:
        raise ValueError(f"expected a percentage such as 50%, got {value!r}")
    return ratio


def format_duration(seconds: float) -> str:
    """The shortest exact spelling, for summaries (``check``) and error messages."""
    if seconds == 0:
        return "0s"
    millis = round(seconds * 1000)
    if abs(millis - seconds * 1000) > 1e-9:
        return f"{seconds * 1000:g}ms"
    for unit, factor in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis % factor == 0:
            return f"{millis // factor}{unit}"
    return f"{millis}ms"
