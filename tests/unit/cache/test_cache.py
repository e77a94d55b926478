"""The last known good answer: what is kept, and when it is served (fake clock)."""

from __future__ import annotations

from proxy.cache.store import Entry, Store
from tests.conftest import FakeClock


def entry(body: bytes, route_name: str = "r") -> Entry:
    return Entry(route_name, 200, "OK", (("Content-Type", "text/plain"),), body, 1000.0)


def test_the_store_evicts_least_recently_used_within_its_byte_bound():
    store = Store(max_bytes=3000, max_entries=100, clock=FakeClock())
    for key in "abc":
        assert store.put(key, entry(b"x" * 700))
    assert store.get("a") is not None  # a is now the most recent
    store.put("d", entry(b"x" * 700))
    assert store.bytes <= 3000
    assert store.get("b") is None
    assert store.get("a") is not None
    assert store.evictions == 1


def test_an_entry_over_the_byte_bound_is_not_kept():
    store = Store(max_bytes=1000, max_entries=10, clock=FakeClock())
    assert not store.put("big", entry(b"x" * 2000))
    assert len(store) == 0


def test_purge_by_route():
    store = Store(max_bytes=10**6, max_entries=10, clock=FakeClock())
    store.put("a", entry(b"1", "drivers"))
    store.put("b", entry(b"2", "events"))
    assert store.purge("drivers") == 1
    assert len(store) == 1
