"""Streamed answers (Server-Sent Events, NDJSON): the decisions made before a commit.

A buffered answer is judged whole; a streamed one cannot be, or the client would wait
for its end. So the proxy holds a stream's bytes only until its first event that
carries data, checks that event, and then commits to the upstream (or fails the try
and moves on). Three decisions live here, all without I/O:

1. ``stream_kind``: is this answer a stream (``response_mode``: auto, buffer, stream),
   and of which kind. The kind follows the Content-Type, whatever chose streaming.
2. ``FirstEventScanner``: where the first event carrying data ends, and whether it is
   an in-band error (an ``event: error`` or a JSON error object), which fails the try.
3. ``ErrorWatch``: after the commit, for routes with ``abort_on_error_event``, whether a
   later event is an error, with a bounded memory.

SSE is parsed as the WHATWG HTML standard's EventSource "interpret an event stream"
(section 9.2.6): lines end in CRLF, LF or CR; a blank line dispatches; ``:`` starts a
comment; an event with an empty data buffer is not dispatched. NDJSON lines end at LF
(a CR before it is stripped), and blank lines are skipped. Other stream types have no
events the proxy understands: their first non-empty bytes commit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

ERROR_WATCH_LIMIT = 64 * 1024  # a longer partial event is skipped, never buffered
_BOM = b"\xef\xbb\xbf"
_JSON_SPACE = b" \t\r\n"
_EXCERPT_CHARS = 80


class StreamKind(Enum):
    SSE = "sse"
    NDJSON = "ndjson"
    OTHER = "other"


_KIND_BY_MEDIA = {
    "text/event-stream": StreamKind.SSE,
    "application/x-ndjson": StreamKind.NDJSON,
    "application/jsonl": StreamKind.NDJSON,
    "multipart/x-mixed-replace": StreamKind.OTHER,
}
_GRPC_WEB = "application/grpc-web"  # also grpc-web+proto, grpc-web-text, ...


def media_type(content_type: str | None) -> str:
    """``Text/Event-Stream; charset=utf-8`` -> ``text/event-stream``; ``""`` when none."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def _kind_of(media: str) -> StreamKind:
    return _KIND_BY_MEDIA.get(media, StreamKind.OTHER)


def _is_stream_media(media: str) -> bool:
    return media in _KIND_BY_MEDIA or media.startswith(_GRPC_WEB)


def _quality(params: str) -> float:
    """The ``q`` of one Accept item's parameters; 1 when absent or unreadable."""
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip() == "q":
            try:
                return float(value.strip())
            except ValueError:
                return 1.0
    return 1.0


def asks_for_event_stream(accept: str) -> bool:
    """Accept lists ``text/event-stream`` itself (not a wildcard) with q above 0."""
    lowered = accept.lower()
    if "text/event-stream" not in lowered:
        return False
    for item in lowered.split(","):
        media, _, params = item.partition(";")
        if media.strip() == "text/event-stream" and _quality(params) > 0:
            return True
    return False


def stream_kind(
    mode: str, content_type: str | None, accel_buffering: str | None, accept: str | None
) -> StreamKind | None:
    """The answer's stream kind, or None when it is buffered as any other answer.

    In ``auto`` an answer streams when its media type is a streaming one, when the
    upstream sent ``X-Accel-Buffering: no`` (nginx's switch for the same thing), or
    when the request's Accept asked for ``text/event-stream``.
    """
    if mode == "buffer":
        return None
    media = media_type(content_type)
    if mode == "stream":
        return _kind_of(media)
    if mode != "auto":
        raise ValueError(f"response_mode is auto, buffer or stream, not {mode!r}")
    if (
        _is_stream_media(media)
        or (accel_buffering is not None and accel_buffering.strip().lower() == "no")
        or (accept is not None and asks_for_event_stream(accept))
    ):
        return _kind_of(media)
    return None


def _excerpt(value: Any) -> str:
    """A short printable piece of an upstream's error message, for logs."""
    if isinstance(value, dict):
        value = value.get("message")
    if not isinstance(value, str) or not value:
        return ""
    text = "".join(char if char.isprintable() else "?" for char in value[:_EXCERPT_CHARS])
    return f": {text}" if len(value) <= _EXCERPT_CHARS else f": {text}..."


def in_band_error(data: bytes) -> str | None:
    """Why one event's data is an error object, or None.

    An error is a JSON object with a top-level ``error`` member that is not null, false,
    0 or empty (OpenAI's ``{"error": {...}}``, Ollama's ``{"error": "..."}``), or one
    with ``"object": "error"`` (vLLM and others). The letters of ``error`` can only
    appear literally or as a ``\\u`` escape in JSON, so data with neither is not parsed.
    """
    if not data.lstrip(_JSON_SPACE).startswith(b"{"):
        return None
    if b"error" not in data and b"\\u" not in data:
        return None
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    if document.get("error"):
        return 'a JSON "error" member' + _excerpt(document["error"])
    if document.get("object") == "error":
        return 'a JSON "object": "error"' + _excerpt(document)
    return None


