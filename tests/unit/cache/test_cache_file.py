"""The cache on disk: the file's rows, a file that cannot be read, and the writer that
keeps it in step with the store (coalesced, retried, never on the request path)."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from proxy.cache.file import CacheFile, CacheFileError, Row
from proxy.cache.freshness import UpstreamLimits
from proxy.cache.store import Entry, Store
from proxy.cache.writer import CacheWriter
from tests.conftest import FakeClock

LIMITS = UpstreamLimits(fresh=10, stale=math.inf, revalidating=5)


def row(key: str, body: bytes = b"{}") -> Row:
    return Row(key, "r", 200, "OK", (("Content-Type", "application/json"),), body, 1e9, LIMITS)


def test_rows_survive_a_reopen_in_write_order(tmp_path: Path):
    file = CacheFile(tmp_path / "cache.db")
    file.open(0)
    file.write([row("b"), row("a", b"[1]")], [])
    file.write([row("b", b"[2]")], ["a"])
    file.close()
    again = CacheFile(tmp_path / "cache.db")
    again.open(0)
    assert list(again.rows()) == [row("b", b"[2]")]
    again.write([row("c")], [])
    assert [r.key for r in again.rows()] == ["b", "c"]
    again.close()


@pytest.mark.parametrize(
    "spoil",
    [
        lambda path: path.write_bytes(b"this is not a database" * 100),
        lambda path: _other_format(path),
    ],
    ids=["garbage", "other-format"],
)
def test_an_unreadable_file_is_moved_aside_and_a_new_one_started(tmp_path: Path, spoil):
    path = tmp_path / "cache.db"
    spoil(path)
    before = path.read_bytes()
    file = CacheFile(path)
    file.open(1700000000)
    assert list(file.rows()) == []
    file.write([row("a")], [])
    file.close()
    aside = tmp_path / "cache.db.corrupt-1700000000"
    assert aside.read_bytes() == before  # kept for a post-mortem, not destroyed
    reopened = CacheFile(path)
    reopened.open(0)
    assert [r.key for r in reopened.rows()] == ["a"]
    reopened.close()


def _other_format(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE entries (x)")
    db.execute("PRAGMA user_version=99")
    db.commit()
    db.close()


def test_a_place_where_no_file_can_be_made_is_an_error(tmp_path: Path):
    (tmp_path / "plain").write_text("a file, not a directory")
    with pytest.raises(CacheFileError, match="cannot use"):
        CacheFile(tmp_path / "plain" / "cache.db").open(0)


class RecordingFile:
    """A cache file that records each transaction, and can be made to fail."""

    path = Path("memory")

    def __init__(self) -> None:
        self.transactions: list[tuple[list[Row], list[str]]] = []
        self.failing = False

    def write(self, puts: list[Row], deletes: list[str], *, everything: bool = False) -> None:
        if self.failing:
            raise OSError(28, "No space left on device")
        self.transactions.append((puts, deletes))
        self.everything = everything

    def close(self) -> None:
        pass


def entry(body: bytes, stored_at: float) -> Entry:
    return Entry("r", 200, "OK", (), body, stored_at)


async def test_a_hot_key_is_written_once_per_flush():
    clock = FakeClock()
    store = Store(max_bytes=10**6, max_entries=2, clock=clock)
    store.journal = {}
    file = RecordingFile()
    writer = CacheWriter(file, store, interval=1, clock=clock, wall_clock=lambda: 5000.0)  # type: ignore[arg-type]
    for n in range(100):
        store.put("hot", entry(str(n).encode(), clock.now - 3))
    await writer.flush()
    ((puts, deletes),) = file.transactions
    assert [(r.key, r.body, r.stored_wall) for r in puts] == [("hot", b"99", 4997.0)]
    assert deletes == []
    await writer.flush()  # nothing changed: nothing written
    assert len(file.transactions) == 1
    store.put("a", entry(b"a", clock.now))
    store.put("b", entry(b"b", clock.now))  # evicts "hot" (max_entries 2)
    await writer.flush()
    puts, deletes = file.transactions[-1]
    assert sorted(r.key for r in puts) == ["a", "b"]
    assert deletes == ["hot"]


async def test_a_failed_write_is_retried_without_losing_newer_changes():
    clock = FakeClock()
    store = Store(max_bytes=10**6, max_entries=10, clock=clock)
    store.journal = {}
    file = RecordingFile()
    writer = CacheWriter(file, store, interval=1, clock=clock, wall_clock=lambda: 5000.0)  # type: ignore[arg-type]
    store.put("a", entry(b"old", clock.now))
    store.put("b", entry(b"b", clock.now))
    file.failing = True
    await writer.flush()
    store.put("a", entry(b"new", clock.now))  # changed again while the disk was full
    file.failing = False
    await writer.flush()
    ((puts, _),) = file.transactions
    assert sorted((r.key, r.body) for r in puts) == [("a", b"new"), ("b", b"b")]


async def test_loading_keeps_what_routes_can_use_and_deletes_the_rest(tmp_path: Path):
    path = tmp_path / "cache.db"
    file = CacheFile(path)
    file.open(0)
    old = Row("old", "r", 200, "OK", (), b"1", 1000.0, LIMITS)
    young = Row("young", "r", 200, "OK", (), b"2", 4990.0, LIMITS)
    gone = Row("gone", "removed-route", 200, "OK", (), b"3", 4990.0, LIMITS)
    file.write([old, young, gone], [])
    file.close()
    clock = FakeClock()
    store = Store(max_bytes=10**6, max_entries=10, clock=clock)
    writer = CacheWriter(CacheFile(path), store, interval=1, clock=clock, wall_clock=lambda: 5000.0)
    assert await writer.load(lambda route, age: route == "r" and age <= 3600) == 1
    found = store.get("young")
    assert found is not None
    loaded, age = found
    assert (loaded.body, age, loaded.limits) == (b"2", 10.0, LIMITS)
    await writer.close()
    reopened = CacheFile(path)
    reopened.open(0)
    assert [r.key for r in reopened.rows()] == ["young"]
    reopened.close()


async def test_a_long_disk_outage_ends_in_one_rewrite_not_an_endless_change_list():
    clock = FakeClock()
    store = Store(max_bytes=10**6, max_entries=5, clock=clock)
    store.journal = {}
    file = RecordingFile()
    writer = CacheWriter(file, store, interval=1, clock=clock, wall_clock=lambda: 5000.0)  # type: ignore[arg-type]
    file.failing = True
    for n in range(100):  # random keys come and go while the disk is full
        store.put(f"k{n}", entry(b"x", clock.now))
        await writer.flush()
    assert len(store.journal or {}) <= 2 * store.max_entries
    file.failing = False
    await writer.flush()
    ((puts, _),) = file.transactions
    assert file.everything
    assert sorted(r.key for r in puts) == [f"k{n}" for n in range(95, 100)]
