"""Which headers cross the proxy, in each direction, and the ones it adds.

RFC 9110 section 7.6.1: hop-by-hop fields (and every field named in ``Connection``)
describe one connection and must not be forwarded. Framing (``Content-Length``,
``Transfer-Encoding``) is dropped too: the proxy re-frames every message it sends
(passing framing headers on would invite request smuggling). Pure functions over
multidicts; no sockets.
"""

from __future__ import annotations

import email.utils
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from proxy.chain.errors import Failure, proxy_status_error

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

# Request headers that many frameworks read as the host, scheme, port, path or method
# (Django, Rails, Symfony, Spring, IIS URL Rewrite) but that are not in the cache key:
# forwarded on a cached route, one client could change what everyone is served from
# the cache ("web cache poisoning"). Stripped there unless the route keeps one.
UNKEYED_REQUEST_HEADER_NAMES = (
    "X-Forwarded-Host",
    "X-Forwarded-Scheme",
    "X-Forwarded-Proto",
    "X-Forwarded-Port",
    "X-Forwarded-Server",
    "Forwarded",
    "X-Host",
    "X-Original-URL",
    "X-Rewrite-URL",
    "X-HTTP-Method-Override",
    "X-HTTP-Method",
    "X-Method-Override",
)
UNKEYED_REQUEST_HEADERS = frozenset(name.lower() for name in UNKEYED_REQUEST_HEADER_NAMES)

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


def upgrade_fields(client_headers: Mapping[str, str]) -> HeaderList:
    """What an upgrade request asks of the next hop, asked again by the proxy (the
    ``Connection`` options are hop-by-hop, so the forwarding rules dropped them):
    ``Connection: Upgrade`` plus any other option the client listed and sent a field
    for (h2c's ``HTTP2-Settings``), that field as sent, and the client's ``Upgrade``."""
    wanted = {
        name
        for name in _connection_listed(client_headers)
        if name not in HOP_BY_HOP and name not in ("upgrade", "close")
    }
    fields = [(name, value) for name, value in client_headers.items() if name.lower() in wanted]
    options = ", ".join(["Upgrade", *sorted({name for name, _ in fields})])
    return [("Connection", options), ("Upgrade", client_headers.get("Upgrade", "")), *fields]


_SF_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_SF_FIRST_TOKEN = re.compile(r"[^;,\s]*")


def _list_members(value: str) -> list[str]:
    """The members of an RFC 8941 list, split at the commas outside quoted strings."""
    members: list[str] = []
    start = 0
    quoted = escaped = False
    for at, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            escaped = char == "\\"
            quoted = char != '"'
        elif char == '"':
            quoted = True
        elif char == ",":
            members.append(value[start:at].strip())
            start = at + 1
    members.append(value[start:].strip())
    return [member for member in members if member]


def _names_us(member: str) -> bool:
    """Whether a ``Cache-Status``/``Proxy-Status`` member's first item (the cache or
    proxy that wrote it, RFC 9211 section 2 / RFC 9209 section 2) is this proxy's name.
    Compared without case: a spoof in capitals misleads a reader just as well."""
    if member.startswith('"'):
        quoted = _SF_STRING.match(member)
        name = re.sub(r"\\(.)", r"\1", quoted.group(1)) if quoted else member[1:]
    else:
        found = _SF_FIRST_TOKEN.match(member)
        name = found.group() if found else ""
    return name.lower() == PROXY_NAME


def _without_our_members(value: str) -> str:
    """A status list without the members an upstream wrote in our name; "" if none is
    left. Other proxies' members stay, in their order: these lists grow hop by hop."""
    if PROXY_NAME not in value.lower():
        return value  # the usual case, and then the upstream's bytes stay as they came
    return ", ".join(member for member in _list_members(value) if not _names_us(member))


