"""The journal's format: a buffered :class:`Write`, and the checksummed frames it and
its fate are kept in. Pure: bytes in, bytes out; :mod:`proxy.buffer.journal` does the
files.

A frame is ``length (4 bytes) | crc32 (4) | kind (1) | payload``; the crc covers kind and
payload. Kinds: ``W`` a buffered write (its metadata as JSON, then its body), ``A`` a
write delivered (its id), ``D`` a write moved to the dead letters (id and the answer
that put it there), ``R`` a dead letter sent back to the queue (its id).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

HEADER = struct.Struct(">IIc")
MAX_FRAME = 1 << 31
KINDS = (b"W", b"A", b"D", b"R")


@dataclass(frozen=True, slots=True)
class Write:
    """A buffered write, as the replayer needs it."""

    id: str
    seq: int  # arrival order across the journal
    route: str
    method: str
    target: str  # path and query, as forwarded
    headers: tuple[tuple[str, str], ...]
    idempotency_key: str
    arrived: float  # wall clock
    client_ip: str | None  # for X-Forwarded-For when it is replayed
    size: int = 0  # bytes of its frame (set when it is written)


def frame(kind: bytes, payload: bytes) -> bytes:
    return HEADER.pack(len(payload), zlib.crc32(kind + payload), kind) + payload


def encode_write(write: Write, body: bytes) -> bytes:
    meta = json.dumps(
        {
            "id": write.id,
            "seq": write.seq,
            "route": write.route,
            "method": write.method,
            "target": write.target,
            "headers": write.headers,
            "key": write.idempotency_key,
            "arrived": write.arrived,
            "ip": write.client_ip,
        },
        separators=(",", ":"),
    ).encode()
    return frame(b"W", struct.pack(">I", len(meta)) + meta + body)


def decode_write(payload: bytes) -> tuple[Write, int]:
    """A ``W`` frame's write (sized as its whole frame), and where in ``payload`` its
    body starts (the body runs to the end)."""
    (meta_len,) = struct.unpack_from(">I", payload)
    meta = json.loads(payload[4 : 4 + meta_len])
    write = Write(
        meta["id"],
        meta["seq"],
        meta["route"],
        meta["method"],
        meta["target"],
        tuple((str(n), str(v)) for n, v in meta["headers"]),
        meta["key"],
        meta["arrived"],
        meta["ip"],
        HEADER.size + len(payload),
    )
    return write, 4 + meta_len


def resolution_frame(kind: bytes, write_id: str, answer: dict[str, Any] | None) -> bytes:
    """An ``A``, ``D`` (with the ``answer``) or ``R`` frame for the write ``write_id``."""
    payload: dict[str, Any] = {"id": write_id}
    if answer is not None:
        payload["answer"] = answer
    return frame(kind, json.dumps(payload, separators=(",", ":")).encode())


def decode_resolution(payload: bytes) -> tuple[str, dict[str, Any] | None]:
    """An ``A``/``D``/``R`` frame's write id and answer."""
    record = json.loads(payload)
    return record["id"], record.get("answer")


def read_frames(data: bytes) -> Iterator[tuple[bytes, bytes, int, int]]:
    """``(kind, payload, start, end)`` for each whole frame; stops at the first that is
    short or fails its checksum."""
    offset = 0
    while offset + HEADER.size <= len(data):
        length, crc, kind = HEADER.unpack_from(data, offset)
        end = offset + HEADER.size + length
        if length >= MAX_FRAME or end > len(data):
            return
        payload = data[offset + HEADER.size : end]
        if zlib.crc32(kind + payload) != crc or kind not in KINDS:
            return
        yield kind, payload, offset, end
        offset = end
