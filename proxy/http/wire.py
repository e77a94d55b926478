"""HTTP/1.1 messages as bytes: the heads the proxy writes, and the answers it sends.

Header names and values travel as ``str`` decoded from latin-1, which maps every byte
to one code point and back: ``value.encode("latin-1")`` gives exactly the bytes that
arrived, so obs-text (0x80-0xFF) crosses the proxy unchanged while the header rules
work on text. A head is built in one join and leaves in one write.

Nothing is invented: no ``Server``, no ``Content-Type``. ``Date`` is added only where
the message has none (RFC 9110 section 6.6.1); its text is rebuilt once a second by a
loop timer, not per message.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

from proxy.upstreams.response import LAST_CHUNK, chunk, request_head

__all__ = ["LAST_CHUNK", "DateClock", "Reply", "chunk", "request_head", "response_head"]

HeaderPairs = list[tuple[str, str]]

_REASONS = {status.value: status.phrase for status in HTTPStatus}


def reason_for(status: int) -> str:
    return _REASONS.get(status, "Unknown")


class DateClock:
    """The ``Date`` header's text, refreshed once a second (RFC 9110 section 5.6.7)."""

    def __init__(self) -> None:
        self.value = email.utils.formatdate(usegmt=True)
        self.line = f"Date: {self.value}\r\n"
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Keep the text current on ``loop`` (once per loop: a second listener shares it)."""
        if self._loop is loop and self._handle is not None:
            return
        self._loop = loop
        self._tick(loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now = time.time()
        self.value = email.utils.formatdate(now, usegmt=True)
        self.line = f"Date: {self.value}\r\n"
        self._handle = loop.call_later(1.0 - now % 1.0 + 0.001, self._tick, loop)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._loop = None


DATE = DateClock()


@dataclass(slots=True)
class Reply:
    """An answer to the client: status, headers (end-to-end only: framing is the
    writer's), and a body given whole or as a stream.

    ``stream`` yields the body as it arrives; if it raises, the client connection is
    aborted (never a clean end). ``length`` is the stream's Content-Length when known.
    ``keep_length``: a HEAD or 304 answer whose Content-Length describes the GET body.
    """

    status: int
    headers: HeaderPairs = field(default_factory=list)
    body: bytes = b""
    reason: str | None = None
    stream: AsyncIterator[bytes] | None = None
    length: int | None = None
    keep_length: str | None = None
    close: bool = False  # close the connection after this answer
    # header lines rendered already (a stored answer's, once per entry), before ``headers``
    fields: str = ""
    dated: bool = False  # the headers hold a Date (else one is looked for, and added)
    # a 101: what takes the client's connection over once the head is written (the
    # client's transport and the bytes it sent after its request's head)
    tunnel: Callable[[asyncio.Transport, bytes], None] | None = None


def render_fields(headers: HeaderPairs) -> str:
    """Header lines as they go out."""
    return "".join([f"{name}: {value}\r\n" for name, value in headers])


def has_date(fields: str) -> bool:
    """Whether rendered header lines hold a Date (a field value holds no CR or LF, so
    a line's start is a field name's start)."""
    return fields[:5].lower() == "date:" or "\ndate:" in fields.lower()


_status_lines: dict[tuple[int, str | None], str] = {}


def status_line(status: int, reason: str | None) -> str:
    """``HTTP/1.1 200 OK`` and its line end; the few there are, built once each."""
    line = _status_lines.get((status, reason))
    if line is None:
        text = reason if reason is not None else reason_for(status)
        line = f"HTTP/1.1 {status} {text}\r\n"
        if len(_status_lines) < 1024:  # an upstream's reason phrases are its own
            _status_lines[status, reason] = line
    return line


def response_head(
    reply: Reply, *, version: tuple[int, int], head_only: bool, keep_alive: bool
) -> tuple[bytes, bool]:
    """The status line and header section for ``reply``, and whether the body is sent
    chunked. Framing follows RFC 9112 section 6: no body for 1xx/204/304 or HEAD."""
    status = reply.status
    fields = render_fields(reply.headers)
    if reply.fields:
        fields = reply.fields + fields
    parts = [status_line(status, reply.reason), fields]
    if not reply.dated and not has_date(fields):
        parts.append(DATE.line)
    chunked = False
    if not (status < 200 or status in (204, 304)):
        if head_only:
            if reply.keep_length is not None:
                parts.append(f"Content-Length: {reply.keep_length}\r\n")
        elif reply.stream is None:
            parts.append(f"Content-Length: {len(reply.body)}\r\n")
        elif reply.length is not None:
            parts.append(f"Content-Length: {reply.length}\r\n")
        elif version >= (1, 1):
            parts.append("Transfer-Encoding: chunked\r\n")
            chunked = True
        else:
            keep_alive = False  # an HTTP/1.0 client: the end of the body is the close
    elif status == 304 and reply.keep_length is not None:
        parts.append(f"Content-Length: {reply.keep_length}\r\n")
    if reply.tunnel is not None:
        pass  # a 101 carries its own Connection: Upgrade
    elif not keep_alive or reply.close:
        parts.append("Connection: close\r\n")
    elif version < (1, 1):
        parts.append("Connection: keep-alive\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("latin-1"), chunked