class ForwardingRules:
    """The ``headers:`` block, compiled once per config; one pass over the headers each way."""

    __slots__ = (
        "_drop_down",
        "_drop_up",
        "_forwarded",
        "_hops",
        "_own",
        "_own_and_age",
        "_status_lists",
        "_via",
    )

    def __init__(
        self,
        *,
        via: str,
        forwarded: bool,
        own: Iterable[str] = (),
        proxy_status: str = "Proxy-Status",
    ) -> None:
        """``own``: the names of the headers only this proxy may set (source, health);
        an upstream's are dropped. ``proxy_status``: the configured name of that list."""
        self._via = via  # pseudonym for Via; "" adds none and leaves Via alone
        self._hops: dict[tuple[int, int], str] = {}  # our Via member, by HTTP version
        self._forwarded = forwarded
        self._own = frozenset(name.lower() for name in own)
        self._own_and_age = self._own | {"age"}
        self._status_lists = frozenset({"cache-status", "proxy-status", proxy_status.lower()})
        rewritten = {"via"} if via else set()
        self._drop_down = _NOT_FORWARDED_DOWN | rewritten | self._own
        if forwarded:
            rewritten |= {"x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"}
        self._drop_up = _NOT_FORWARDED_UP | rewritten

    @property
    def own(self) -> frozenset[str]:
        """The lower-case names of the headers only this proxy may set."""
        return self._own

    def _via_hop(self, previous: list[str], version: tuple[int, int]) -> str:
        hop = self._hops.get(version)
        if hop is None:
            hop = self._hops[version] = f"{version[0]}.{version[1]} {self._via}"
        return ", ".join([*previous, hop]) if previous else hop

    def not_forwarded(self, also: Iterable[str]) -> frozenset[str]:
        """The request headers a route does not forward: these rules' own, plus ``also``
        (lower-case names). Built once per route at config load, for
        :meth:`upstream_request`'s ``drop``."""
        return self._drop_up | frozenset(also)

    def upstream_request(
        self,
        client_headers: Mapping[str, str],
        *,
        version: tuple[int, int],
        client_ip: str | None,
        preserve_host: bool,
        drop: frozenset[str] | None = None,
    ) -> HeaderList:
        """Headers for the upstream request: end-to-end ones, plus Via and X-Forwarded-*.

        A client's own X-Forwarded-Host/-Proto never pass (host-header poisoning); its
        X-Forwarded-For and Via lines are kept and ours appended. ``drop``: the route's
        set from :meth:`not_forwarded` (a cached route strips its unkeyed inputs), so
        the pass over the headers stays one lookup per header.
        """
        listed = _connection_listed(client_headers)
        if drop is None:
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
        """Headers for the client: the upstream's end-to-end ones plus Via.

        An upstream cannot speak for the proxy: its source and health headers are
        dropped, and so are its ``Cache-Status``/``Proxy-Status`` members in our name
        (other proxies' stay; the caller appends ours after them).
        """
        return self.downstream_pairs(
            upstream_headers.items(), _connection_listed(upstream_headers), version
        )

    def downstream_pairs(
        self,
        upstream_headers: Iterable[tuple[str, str]],
        listed: frozenset[str],
        version: tuple[int, int],
    ) -> HeaderList:
        """:meth:`downstream_response` over header pairs whose ``Connection`` tokens
        (lower-case) are known already: one pass, no multidict."""
        drop, status_lists = self._drop_down, self._status_lists
        headers: HeaderList = []
        via: list[str] = []
        for name, value in upstream_headers:
            lower = name.lower()
            if lower in drop or lower in listed:
                if lower == "via":
                    via.append(value)
                continue
            if lower in status_lists and not (value := _without_our_members(value)):
                continue
            headers.append((name, value))
        if self._via:
            headers.append(("Via", self._via_hop(via, version)))
        return headers

    def from_store(self, stored: Iterable[tuple[str, str]]) -> HeaderList:
        """A stored answer's headers as served, without our source and health names and
        without ``Age`` (the caller adds the copy's own): checked again, since the entry
        may predate this config's header names (a reload) or this version (the disk
        cache)."""
        own, status_lists = self._own_and_age, self._status_lists
        headers: HeaderList = []
        for name, value in stored:
            lower = name.lower()
            if lower in own:
                continue
            if lower in status_lists and not (value := _without_our_members(value)):
                continue
            headers.append((name, value))
        return headers


@dataclass(slots=True)  # made per failed try: a frozen one costs 3x to build
class FailedHop:
    """One upstream try that failed, as ``Proxy-Status`` reports it."""

    upstream: str
    failure: Failure
    status: int | None = None


def proxy_status(hops: Sequence[FailedHop]) -> str:
    """RFC 9209 ``Proxy-Status``: one member per failed try, in the order they happened."""
    if len(hops) == 1:  # the common case: one upstream skipped or failed
        hop = hops[0]
        return _member(hop.upstream, hop.failure, hop.status)
    return ", ".join([_member(hop.upstream, hop.failure, hop.status) for hop in hops])


@functools.lru_cache(maxsize=4096)
def _member(upstream: str, failure: Failure, status: int | None) -> str:
    """One list member; hops repeat (an open circuit skips the same way every request),
    and the set of upstreams, classes and statuses is small, so each is built once
    (keyed on plain values: hashing them costs less than hashing a record)."""
    hop = FailedHop(upstream, failure, status)
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
