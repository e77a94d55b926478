"""Keeping the cache file in step with the in-memory store, off the request path.

Requests only touch memory: :class:`proxy.cache.store.Store` notes each changed key in its
journal. Every ``flush_interval`` the journal is swapped for an empty one and written
in one transaction on a thread of its own, so a key that changes on every request is
written at most once per interval, and a write never waits on the event loop nor the
event loop on a write. What a crash can lose is the last interval's changes; what is
on disk is always a consistent set of whole answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from proxy.cache.file import CacheFile, Row
from proxy.cache.store import Entry, Store
from proxy.config.schema import CacheLimits

log = logging.getLogger("failover_proxy")

T = TypeVar("T")


class CacheWriter:
    def __init__(
        self,
        file: CacheFile,
        store: Store,
        *,
        interval: float,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        self.file = file
        self.store = store
        self.interval = interval
        self._clock = clock
        self._wall_clock = wall_clock
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-file")
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._rewrite = False  # the next flush replaces the file's whole content
        self.flushes = 0

    async def _on_thread(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    async def load(self, usable: Callable[[str, float], bool]) -> int:
        """Open the file and fill the store from it, oldest write first (so the least
        recently written is the first evicted). ``usable(route, age)`` says whether an
        answer that old is still of use to its route; the rest are deleted from disk.
        Raises :class:`proxy.cache.file.CacheFileError` if no file can be used."""
        await self._on_thread(lambda: self.file.open(self._wall_clock()))
        rows = await self._on_thread(lambda: list(self.file.rows()))
        mono, wall = self._clock(), self._wall_clock()
        store = self.store
        store.journal = None  # what comes from the file need not go back to it
        dropped: list[str] = []
        for row in rows:
            age = max(0.0, wall - row.stored_wall)
            if not usable(row.route, age):
                dropped.append(row.key)
                continue
            entry = Entry(
                row.route, row.status, row.reason, row.headers, row.body, mono - age, row.limits
            )
            if not store.put(row.key, entry):
                dropped.append(row.key)
        kept = {key for key, _ in store.items()}
        dropped.extend(row.key for row in rows if row.key not in kept)
        store.journal = dict.fromkeys(dropped)
        return len(kept)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cache writer")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def flush(self) -> None:
        """Write what changed since the last flush, in one transaction."""
        pending = self.store.journal
        if not pending and not self._rewrite:
            return
        self.store.journal = {}
        rewrite, self._rewrite = self._rewrite, False
        journal: dict[str, Entry | None] = dict(pending or {})
        if rewrite:  # everything the store holds, after deleting everything on disk
            journal = dict(self.store.items())
        mono, wall = self._clock(), self._wall_clock()
        puts: list[Row] = []
        deletes: list[str] = []
        for key, entry in journal.items():
            if entry is None:
                deletes.append(key)
            else:
                puts.append(_row(key, entry, wall - (mono - entry.stored_at)))
        try:
            await self._on_thread(lambda: self.file.write(puts, deletes, everything=rewrite))
        except Exception as exc:
            # Keep the changes for the next flush, unless the key has changed again since.
            pending = self.store.journal
            if pending is not None:
                for key, entry in journal.items():
                    pending.setdefault(key, entry)
                if rewrite:
                    self._rewrite = True  # still owed
                if len(pending) > 2 * self.store.max_entries:
                    # A long outage of the disk, and random keys coming and going: stop
                    # noting each one and rewrite the whole file once it works again.
                    pending.clear()
                    self._rewrite = True
            if not self._failing:
                log.error("cannot write the cache file %s: %s (will retry)", self.file.path, exc)
            self._failing = True
            return
        if self._failing:
            log.warning("the cache file %s is written again", self.file.path)
        self._failing = False
        self.flushes += 1

    async def close(self) -> None:
        """Stop the loop, write what is left, close the file."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        await self._on_thread(self.file.close)
        self._thread.shutdown(wait=True)


def _row(key: str, entry: Entry, stored_wall: float) -> Row:
    return Row(
        key,
        entry.route,
        entry.status,
        entry.reason,
        entry.headers,
        entry.body,
        stored_wall,
        entry.limits,
    )


def cache_writer_for(
    settings: CacheLimits,
    base: Path,
    store: Store,
    *,
    clock: Callable[[], float],
    wall_clock: Callable[[], float],
) -> CacheWriter | None:
    """The cache's file, when ``cache.path`` asks for one (relative to ``base``)."""
    if settings.path is None:
        return None
    return CacheWriter(
        CacheFile(base / settings.path),
        store,
        interval=settings.flush_interval,
        clock=clock,
        wall_clock=wall_clock,
    )
