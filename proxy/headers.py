"""Which headers cross the proxy, in each direction, and the ones it adds.

RFC 9110 section 7.6.1: hop-by-hop fields (and every field named in ``Connection``)
describe one connection and must not be forwarded. Framing (``Content-Length``,
``Transfer-Encoding``) is dropped too: the proxy re-frames every message it sends
(DESIGN.md section 13, rule 4). Pure functions over multidicts; no sockets.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from multidict import CIMultiDict

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
    """A repeated field as one comma-separated line (RFC 9110 section 5.3)."""
    getall = getattr(headers, "getall", None)
    if getall is None:
        return headers.get(name, "")
    return ", ".join(getall(name, ()))


def _connection_listed(headers: Mapping[str, str]) -> frozenset[str]:
    if "Connection" not in headers:
        return frozenset()
    listed = _all_lines(headers, "Connection")
    return frozenset(name.strip().lower() for name in listed.split(","))


def _end_to_end(
    headers: Iterable[tuple[str, str]], dropped: frozenset[str], listed: frozenset[str]
) -> CIMultiDict[str]:
    result: CIMultiDict[str] = CIMultiDict()
    for name, value in headers:
        lower = name.lower()
        if lower not in dropped and lower not in listed:
            result.add(name, value)
    return result


@dataclass(frozen=True, slots=True)
class ForwardingRules:
    """The ``headers:`` block, compiled once per config."""

    via: str  # pseudonym for Via; "" adds none
    forwarded: bool
    _not_up: frozenset[str] = _NOT_FORWARDED_UP
    _not_down: frozenset[str] = _NOT_FORWARDED_DOWN

    def _append_via(self, headers: CIMultiDict[str], version: tuple[int, int]) -> None:
        if self.via:
            hop = f"{version[0]}.{version[1]} {self.via}"
            previous = _all_lines(headers, "Via")
            headers["Via"] = f"{previous}, {hop}" if previous else hop

    def upstream_request(
        self,
        client_headers: Mapping[str, str],
        *,
        version: tuple[int, int],
        client_ip: str | None,
        preserve_host: bool,
    ) -> CIMultiDict[str]:
        """Headers for the upstream request: end-to-end ones, plus Via and X-Forwarded-*."""
        headers = _end_to_end(
            client_headers.items(), self._not_up, _connection_listed(client_headers)
        )
        host = client_headers.get("Host")
        if preserve_host and host:
            headers["Host"] = host
        if self.forwarded:
            if client_ip:
                previous = _all_lines(headers, "X-Forwarded-For")
                headers["X-Forwarded-For"] = f"{previous}, {client_ip}" if previous else client_ip
            headers["X-Forwarded-Proto"] = "http"
            headers.popall("X-Forwarded-Host", None)  # a client's own value must not pass
            if host:
                headers["X-Forwarded-Host"] = host
        self._append_via(headers, version)
        return headers

    def downstream_response(
        self, upstream_headers: Mapping[str, str], version: tuple[int, int]
    ) -> CIMultiDict[str]:
        """Headers for the client: the upstream's end-to-end ones plus Via."""
        headers = _end_to_end(
            upstream_headers.items(), self._not_down, _connection_listed(upstream_headers)
        )
        self._append_via(headers, version)
        return headers


@dataclass(frozen=True, slots=True)
class FailedHop:
    """One upstream try that failed, as ``Proxy-Status`` reports it."""

    upstream: str
    failure: Failure
    status: int | None = None


def proxy_status(hops: Iterable[FailedHop]) -> str:
    """RFC 9209 ``Proxy-Status``: one member per failed try, in the order they happened."""
    members = []
    for hop in hops:
        params = [PROXY_NAME]
        error = proxy_status_error(hop.failure)
        if error:
            params.append(f"error={error}")
        if hop.status is not None:
            params.append(f"received-status={hop.status}")
        params.append(f"next-hop={_sf_token_or_string(hop.upstream)}")
        params.append(f'details="{hop.failure.value}"')
        members.append("; ".join(params))
    return ", ".join(members)


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
