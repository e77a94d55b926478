"""How long a stored answer may be served, as its upstream asked (RFC 9111 4.2 and 5.2.2,
RFC 5861). Pure: headers in, limits out.

The route's own ``fresh_for``, ``stale_for`` and ``stale_while_revalidate`` are the
operator's ceilings; the limits here can only narrow them, never widen them (the
stricter of the two wins). A route with ``honour_cache_control: false`` skips this
module and keeps its own numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

UNLIMITED = math.inf


@dataclass(frozen=True, slots=True)
class UpstreamLimits:
    """Ages (seconds since the answer was generated) up to which it may be served."""

    fresh: float = UNLIMITED  # without asking an upstream
    stale: float = UNLIMITED  # when every upstream failed
    revalidating: float = UNLIMITED  # while a background refresh runs


NO_LIMITS = UpstreamLimits()


def directives(headers: Mapping[str, str]) -> dict[str, str]:
    """``Cache-Control`` as lower-case directive names and their (unquoted) arguments."""
    parsed: dict[str, str] = {}
    for part in headers.get("Cache-Control", "").split(","):
        name, _, value = part.partition("=")
        name = name.strip().lower()
        if name:
            parsed.setdefault(name, value.strip().strip('"'))
    return parsed


def _seconds(value: str | None) -> float | None:
    """A delta-seconds argument (RFC 9111 1.2.2); anything else is ignored."""
    if value is None or not value.isdigit():
        return None
    return float(value)


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def lifetime(headers: Mapping[str, str], cache_control: Mapping[str, str]) -> float | None:
    """RFC 9111 4.2.1: ``s-maxage``, else ``max-age``, else ``Expires`` minus ``Date``;
    None when the upstream gave no explicit lifetime. An invalid ``Expires`` means
    already expired (RFC 9111 5.3)."""
    for name in ("s-maxage", "max-age"):
        if name in cache_control:
            return _seconds(cache_control[name]) or 0.0
    if "Expires" not in headers:
        return None
    expires = _http_date(headers["Expires"])
    date = _http_date(headers.get("Date"))
    if expires is None or date is None:
        return 0.0
    return max(0.0, expires - date)


def initial_age(headers: Mapping[str, str]) -> float:
    """RFC 9111 4.2.3: the age the answer already had when it reached us (``Age``)."""
    return _seconds(headers.get("Age")) or 0.0


def upstream_limits(headers: Mapping[str, str]) -> UpstreamLimits:
    """What the upstream's ``Cache-Control`` allows:

    - RFC 9111 4.2.4: ``no-cache``, ``must-revalidate``, ``proxy-revalidate`` and
      ``s-maxage`` forbid serving it stale at all, in failover or in the background;
      with ``no-cache`` it is not even fresh (it must be revalidated every time).
    - RFC 5861 4: ``stale-if-error=N`` allows serving it stale in failover for N
      seconds past its lifetime.
    - An explicit lifetime bounds how long it is served without asking.
    """
    cache_control = directives(headers)
    life = lifetime(headers, cache_control)
    if "no-cache" in cache_control:
        return UpstreamLimits(fresh=0.0, stale=0.0, revalidating=0.0)
    fresh = UNLIMITED if life is None else life
    if {"must-revalidate", "proxy-revalidate", "s-maxage"} & cache_control.keys():
        return UpstreamLimits(fresh=fresh, stale=life or 0.0, revalidating=life or 0.0)
    if_error = _seconds(cache_control.get("stale-if-error"))
    stale = UNLIMITED if if_error is None else (life or 0.0) + if_error
    return UpstreamLimits(fresh=fresh, stale=stale)
