"""The cache's file on local disk: an SQLite database in WAL mode (stdlib ``sqlite3``).

Why SQLite: one file, atomic transactions, and in WAL mode with ``synchronous=NORMAL``
a committed transaction survives the process being killed at any instant (only a
power loss can take the last ones back), while readers never block the writer. A
file of our own design would need its own journal to promise the same.

Blocking: every method here does file I/O, so the async side calls them on one
dedicated thread (:mod:`proxy.cache.writer`), never on the event loop.

Times on disk are wall-clock seconds (the store's monotonic clock does not survive a
restart); the caller converts.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from proxy.cache.freshness import UpstreamLimits

log = logging.getLogger("failover_proxy")

FORMAT = 1  # PRAGMA user_version: a file of another format is moved aside, not read

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    stored_wall REAL NOT NULL,
    fresh REAL,
    stale REAL,
    revalidating REAL,
    written INTEGER NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class Row:
    """One stored answer as it is on disk."""

    key: str
    route: str
    status: int
    reason: str | None
    headers: tuple[tuple[str, str], ...]
    body: bytes
    stored_wall: float
    limits: UpstreamLimits


class CacheFileError(Exception):
    """The file cannot be used; it has been moved aside where possible."""


def _finite(value: float) -> float | None:
    return None if math.isinf(value) else value


def _limit(value: float | None) -> float:
    return math.inf if value is None else float(value)


class CacheFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._written = 0  # a sequence: rows load back oldest write first (LRU order)

    def open(self, wall_now: float) -> None:
        """Open (or create) the file. A file that is not a sound cache of our format is
        moved aside to ``<name>.corrupt-<time>`` and a new one started; raises
        :class:`CacheFileError` only when no file can be used at all."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._connect()
            return
        except (sqlite3.DatabaseError, _WrongFormat) as exc:
            if not self.path.is_file():  # nothing to move aside: the place is unusable
                raise CacheFileError(f"cannot use {self.path}: {exc}") from exc
            problem = str(exc)
        except OSError as exc:
            raise CacheFileError(f"cannot use {self.path}: {exc}") from exc
        self.close()
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(wall_now)}")
        log.error("cache file %s is unreadable (%s): moved to %s", self.path, problem, aside)
        try:
            self.path.rename(aside)
            for suffix in ("-wal", "-shm"):
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    side.rename(aside.with_name(aside.name + suffix))
            self._db = self._connect()
        except (OSError, sqlite3.DatabaseError, _WrongFormat) as exc:
            self.close()
            raise CacheFileError(f"cannot use {self.path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables and version != FORMAT:
                raise _WrongFormat(f"format {version}, this proxy reads format {FORMAT}")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise _WrongFormat(f"integrity check: {check}")
            # Only now change the file: one we cannot read is moved aside untouched.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            db.execute(f"PRAGMA user_version={FORMAT}")
            (self._written,) = db.execute(
                "SELECT coalesce(max(written), 0) FROM entries"
            ).fetchone()
        except BaseException:
            db.close()
            raise
        return db

    def rows(self) -> Iterator[Row]:
        """Every stored answer, least recently written first; rows that do not decode are
        skipped (and logged)."""
        assert self._db is not None
        query = (
            "SELECT key, route, status, reason, headers, body, stored_wall, fresh, stale,"
            " revalidating FROM entries ORDER BY written"
        )
        for record in self._db.execute(query):
            key, route, status, reason, headers, body, wall, fresh, stale, reval = record
            try:
                pairs = tuple((str(name), str(value)) for name, value in json.loads(headers))
            except (ValueError, TypeError) as exc:
                log.warning("cache file: skipping an entry that does not decode: %s", exc)
                continue
            limits = UpstreamLimits(_limit(fresh), _limit(stale), _limit(reval))
            yield Row(key, route, status, reason, pairs, bytes(body), wall, limits)

    def write(self, puts: list[Row], deletes: list[str], *, everything: bool = False) -> None:
        """One transaction: either all of it reaches the file or none of it.
        ``everything``: ``puts`` is the whole cache; what else the file holds goes."""
        assert self._db is not None
        db = self._db
        db.execute("BEGIN")
        try:
            if everything:
                db.execute("DELETE FROM entries")
            db.executemany("DELETE FROM entries WHERE key = ?", ((key,) for key in deletes))
            first = self._written + 1
            db.executemany(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        row.key,
                        row.route,
                        row.status,
                        row.reason,
                        json.dumps(row.headers),
                        row.body,
                        row.stored_wall,
                        _finite(row.limits.fresh),
                        _finite(row.limits.stale),
                        _finite(row.limits.revalidating),
                        first + i,
                    )
                    for i, row in enumerate(puts)
                ),
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._written = first + len(puts)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class _WrongFormat(Exception):
    pass
