"""Which headers cross the proxy, in each direction, and the ones it adds.

RFC 9110 section 7.6.1: hop-by-hop fields (and every field named in ``Connection``)
describe one connection and must not be forwarded. Framing (``Content-Length``,
``Transfer-Encoding``) is dropped too: the proxy re-frames every message it sends
(DESIGN.md section 13, rule 4). Pure functions over multidicts; no sockets.
"""

from __future__ import annotations

import email.utils
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from proxy.errors import Failure, proxy_status_error

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
_NOT_FORWARDED_UP = HOP_BY_HOP | {"content-length", "host", "expect"}
_NOT_FORWARDED_DOWN = HOP_BY_HOP | {"content-length"}

PROXY_NAME = "failover-proxy"
_DIGITS = re.compile(r"^[0-9]+$")


def _all_lines(headers: Mapping[str, str], name: str) -> str:
    """A repeated field as one comma-separated line (RFC 9110 section 5.3); "" if absent."""
    if name not in headers:
        return ""
    getall = getattr(headers, "getall", None)
    return ", ".join(getall(name)) if getall is not None else headers[name]


_NOTHING: frozenset[str] = frozenset()


def _connection_listed(headers: Mapping[str, str]) -> frozenset[str]:
    if "Connection" not in headers:
        return _NOTHING
    listed = _all_lines(headers, "Connection")
    return frozenset(name.strip().lower() for name in listed.split(","))


HeaderList = list[tuple[str, str]]
"""Headers as built for sending: aiohttp turns a list into its multidict in one go."""


class ForwardingRules:
    """The ``headers:`` block, compiled once per config; one pass over the headers each way."""

    __slots__ = ("_drop_down", "_drop_up", "_forwarded", "_via")

    def __init__(self, *, via: str, forwarded: bool) -> None:
        self._via = via  # pseudonym for Via; "" adds none and leaves Via alone
        self._forwarded = forwarded
        rewritten = {"via"} if via else set()
        self._drop_down = _NOT_FORWARDED_DOWN | rewritten
        if forwarded:
            rewritten |= {"x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"}
        self._drop_up = _NOT_FORWARDED_UP | rewritten

    def _via_hop(self, previous: list[str], version: tuple[int, int]) -> str:
        hop = f"{version[0]}.{version[1]} {self._via}"
        return ", ".join([*previous, hop]) if previous else hop

    def upstream_request(
        self,
        client_headers: Mapping[str, str],
        *,
        version: tuple[int, int],
        client_ip: str | None,
        preserve_host: bool,
    ) -> HeaderList:
        """Headers for the upstream request: end-to-end ones, plus Via and X-Forwarded-*.

        A client's own X-Forwarded-Host/-Proto never pass (host-header poisoning); its
        X-Forwarded-For and Via lines are kept and ours appended.
        """
        listed = _connection_listed(client_headers)
        drop = self._drop_up
        headers: HeaderList = []
        forwarded_for: list[str] = []
        via: list[str] = []
        for name, value in client_headers.items():
            lower = name.lower()
            if lower in drop or lower in listed:
                if lower == "x-forwarded-for":
                    forwarded_for.append(value)
                elif lower == "via":
                    via.append(value)
                continue
            headers.append((name, value))
        host = client_headers.get("Host")
        if preserve_host and host:
            headers.append(("Host", host))
        if self._forwarded:
            if client_ip:
                headers.append(("X-Forwarded-For", ", ".join([*forwarded_for, client_ip])))
            headers.append(("X-Forwarded-Proto", "http"))
            if host:
                headers.append(("X-Forwarded-Host", host))
        if self._via:
            headers.append(("Via", self._via_hop(via, version)))
        return headers

    def downstream_response(
        self, upstream_headers: Mapping[str, str], version: tuple[int, int]
    ) -> HeaderList:
        """Headers for the client: the upstream's end-to-end ones plus Via."""
        listed = _connection_listed(upstream_headers)
        drop = self._drop_down
        headers: HeaderList = []
        via: list[str] = []
        for name, value in upstream_headers.items():
            lower = name.lower()
            if lower in drop or lower in listed:
                if lower == "via":
                    via.append(value)
                continue
            headers.append((name, value))
        if self._via:
            headers.append(("Via", self._via_hop(via, version)))
        return headers


@dataclass(frozen=True, slots=True)
class FailedHop:
    """One upstream try that failed, as ``Proxy-Status`` reports it."""

    upstream: str
    failure: Failure
    status: int | None = None


def proxy_status(hops: Iterable[FailedHop]) -> str:
    """RFC 9209 ``Proxy-Status``: one member per failed try, in the order they happened."""
    return ", ".join([_member(hop) for hop in hops])


@functools.lru_cache(maxsize=4096)
def _member(hop: FailedHop) -> str:
    """One list member; hops repeat (an open circuit skips the same way every request),
    and the set of upstreams, classes and statuses is small, so each is built once."""
    params = [PROXY_NAME]
    error = proxy_status_error(hop.failure)
    if error:
        params.append(f"error={error}")
    if hop.status is not None:
        params.append(f"received-status={hop.status}")
    params.append(f"next-hop={_sf_token_or_string(hop.upstream)}")
    params.append(f'details="{hop.failure.value}"')
    return "; ".join(params)


def _sf_token_or_string(value: str) -> str:
    """An RFC 8941 token where the name is one, else a quoted string."""
    if value[:1].isalpha() and all(ch.isalnum() or ch in "-_.:/*" for ch in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from ``Retry-After`` (RFC 9110 section 10.2.3): delay-seconds or
    an HTTP-date; ``now`` is wall-clock epoch seconds. None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if _DIGITS.match(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)
