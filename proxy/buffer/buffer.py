"""The durable write buffer (docs/configuration.md, "Writes: the durable buffer"):
accepting writes into the journal, and replaying them in arrival order per route until an upstream
takes them.

Accepting: a write is acknowledged (``202``) only when its frame is synced. Concurrent
accepts share one ``fdatasync`` (group commit): while one batch is being synced the
next one gathers, so a burst costs a few syncs, not one each. Every journal call runs
on one dedicated thread, in order; the event loop never waits on the disk.

Replaying: one task walks the routes with queued writes; for each route it sends the
oldest write (through :class:`Deliver`, which tries the route's upstreams in order,
respecting their breakers and cooldowns) and only then the next one. A route whose
head write could not be delivered waits out a backoff; a flush (admin API) ends
every wait at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from proxy.buffer.frames import Write
from proxy.buffer.journal import Entry, Journal
from proxy.buffer.rules import Verdict, replay_backoff
from proxy.buffer.status import BufferStatus, dead_letter_json
from proxy.config.schema import Buffer
from proxy.ops.stats import RecentCounts

log = logging.getLogger("failover_proxy")

T = TypeVar("T")
Deliver = Callable[[Write, bytes], Awaitable[tuple[Verdict, dict[str, Any] | None]]]


class BufferFull(Exception):
    """No room for this write: 503 with Retry-After; nothing accepted is dropped."""


class BufferBroken(Exception):
    """The write could not be made durable (a full disk, an I/O error): 503, never 202."""


@dataclass(frozen=True, slots=True)
class BufferSettings:
    max_size: int
    max_records: int
    strict_order: bool
    idempotency_header: str
    replay_backoff: float
    max_replay_backoff: float


class WriteBuffer:
    def __init__(
        self,
        journal: Journal,
        settings: BufferSettings,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        self.journal = journal
        self.settings = settings
        self._clock = clock
        self._wall_clock = wall_clock
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="buffer")
        self.queues: dict[str, deque[Write]] = {}  # route -> writes waiting, oldest first
        self.bytes = 0  # frames of every write still in the journal (dead letters too)
        self.records = 0
        self._batch: list[tuple[Write, bytes, int, asyncio.Future[None]]] = []
        self._committing: asyncio.Task[None] | None = None
        self._replayer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._not_before: dict[str, float] = {}  # route -> when to try its head again
        self._failures: dict[str, int] = {}
        self.delivered = RecentCounts(clock)  # "delivered", "dead", "retry" per minute
        self.totals: dict[tuple[str, str], int] = {}  # (route, verdict or "accepted") -> n
        self._closed = False
        self.flushes = 0  # flush() calls so far
        self._retrying: set[str] = set()
        self.passed_flush = 0  # flushes seen by the last whole replay pass

    async def _on_thread(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    # -- start and stop ------------------------------------------------------------

    async def open(self, routes: Iterable[str]) -> None:
        """Read the journal; writes for routes that no longer buffer become dead
        letters (never sent to a different upstream)."""
        await self._on_thread(self.journal.open)
        known = set(routes)
        for live in sorted(self.journal.live.values(), key=lambda live: live.write.seq):
            write = live.write
            self.bytes += write.size
            self.records += 1
            if live.dead is not None:
                continue
            if write.route not in known:
                answer = {"reason": f"the route {write.route!r} no longer buffers writes"}
                await self._on_thread(partial(self.journal.resolve, b"D", write.id, answer))
                continue
            self.queues.setdefault(write.route, deque()).append(write)
        waiting = sum(len(q) for q in self.queues.values())
        log.info("buffer: %d writes to replay, %d dead letters", waiting, self.dead_count())

    def start(self, deliver: Deliver) -> None:
        self._replayer = asyncio.create_task(self._replay(deliver), name="buffer replay")

    async def drain(self, timeout: float) -> int:
        """At shutdown: deliver what waits (every backoff skipped) while upstreams take
        writes, for up to ``timeout`` seconds; a round that delivers nothing ends it.
        Returns how many writes still wait (they stay on disk)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._replayer is not None and not self._replayer.done():
            before = self.status().depth
            if not before:
                break
            self.flush()
            while self.passed_flush < self.flushes and loop.time() < deadline:
                await asyncio.sleep(0.01)  # until a whole pass began after this flush
            if self.status().depth >= before or loop.time() >= deadline:
                break  # a whole pass and nothing taken: no upstream takes writes now
        return self.status().depth

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in (self._replayer, self._committing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._on_thread(self.journal.close)
        self._thread.shutdown(wait=True)

    # -- accepting -----------------------------------------------------------------

    def pending(self, route: str) -> bool:
        """Whether new writes for ``route`` must queue behind buffered ones."""
        return self.settings.strict_order and bool(self.queues.get(route))

    async def accept(
        self,
        route: str,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        idempotency_key: str | None,
        client_ip: str | None,
    ) -> Write:
        """Keep a write durably; raises :class:`BufferFull` or :class:`BufferBroken`."""
        size = len(body) + sum(len(n) + len(v) for n, v in headers) + len(target) + 256
        if self.bytes + size > self.settings.max_size or self.records >= self.settings.max_records:
            raise BufferFull(
                f"the write buffer is full ({self.records} writes, {self.bytes} bytes)"
            )
        write = Write(
            id=secrets.token_hex(8),
            seq=self.journal.next_seq,
            route=route,
            method=method,
            target=target,
            headers=tuple(headers),
            idempotency_key=idempotency_key or f"failover-{secrets.token_hex(16)}",
            arrived=self._wall_clock(),
            client_ip=client_ip,
        )
        self.journal.next_seq += 1
        self.bytes += size  # reserved now, so concurrent accepts respect the bound
        self.records += 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._batch.append((write, body, size, done))
        if self._committing is None or self._committing.done():
            self._committing = asyncio.create_task(self._commit(), name="buffer commit")
        # Shielded: a client that goes away does not undo a write being synced (it is
        # then kept and replayed; the client just never hears of it).
        await asyncio.shield(done)
        return write

    async def _commit(self) -> None:
        """Sync what has gathered, batch after batch, until nothing waits."""
        while self._batch:
            batch, self._batch = self._batch, []
            writes = [(write, body) for write, body, _, _ in batch]
            try:
                await self._on_thread(partial(self.journal.add, writes))
            except OSError as exc:
                log.error("buffer: cannot write the journal: %s", exc)
                for _, _, size, done in batch:
                    self.bytes -= size
                    self.records -= 1
                    done.set_exception(BufferBroken(f"the write buffer cannot write: {exc}"))
                continue
            for write, _, size, done in batch:
                kept = self.journal.live[write.id].write
                self.bytes += kept.size - size  # the frame's real size
                self.queues.setdefault(write.route, deque()).append(kept)
                key = (write.route, "accepted")
                self.totals[key] = self.totals.get(key, 0) + 1
                done.set_result(None)
            self._wake.set()

    # -- replaying -----------------------------------------------------------------

    def flush(self) -> None:
        """Try every route's head write now, whatever its backoff."""
        self._not_before.clear()
        self.flushes += 1
        self._wake.set()

    async def _replay(self, deliver: Deliver) -> None:
        while True:
            self._wake.clear()
            flushes = self.flushes  # those before this pass began: its backoffs are gone
            worked = False
            for route in [r for r, q in self.queues.items() if q]:
                if self._clock() < self._not_before.get(route, 0.0):
                    continue
                worked = await self._replay_head(route, deliver) or worked
            self.passed_flush = flushes
            if worked:
                continue
            delay = min(
                (t - self._clock() for r, t in self._not_before.items() if self.queues.get(r)),
                default=None,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), None if delay is None else max(0.0, delay)
                )

    async def _replay_head(self, route: str, deliver: Deliver) -> bool:
        """Send the route's oldest write; True when it left the queue."""
        queue = self.queues[route]
        write = queue[0]
        if write.id not in self.journal.live:  # resolved already (an admin delete)
            queue.remove(write)
            return True
        try:
            body = await self._on_thread(lambda: self.journal.body(write.id))
            result, answer = await deliver(write, body)
        except Exception:
            log.exception("buffer: replaying %s failed", write.id)
            result, answer = Verdict.RETRY, None
        self.delivered.add(result.value)
        self.totals[route, result.value] = self.totals.get((route, result.value), 0) + 1
        if result is Verdict.RETRY:
            failures = self._failures[route] = self._failures.get(route, 0) + 1
            wait = replay_backoff(
                failures, self.settings.replay_backoff, self.settings.max_replay_backoff
            )
            self._not_before[route] = self._clock() + wait
            return False
        self._failures.pop(route, None)
        self._not_before.pop(route, None)
        # By identity: a dead letter retried meanwhile may have been sorted in ahead.
        if write in queue:
            queue.remove(write)
        if result is Verdict.DELIVERED:
            await self._resolve(b"A", write, None)
            self.bytes -= write.size
            self.records -= 1
        else:
            await self._resolve(b"D", write, answer)
            log.warning(
                "buffer: write %s to route %s is a dead letter: %s", write.id, route, answer
            )
        return True

    async def _resolve(self, kind: bytes, write: Write, answer: dict[str, Any] | None) -> None:
        try:
            await self._on_thread(lambda: self._resolve_and_compact(kind, write.id, answer))
        except OSError as exc:  # not fatal: at worst the write is delivered again
            log.error("buffer: cannot record the outcome of %s: %s", write.id, exc)

    def _resolve_and_compact(
        self, kind: bytes, write_id: str, answer: dict[str, Any] | None
    ) -> None:
        self.journal.resolve(kind, write_id, answer)
        self.journal.compact()

    # -- dead letters and status -----------------------------------------------------

    def _dead(self) -> list[Entry]:
        """The dead letters, copied in one step: the journal's maps change on the
        buffer's thread, and copying a dict view is atomic under the GIL, iterating it
        is not."""
        return list(self.journal.dead.values())

    def dead_letters(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The dead letters, oldest first (the first ``limit`` of them)."""
        dead = sorted(self._dead(), key=lambda live: live.write.seq)[:limit]
        return [dead_letter_json(live) for live in dead]

    def dead_count(self) -> int:
        return len(self.journal.dead)

    async def retry_dead(self, write_id: str) -> bool:
        live = self.journal.live.get(write_id)
        if live is None or live.dead is None or write_id in self._retrying:
            return False
        self._retrying.add(write_id)  # a second call while this one awaits is refused
        try:
            await self._on_thread(lambda: self.journal.resolve(b"R", write_id))
        finally:
            self._retrying.discard(write_id)
        queue = self.queues.setdefault(live.write.route, deque())
        if all(w.id != write_id for w in queue):
            # In arrival order, but never ahead of a head being replayed right now.
            rest = sorted([*list(queue)[1:], live.write], key=lambda w: w.seq)
            head = [queue[0]] if queue else []
            queue.clear()
            queue.extend(head + rest)
        self.flush()
        return True

    async def delete_dead(self, write_id: str) -> bool:
        live = self.journal.live.get(write_id)
        if live is None or live.dead is None:
            return False
        size = live.write.size
        await self._on_thread(lambda: self._resolve_and_compact(b"A", write_id, None))
        self.bytes -= size
        self.records -= 1
        return True

    def status(self) -> BufferStatus:
        # Queues are in arrival order: the oldest waiting write heads one of them.
        oldest = min((queue[0].arrived for queue in self.queues.values() if queue), default=None)
        recent = self.delivered.counts()
        return BufferStatus(
            depth=sum(len(q) for q in self.queues.values()),
            bytes=self.bytes,
            max_bytes=self.settings.max_size,
            oldest_age_s=None if oldest is None else round(self._wall_clock() - oldest, 1),
            by_route={route: len(q) for route, q in self.queues.items() if q},
            delivered_last_minute=recent["delivered"],
            failed_replays_last_minute=recent["retry"],
            dead_letters=self.dead_count(),
        )


def write_buffer_for(
    settings: Buffer, base: Path, *, clock: Callable[[], float], wall_clock: Callable[[], float]
) -> WriteBuffer | None:
    """The durable write buffer, when ``buffer.path`` asks for one (relative to ``base``)."""
    if settings.path is None:
        return None
    return WriteBuffer(
        Journal(base / settings.path, segment_size=settings.segment_size),
        BufferSettings(
            max_size=settings.max_size,
            max_records=settings.max_records,
            strict_order=settings.ordering == "strict",
            idempotency_header=settings.idempotency_header,
            replay_backoff=settings.replay_backoff,
            max_replay_backoff=settings.max_replay_backoff,
        ),
        clock=clock,
        wall_clock=wall_clock,
    )
