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


_SEEN_MAX = 2048  # targets remembered; a full memory starts again
_SEEN_TARGET_MAX = 512  # longer targets are not remembered
_seen: dict[str | bytes, tuple[str, str]] = {}


def normalise_target(raw_target: str | bytes) -> tuple[str, str]:
    """``(path, query)`` in canonical form, or :class:`BadTarget`; bytes are the target
    as it arrived (latin-1). A sidecar sees the same few targets again and again: the
    ones that passed are remembered (bounded)."""
    known = _seen.get(raw_target)
    if known is not None:
        return known
    text = raw_target.decode("latin-1") if isinstance(raw_target, bytes) else raw_target
    result = _normalise(text)
    if len(raw_target) <= _SEEN_TARGET_MAX:
        if len(_seen) >= _SEEN_MAX:
            _seen.clear()
        _seen[raw_target] = result
    return result


def _normalise(raw_target: str) -> tuple[str, str]:
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


@dataclass(frozen=True, slots=True)
class _RouteIndex:
    """Where a request's first route can be, by position in file order.

    ``exact`` and ``prefixes`` hold the positions of the ``path`` and ``path_prefix``
    routes under their literal path; ``always`` the rest (regex, method, host and header
    rules only), which every request must try. ``stop`` is the first route with no rule at
    all: it matches every request, so no later route is indexed and it answers when nothing
    before it does (``len(matchers)`` when there is none). ``probes`` are the lengths the
    prefixes come in, each with the lowest position of a prefix that long, ordered by that
    position: once a route is found, lengths whose routes all come after it are not
    probed. ``plain`` says, by position, that the route's literal path is its only rule, so
    being found under it is a match. Every tuple of positions is in file order.
    """

    exact: dict[str, tuple[int, ...]]
    prefixes: dict[str, tuple[int, ...]]
    probes: tuple[tuple[int, int], ...]  # (lowest position, length), by position
    always: tuple[int, ...]
    stop: int
    plain: tuple[bool, ...]

    @classmethod
    def build(cls, matchers: Sequence[RouteMatcher]) -> _RouteIndex:
        exact: dict[str, list[int]] = {}
        prefixes: dict[str, list[int]] = {}
        lowest: dict[int, int] = {}  # prefix length -> lowest position
        always: list[int] = []
        stop = len(matchers)
        for position, matcher in enumerate(matchers):
            if matcher.path is not None:
                exact.setdefault(matcher.path, []).append(position)
            elif matcher.path_prefix is not None:
                prefixes.setdefault(matcher.path_prefix, []).append(position)
                lowest.setdefault(len(matcher.path_prefix), position)
            elif _no_rule(matcher):
                stop = position
                break
            else:
                always.append(position)
        plain = tuple(_only_a_literal_path(matcher) for matcher in matchers[:stop])
        return cls(
            exact={path: _until_plain(found, plain) for path, found in exact.items()},
            prefixes={prefix: _until_plain(found, plain) for prefix, found in prefixes.items()},
            probes=tuple(sorted((position, length) for length, position in lowest.items())),
            always=tuple(always),
            stop=stop,
            plain=plain,
        )


def _until_plain(positions: list[int], plain: tuple[bool, ...]) -> tuple[int, ...]:
    """``positions`` up to the first plain route: found under the same literal, it matches
    whenever a later one would."""
    for end, position in enumerate(positions):
        if plain[position]:
            return tuple(positions[: end + 1])
    return tuple(positions)


def _no_rule(matcher: RouteMatcher) -> bool:
    return (
        matcher.path is None
        and matcher.path_prefix is None
        and matcher.path_regex is None
        and _only_a_literal_path(matcher)
    )


def _only_a_literal_path(matcher: RouteMatcher) -> bool:
    """No rule but ``path`` or ``path_prefix`` (one of them at most)."""
    return (
        (matcher.path is None or matcher.path_prefix is None)
        and matcher.path_regex is None
        and matcher.methods is None
        and matcher.host is None
        and not matcher.headers
    )


class Router(Generic[RouteT]):
    """First match wins, in file order (docs/configuration.md, "What happens to a request",
    step 1).

    Not a scan: exact paths and literal prefixes are looked up (a prefix matches by
    characters, as ``str.startswith`` does, so the path is probed at each length some
    prefix has), the other routes are tried where they stand, and the lowest position whose
    whole rule holds wins: the route a scan in file order would find. The index is built
    once per config (:class:`_RouteIndex`); a reorder keeps it.
    """

    __slots__ = (
        "_always",
        "_before_others",
        "_entries",
        "_exact",
        "_index",
        "_matchers",
        "_plain",
        "_prefixes",
        "_probes",
        "_routes",
        "_stop",
    )

    def __init__(
        self, entries: Sequence[tuple[RouteMatcher, RouteT]], *, _index: _RouteIndex | None = None
    ) -> None:
        self._entries = tuple(entries)
        self._matchers = tuple(matcher for matcher, _ in self._entries)
        # one more slot, None, at ``len(entries)``: the answer when no route matches
        self._routes: tuple[RouteT | None, ...] = (*(route for _, route in self._entries), None)
        index = _index if _index is not None else _RouteIndex.build(self._matchers)
        self._index = index
        # the index's parts as the router's own, one attribute load each in find()
        self._exact = index.exact
        self._prefixes = index.prefixes
        self._probes = index.probes
        self._always = index.always
        self._stop = index.stop
        self._plain = index.plain
        # an exact route found before every prefix and "always" route is the answer
        self._before_others = min(
            (probes[0][0] if (probes := index.probes) else index.stop),
            (index.always[0] if index.always else index.stop),
        )

    def replacing(self, old: RouteT, new: RouteT) -> Router[RouteT]:
        """The same router with ``old`` swapped for ``new`` (an operator's reorder)."""
        return Router([(m, new if r is old else r) for m, r in self._entries], _index=self._index)

    def find(self, method: str, path: str, host: str, headers: Mapping[str, str]) -> RouteT | None:
        best = self._stop  # every position in the index is below it
        if self._exact:
            found = self._exact.get(path)
            if found is not None:
                plain = self._plain
                matchers = self._matchers
                for position in found:
                    if plain[position] or matchers[position].matches(method, path, host, headers):
                        if position < self._before_others:
                            return self._routes[position]
                        best = position
                        break
        probes = self._probes
        if probes and probes[0][0] < best:
            prefixes = self._prefixes
            size = len(path)
            for lowest, length in probes:
                if lowest >= best:
                    break
                if length <= size:
                    found = prefixes.get(path[:length])
                    if found is not None:
                        for position in found:
                            if position >= best:
                                break
                            if self._plain[position] or self._matchers[position].matches(
                                method, path, host, headers
                            ):
                                best = position
                                break
        always = self._always
        if always and always[0] < best:
            matchers = self._matchers
            for position in always:
                if position >= best:
                    break
                if matchers[position].matches(method, path, host, headers):
                    best = position
                    break
        return self._routes[best]