class _Lines:
    """Bytes to complete lines, across chunks split at any byte.

    SSE lines end in CRLF, LF or CR (a CR ending one chunk may pair with an LF starting
    the next); NDJSON lines end at LF with a CR before it stripped. A UTF-8 BOM at the
    very start is dropped. With a ``limit``, a line longer than it comes out as None and
    its bytes are not kept.
    """

    def __init__(self, any_line_end: bool, limit: int | None) -> None:
        self._any_line_end = any_line_end
        self._limit = limit
        self._partial = bytearray()
        self._overflow = False
        self._after_cr = False
        self._head: bytes | None = b""  # bytes seen while the BOM is undecided

    def feed(self, chunk: bytes) -> list[bytes | None]:
        if self._head is not None:
            head = self._head + chunk
            if len(head) < len(_BOM) and _BOM.startswith(head):
                self._head = head
                return []
            self._head = None
            chunk = head.removeprefix(_BOM)
        if not chunk:
            return []
        if self._any_line_end:
            if self._after_cr and chunk.startswith(b"\n"):
                chunk = chunk[1:]
            self._after_cr = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *complete, rest = chunk.split(b"\n")
        lines: list[bytes | None] = []
        if complete:
            lines.append(None if self._overflow else bytes(self._partial) + complete[0])
            lines.extend(complete[1:])
            self._partial.clear()
            self._overflow = False
        if not self._overflow:
            self._partial += rest
            if self._limit is not None and len(self._partial) > self._limit:
                self._partial.clear()
                self._overflow = True
        if not self._any_line_end:
            lines = [line.removesuffix(b"\r") if line else line for line in lines]
        if self._limit is not None:
            lines = [line if line is None or len(line) <= self._limit else None for line in lines]
        return lines


@dataclass(frozen=True, slots=True)
class _Event:
    type: bytes  # SSE's event field ("" for the default "message"); NDJSON: ""
    data: bytes


class _Events:
    """Complete events carrying data, from SSE or NDJSON bytes; events over ``limit``
    bytes (when set) are skipped whole."""

    def __init__(self, kind: StreamKind, limit: int | None) -> None:
        self._sse = kind is StreamKind.SSE
        self._limit = limit
        self._lines = _Lines(any_line_end=self._sse, limit=limit)
        self._data: list[bytes] = []
        self._size = 0
        self._type = b""
        self._skipping = False

    def feed(self, chunk: bytes) -> list[_Event]:
        if self._sse:
            return [event for line in self._lines.feed(chunk) if (event := self._sse_line(line))]
        return [
            _Event(b"", line) for line in self._lines.feed(chunk) if line and not line.isspace()
        ]

    def _sse_line(self, line: bytes | None) -> _Event | None:
        if line is None:
            self._skipping = True
            self._data.clear()
            return None
        if not line:
            event = None
            if self._data and not self._skipping:
                event = _Event(self._type, b"\n".join(self._data))
            self._data.clear()
            self._size = 0
            self._type = b""
            self._skipping = False
            return event
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data" and not self._skipping:
            self._size += len(value) + 1
            if self._limit is not None and self._size > self._limit:
                self._skipping = True
                self._data.clear()
            else:
                self._data.append(value)
        elif name == b"event":
            self._type = value
        return None  # comments (empty name), id, retry and unknown fields carry no data


def _event_error(event: _Event) -> str | None:
    if event.type == b"error":
        return "the event type is error"
    return in_band_error(event.data)


@dataclass(frozen=True, slots=True)
class FirstEvent:
    """The first event carrying data: what commits a stream, or fails its try."""

    data: bytes  # SSE: data lines joined by LF; NDJSON: the line; OTHER: bytes held
    error: str | None  # why it is an in-band error, None when it is good


class FirstEventScanner:
    """Holds a stream's start until its first event carrying data is complete.

    ``held`` is what the caller buffered so far: the caller bounds it (a stream that
    sends no data within its limits is a failed try), so the scanner does not.
    """

    def __init__(self, kind: StreamKind) -> None:
        self._events = None if kind is StreamKind.OTHER else _Events(kind, limit=None)
        self._found: FirstEvent | None = None
        self.held = 0

    def feed(self, chunk: bytes) -> FirstEvent | None:
        self.held += len(chunk)
        if self._found is not None:
            return self._found
        if self._events is None:
            if chunk:
                self._found = FirstEvent(data=chunk, error=None)
            return self._found
        events = self._events.feed(chunk)
        if events:
            reason = _event_error(events[0])
            error = None if reason is None else f"the first event is an error ({reason})"
            self._found = FirstEvent(data=events[0].data, error=error)
        return self._found


class ErrorWatch:
    """Finds an error event after the commit, for ``abort_on_error_event``.

    Feed it the answer from its first byte (the held bytes too): the first event was
    already found good, so reading it again reports nothing, and the parser starts in
    step with the stream. Memory is bounded by ``ERROR_WATCH_LIMIT``: a longer event or
    line is skipped unread. Streams of kind OTHER have no events, so never report.
    """

    def __init__(self, kind: StreamKind) -> None:
        self._events = None if kind is StreamKind.OTHER else _Events(kind, ERROR_WATCH_LIMIT)

    def feed(self, chunk: bytes) -> str | None:
        if self._events is None:
            return None
        for event in self._events.feed(chunk):
            reason = _event_error(event)
            if reason is not None:
                return f"an error event in the stream ({reason})"
        return None
