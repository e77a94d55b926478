"""The write buffer's journal on disk: append-only segment files of checksummed frames
(the format: :mod:`proxy.buffer.frames`).

Why this shape: appending is the only write, so a crash can only tear the last frame
of the last segment, which loading detects (a short or mis-checksummed tail) and cuts
off; everything before it is whole. A write is acknowledged only after its frame is
``fdatasync``ed (and the directory, when the segment was just created). ``A``/``D``/``R``
frames are not synced one by one: losing one in a crash means a write is delivered
again, which the ``Idempotency-Key`` makes harmless.

Space comes back by whole segments: the oldest segment is deleted once none of its
writes is still pending or dead, or, when few are, after those are copied to the
newest segment (synced first). Deleting oldest-first keeps every ``A`` frame until the
write it answers is gone too.

Blocking: every method does file I/O; :mod:`proxy.buffer.buffer` calls them on one thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.buffer.frames import (
    HEADER,
    Write,
    decode_resolution,
    decode_write,
    encode_write,
    read_frames,
    resolution_frame,
)

log = logging.getLogger("failover_proxy")

SEGMENT_SIZE = 64 * 1024**2


class JournalLocked(Exception):
    """Another process owns the journal directory."""


@dataclass
class Entry:
    """A write the journal still holds (pending or dead), and where its body is."""

    write: Write
    segment: int
    body_at: int  # offset of the body in the segment file
    body_len: int
    dead: dict[str, Any] | None = None  # the answer that made it a dead letter


@dataclass
class Segment:
    number: int
    path: Path
    size: int = 0
    live: set[str] = field(default_factory=set)  # ids of writes framed here, unresolved
    live_bytes: int = 0  # their frames' bytes (kept as they change: never re-summed)

    def attach(self, write: Write) -> None:
        if write.id not in self.live:
            self.live.add(write.id)
            self.live_bytes += write.size

    def detach(self, write: Write) -> None:
        if write.id in self.live:
            self.live.discard(write.id)
            self.live_bytes -= write.size


class Journal:
    def __init__(
        self,
        directory: Path,
        *,
        segment_size: int = SEGMENT_SIZE,
        write: Callable[[int, bytes], int] = os.write,
    ) -> None:
        self.directory = directory
        self.segment_size = segment_size
        self._write = write  # injectable: tests make it fail as a full disk would
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self.segments: list[Segment] = []
        self.live: dict[str, Entry] = {}
        self.dead: dict[str, Entry] = {}  # the dead letters among them
        self.next_seq = 1

    # -- opening -------------------------------------------------------------------

    def open(self) -> None:
        """Lock the directory, read every segment (cutting a torn tail), and get ready
        to append."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # holds request headers
        self._lock()
        numbers = sorted(
            int(p.name[8:-4])
            for p in self.directory.glob("journal-*.log")
            if p.name[8:-4].isdigit()
        )
        for i, number in enumerate(numbers):
            segment = Segment(number, self._segment_path(number))
            self.segments.append(segment)
            self._load(segment, last=i == len(numbers) - 1)
        if not self.segments:
            self._new_segment()
        else:
            self._fd = os.open(self.segments[-1].path, os.O_WRONLY | os.O_APPEND)

    def _lock(self) -> None:
        path = self.directory / "LOCK"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise JournalLocked(
                f"the buffer directory {self.directory} is in use by another failover-proxy "
                f"(pid {owner}); each process needs its own buffer.path"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _segment_path(self, number: int) -> Path:
        return self.directory / f"journal-{number:08d}.log"

    def _load(self, segment: Segment, *, last: bool) -> None:
        data = segment.path.read_bytes()
        offset = 0
        for kind, payload, start, end in read_frames(data):
            offset = end
            self._apply(segment, kind, payload, start)
        segment.size = offset
        if offset < len(data):
            where = f"{segment.path} at byte {offset} of {len(data)}"
            if last:
                log.warning("buffer: cutting a torn record off the journal tail (%s)", where)
                with open(segment.path, "r+b") as file:
                    file.truncate(offset)
                    os.fsync(file.fileno())
            else:
                log.error("buffer: unreadable bytes in %s; the rest of it is skipped", where)

    def _apply(self, segment: Segment, kind: bytes, payload: bytes, start: int) -> None:
        if kind == b"W":
            write, body_offset = decode_write(payload)
            body_at = start + HEADER.size + body_offset
            old = self.live.get(write.id)
            if old is not None:  # a copy made by compaction: the newer place wins
                self._segment(old.segment).detach(old.write)
            dead = old.dead if old is not None else None
            live = Entry(write, segment.number, body_at, len(payload) - body_offset, dead)
            self.live[write.id] = live
            if dead is not None:
                self.dead[write.id] = live
            segment.attach(write)
            self.next_seq = max(self.next_seq, write.seq + 1)
            return
        write_id, answer = decode_resolution(payload)
        target = self.live.get(write_id)
        if target is not None:
            self._mark(target, kind, answer)

    def _mark(self, live: Entry, kind: bytes, answer: dict[str, Any] | None) -> None:
        write_id = live.write.id
        if kind == b"A":
            self._forget(live)
        elif kind == b"D":
            live.dead = answer
            self.dead[write_id] = live
        else:
            live.dead = None
            self.dead.pop(write_id, None)

    def _segment(self, number: int) -> Segment:
        return next(s for s in self.segments if s.number == number)

    def _forget(self, live: Entry) -> None:
        del self.live[live.write.id]
        self.dead.pop(live.write.id, None)
        self._segment(live.segment).detach(live.write)

    # -- appending -----------------------------------------------------------------

    def _new_segment(self) -> None:
        number = self.segments[-1].number + 1 if self.segments else 1
        path = self._segment_path(number)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        _sync_directory(self.directory)  # the new name survives a crash too
        if self._fd is not None:
            # What went to the previous file (copies made by compaction among it) is
            # durable before anything can rely on it, e.g. deleting the originals.
            with contextlib.suppress(OSError):
                os.fdatasync(self._fd)
            os.close(self._fd)
        self._fd = fd
        self.segments.append(Segment(number, path))

    def _append(self, data: bytes) -> int:
        """Append ``data`` to the newest segment; returns where it starts. On any error
        the segment is cut back to where it was, so no torn frame stays behind."""
        if self.segments[-1].size >= self.segment_size:
            self._new_segment()
        segment = self.segments[-1]
        assert self._fd is not None
        start = segment.size
        try:
            written = 0
            while written < len(data):
                written += self._write(self._fd, data[written:])
        except OSError:
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                log.exception("buffer: cannot cut %s back after a failed write", segment.path)
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None
                self._new_segment()  # never append behind a torn frame
            raise
        segment.size = start + len(data)
        return start

    def add(self, writes: list[tuple[Write, bytes]]) -> None:
        """Append writes and sync them: when this returns, they survive a crash."""
        frames = [encode_write(write, body) for write, body in writes]
        start = self._append(b"".join(frames))
        assert self._fd is not None
        try:
            os.fdatasync(self._fd)
        except OSError:
            # Not known to be durable, so not acknowledged: it must not be replayed
            # either (the client may send it again).
            os.ftruncate(self._fd, start)
            self.segments[-1].size = start
            raise
        segment = self.segments[-1]
        for (write, body), frame in zip(writes, frames, strict=True):
            sized = dataclasses.replace(write, size=len(frame))
            body_at = start + len(frame) - len(body)
            self.live[write.id] = Entry(sized, segment.number, body_at, len(body))
            segment.attach(sized)
            start += len(frame)

    def resolve(self, kind: bytes, write_id: str, answer: dict[str, Any] | None = None) -> None:
        """``A`` (delivered), ``D`` (dead letter, with ``answer``) or ``R`` (retry)."""
        live = self.live.get(write_id)
        if live is None:
            return
        self._append(resolution_frame(kind, write_id, answer))
        self._mark(live, kind, answer)

    def body(self, write_id: str) -> bytes:
        live = self.live[write_id]
        with open(self._segment(live.segment).path, "rb") as file:
            return os.pread(file.fileno(), live.body_len, live.body_at)

    def dead_answer(self, write_id: str) -> dict[str, Any] | None:
        live = self.live.get(write_id)
        return None if live is None else live.dead

    # -- space ---------------------------------------------------------------------

    def compact(self) -> int:
        """Delete the oldest segments whose writes are all resolved, copying the few
        still live forward first; returns how many segments went."""
        removed = 0
        for _ in range(len(self.segments) - 1):  # each file at most once per call
            oldest = self.segments[0]
            if oldest.live:
                # Copy forward when the oldest file is mostly garbage, or when the files
                # hold more than twice what is live (plus one file): otherwise a mostly
                # live oldest file (dead letters, a long backlog) would pin every file
                # behind it and the disk would grow without bound.
                on_disk = sum(segment.size for segment in self.segments)
                live = sum(segment.live_bytes for segment in self.segments)
                mostly_live = oldest.live_bytes * 2 > oldest.size
                if mostly_live and on_disk <= 2 * live + self.segment_size:
                    break
                self._relocate(oldest)
            oldest.path.unlink()
            _sync_directory(self.directory)
            self.segments.pop(0)
            removed += 1
        return removed

    def _relocate(self, segment: Segment) -> None:
        items = sorted((self.live[i] for i in segment.live), key=lambda live: live.write.seq)
        moved = [(live, self.body(live.write.id)) for live in items]
        for live, body in moved:
            frames = encode_write(live.write, body)
            if live.dead is not None:
                frames += resolution_frame(b"D", live.write.id, live.dead)
            start = self._append(frames)
            segment.detach(live.write)
            target = self.segments[-1]
            target.attach(live.write)
            live.segment = target.number
            live.body_at = start + live.write.size - len(body)
        assert self._fd is not None
        os.fdatasync(self._fd)  # the copies are safe before the original goes

    def close(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)
