"""Request target -> route: the pure part of the request path.

Two jobs, both done on the raw, percent-encoded target, never on a decoded one:

1. :func:`normalise_target` refuses targets that try to escape (``..``/``.`` segments,
   encoded slashes, backslashes or dots, NUL, control bytes, and any of those encoded
   twice or more, ``%252e``, for a backend that decodes twice) and puts the rest in one
   canonical form (RFC 3986 section 6.2.2: upper-case percent escapes, unreserved
   characters decoded). That form is both matched and forwarded, so ``/%61dmin`` cannot
   slip past a route for ``/admin`` and then reach the upstream as ``/admin``.
2. :class:`Router` finds the first route, in file order, whose rules all hold.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from proxy.config import schema as config


class BadTarget(ValueError):
    """The request target is refused with 400; it must never reach an upstream."""


_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_~")
_REFUSED_ESCAPES = frozenset({"2F", "5C", "2E", "00"})  # / \ . NUL
# After canonicalisation: ``%25`` (an encoded ``%``), as many times as it was encoded,
# then the encoding of ``.``, ``/``, ``\`` or NUL. A backend that decodes twice (or more)
# would see the dot, slash or NUL itself; digits and letters are decoded by then, so
# ``%25%32%65`` has become ``%252e`` and is caught too.
_MULTI_ENCODED = re.compile(r"%25(?:25)*(?:2E|2F|5C|00)", re.IGNORECASE)
_BAD_QUERY = re.compile(r"[\x00-\x20\x7f#]")
_ALLOWED_PATH_BYTES = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*$")


def _canonical_escape(match: re.Match[str]) -> str:
    hex_digits = match.group(1).upper()
    if hex_digits in _REFUSED_ESCAPES:
        raise BadTarget(f"encoded {bytes.fromhex(hex_digits)!r} in the path")
    code = int(hex_digits, 16)
    return chr(code) if code in _UNRESERVED else "%" + hex_digits


def origin_form(raw_target: str) -> str:
    """``/path?query`` from an origin- or absolute-form target; the authority is ignored.

    RFC 9112 section 3.2.2: a server must accept absolute-form, but the proxy forwards
    only to configured upstreams, so the host in it chooses nothing.
    """
    if raw_target.startswith("/"):
        return raw_target
    scheme, sep, rest = raw_target.partition("://")
    if sep and scheme.lower() in ("http", "https"):
        slash = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        remainder = rest[slash:]
        return remainder if remainder.startswith("/") else "/" + remainder
    raise BadTarget("the request target must be a path or an http(s) URL")


def normalise_target(raw_target: str) -> tuple[str, str]:
    """``(path, query)`` in canonical form, or :class:`BadTarget`."""
    target = raw_target if raw_target.startswith("/") else origin_form(raw_target)
    path, _, query = target.partition("?")
    if not _ALLOWED_PATH_BYTES.match(path):
        raise BadTarget("the path has characters that must be percent-encoded")
    if _BAD_ESCAPE.search(path):
        raise BadTarget("the path has a malformed percent escape")
    if "%" in path:
        path = _ESCAPE.sub(_canonical_escape, path)
        if "%25" in path and (found := _MULTI_ENCODED.search(path)):
            raise BadTarget(f"double-encoded {found[0]!r} in the path")
    if "/." in path:
        for segment in path.split("/"):
            # `..;x` is a dot segment to Tomcat, Jetty and Spring: a path parameter hides it.
            if segment.partition(";")[0] in (".", ".."):
                raise BadTarget("dot segments are not allowed in the path")
    if query and _BAD_QUERY.search(query):
        raise BadTarget("the query has characters that must be percent-encoded")
    return path, query


def host_without_port(host: str) -> str:
    if host.startswith("["):
        return host[: host.find("]") + 1].lower()
    return host.rsplit(":", 1)[0].lower() if host.count(":") == 1 else host.lower()


@dataclass(frozen=True, slots=True)
class RouteMatcher:
    """The ``match:`` block of one route, compiled once at config load."""

    methods: frozenset[str] | None
    path: str | None
    path_prefix: str | None
    path_regex: re.Pattern[str] | None
    host: str | None
    headers: tuple[tuple[str, str], ...]

    @classmethod
    def compile(cls, match: config.Match) -> RouteMatcher:
        return cls(
            methods=frozenset(match.methods) if match.methods is not None else None,
            path=match.path,
            path_prefix=match.path_prefix,
            path_regex=re.compile(match.path_regex) if match.path_regex else None,
            host=match.host,
            headers=tuple(match.headers.items()),
        )

    def matches(self, method: str, path: str, host: str, headers: Mapping[str, str]) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if self.path is not None and path != self.path:
            return False
        if self.path_prefix is not None and not path.startswith(self.path_prefix):
            return False
        if self.path_regex is not None and not self.path_regex.search(path):
            return False
        if self.host is not None and not _host_matches(self.host, host_without_port(host)):
            return False
        if self.headers:
            return all(headers.get(name) == value for name, value in self.headers)
        return True


def _host_matches(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


RouteT = TypeVar("RouteT")


class Router(Generic[RouteT]):
    """First match wins, in file order (docs/configuration.md, "What happens to a request",
    step 1)."""

    def __init__(self, entries: Sequence[tuple[RouteMatcher, RouteT]]) -> None:
        self._entries = tuple(entries)

    def replacing(self, old: RouteT, new: RouteT) -> Router[RouteT]:
        """The same router with ``old`` swapped for ``new`` (an operator's reorder)."""
        return Router([(m, new if r is old else r) for m, r in self._entries])

    def find(self, method: str, path: str, host: str, headers: Mapping[str, str]) -> RouteT | None:
        for matcher, route in self._entries:
            if matcher.matches(method, path, host, headers):
                return route
        return None
