"""The last-known-good store: answers kept in memory, least recently used evicted first,
bounded in entries and bytes. Pure: an injected clock; the caller decides what may be
stored (:mod:`proxy.cache.rules`) and when a stale copy may be served.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.cache.freshness import NO_LIMITS, UpstreamLimits
from proxy.cache.rules import uri_of

_OVERHEAD = 256  # bytes counted per entry for its key, headers and bookkeeping


@dataclass(frozen=True, slots=True)
class Entry:
    route: str
    status: int
    reason: str | None
    headers: tuple[tuple[str, str], ...]
    body: bytes
    stored_at: float  # on the store's clock, minus the age the answer arrived with
    limits: UpstreamLimits = NO_LIMITS  # what the upstream's Cache-Control allows
    # its header lines as served under one config's header rules, rendered at the
    # first hit (:func:`proxy.http.respond.cached_response`), not at every one
    rendered: dict[object, tuple[str, bool]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(n) + len(v) for n, v in self.headers) + _OVERHEAD


class Store:
    def __init__(
        self,
        *,
        max_bytes: int,
        max_entries: int,
        clock: Callable[[], float],
        uri_of: Callable[[str], str] = uri_of,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        # target URI (:func:`proxy.cache.rules.uri_key`) -> its keys (every method and
        # variant): an unsafe request's success invalidates them without a scan
        self._uri_of = uri_of
        self._by_uri: dict[str, set[str]] = {}
        self.bytes = 0
        self.evictions = 0
        # key -> its new entry, or None when it went: what the disk copy has not seen yet.
        # Keyed, so a hot key is written once per flush however often it changes.
        self.journal: dict[str, Entry | None] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: str, entry: Entry) -> bool:
        """Keep ``entry``; False when it alone is over the byte bound (it streams past)."""
        if entry.size > self.max_bytes:
            return False
        self.remove(key)
        self._entries[key] = entry
        self._by_uri.setdefault(self._uri_of(key), set()).add(key)
        self.bytes += entry.size
        journal = self.journal
        if journal is not None:
            journal[key] = entry
        self._evict()
        return True

    def resize(self, max_bytes: int, max_entries: int) -> None:
        """New bounds (a reload): least recently used entries go until it fits."""
        self.max_bytes, self.max_entries = max_bytes, max_entries
        self._evict()

    def _evict(self) -> None:
        journal = self.journal
        while self.bytes > self.max_bytes or len(self._entries) > self.max_entries:
            gone, evicted = self._entries.popitem(last=False)
            self._unindex(gone)
            self.bytes -= evicted.size
            self.evictions += 1
            if journal is not None:
                journal[gone] = None

    def get(self, key: str) -> tuple[Entry, float] | None:
        """The entry and its age; the caller decides whether it is young enough."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry, self._clock() - entry.stored_at

    def remove(self, key: str) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._unindex(key)
            self.bytes -= old.size
            if self.journal is not None:
                self.journal[key] = None

    def _unindex(self, key: str) -> None:
        uri = self._uri_of(key)
        keys = self._by_uri[uri]
        keys.discard(key)
        if not keys:
            del self._by_uri[uri]

    def invalidate(self, uri: str) -> int:
        """Drop every entry of one target URI (RFC 9111 4.4); returns how many went."""
        keys = self._by_uri.get(uri)
        if not keys:
            return 0
        gone = list(keys)
        for key in gone:
            self.remove(key)
        return len(gone)

    def items(self) -> list[tuple[str, Entry]]:
        """Every entry, least recently used first."""
        return list(self._entries.items())

    def purge(self, route: str | None = None) -> int:
        """Drop every entry, or a route's; returns how many went."""
        keys = [k for k, e in self._entries.items() if route is None or e.route == route]
        for key in keys:
            self.remove(key)
        return len(keys)

    def now(self) -> float:
        return self._clock()
