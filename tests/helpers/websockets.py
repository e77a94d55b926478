"""WebSocket upstreams and clients for the upgrade tests (tests/e2e/test_upgrades.py).

:class:`WebSocketUpstream` is an aiohttp handler (``web.WebSocketResponse``) that echoes
what it gets and obeys a few text commands, recording each session it served. For what
aiohttp's client hides (the exact lines of the 101, bytes sent in the same packet as the
request's head) there are raw pieces: a handshake with RFC 6455's sample key, frame
encoders, and a reader for a response head.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

# RFC 6455 section 1.3: the sample nonce and the accept value it yields
SAMPLE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
SAMPLE_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY = 0x1, 0x2
_MASK = b"\x37\xfa\x21\x3d"


def accept_for(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server answers to ``key`` (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()


@dataclass
class Session:
    """One WebSocket the upstream served."""

    headers: CIMultiDictProxy[str]  # of the handshake request as it arrived
    protocol: str | None
    received: int = 0  # messages
    ended_at: float | None = None  # loop time the upstream's receive loop ended
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class WebSocketUpstream:
    """An aiohttp handler accepting WebSockets: binary messages are answered with
    ``reply(data)`` (an echo by default) and text ones echoed, except commands:

    - ``close <code> <reason>``: the upstream closes with that code and reason;
    - ``tick <count> <interval>``: it sends ``count`` text messages ``interval`` apart.
    """

    def __init__(
        self,
        protocols: Sequence[str] = (),
        reply: Callable[[bytes], bytes] = bytes,
    ) -> None:
        self.protocols = tuple(protocols)
        self.reply = reply
        self.sessions: list[Session] = []

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=self.protocols)
        await ws.prepare(request)
        session = Session(request.headers.copy(), ws.ws_protocol)
        self.sessions.append(session)
        try:
            async for message in ws:
                session.received += 1
                if message.type == aiohttp.WSMsgType.BINARY:
                    await ws.send_bytes(self.reply(message.data))
                elif message.type == aiohttp.WSMsgType.TEXT:
                    await self._text(ws, message.data)
        finally:
            session.ended_at = asyncio.get_running_loop().time()
            session.ended.set()
        return ws

    async def _text(self, ws: web.WebSocketResponse, text: str) -> None:
        command, _, rest = text.partition(" ")
        if command == "close":
            code, _, reason = rest.partition(" ")
            await ws.close(code=int(code), message=reason.encode())
        elif command == "tick":
            count, interval = rest.split()
            for n in range(int(count)):
                await asyncio.sleep(float(interval))
                await ws.send_str(f"tick {n}")
        else:
            await ws.send_str(text)


def handshake_headers(ws: aiohttp.ClientWebSocketResponse) -> CIMultiDictProxy[str]:
    """The headers of the 101 that opened ``ws`` (aiohttp keeps them on its response)."""
    return ws._response.headers


async def ended(ws: aiohttp.ClientWebSocketResponse, within: float) -> aiohttp.WSMessage:
    """The message that ends ``ws`` (a close frame, or the connection closing under it);
    fails if a data message comes first or nothing ends it within ``within`` seconds."""
    async with asyncio.timeout(within):
        message = await ws.receive()
    assert message.type in (
        aiohttp.WSMsgType.CLOSE,
        aiohttp.WSMsgType.CLOSING,
        aiohttp.WSMsgType.CLOSED,
        aiohttp.WSMsgType.ERROR,
    ), f"a {message.type.name} message instead of the end: {message.data!r}"
    return message


# --- raw bytes ------------------------------------------------------------------------


def handshake(
    path: str = "/ws",
    *,
    upgrade: str = "websocket",
    key: str = SAMPLE_KEY,
    extra: Iterable[str] = (),
) -> bytes:
    """A client's opening handshake (RFC 6455 section 4.1), as sent on the wire."""
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Connection: Upgrade",
        f"Upgrade: {upgrade}",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def switching_protocols(key: str = SAMPLE_KEY) -> bytes:
    """An upstream's 101 to a handshake with ``key``."""
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_for(key)}\r\n\r\n"
    ).encode()


def frame(payload: bytes, opcode: int = BINARY, *, masked: bool = True) -> bytes:
    """One final frame (RFC 6455 section 5.2); a client's frames are masked."""
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, mask_bit | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, mask_bit | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, mask_bit | 127, size)
    if not masked:
        return head + payload
    body = bytes(byte ^ _MASK[i % 4] for i, byte in enumerate(payload))
    return head + _MASK + body


@dataclass(frozen=True)
class Head:
    """A response head as it arrived: the status and each header line, in order."""

    raw: bytes
    status: int
    fields: list[tuple[str, str]]

    @property
    def headers(self) -> CIMultiDict[str]:
        return CIMultiDict(self.fields)

    def count(self, name: str) -> int:
        return sum(1 for field_name, _ in self.fields if field_name.lower() == name.lower())


def parse_head(raw: bytes) -> Head:
    status_line = raw.partition(b"\r\n")[0].decode("latin-1")
    return Head(raw, int(status_line.split(" ", 2)[1]), _fields(raw))


def request_headers(raw: bytes) -> CIMultiDict[str]:
    """The header fields of a request head as an upstream received it."""
    return CIMultiDict(_fields(raw))


def _fields(raw: bytes) -> list[tuple[str, str]]:
    _, *lines = raw.decode("latin-1").rstrip("\r\n").split("\r\n")
    fields = []
    for line in lines:
        name, _, value = line.partition(":")
        fields.append((name, value.strip()))
    return fields


async def connect(base_url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = base_url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


def disconnect(writer: asyncio.StreamWriter, how: Literal["fin", "reset"]) -> None:
    """Leave without a WebSocket close: a FIN, or a reset (RST, with no linger)."""
    if how == "reset":
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    else:
        writer.close()


async def read_head(reader: asyncio.StreamReader, within: float = 5.0) -> Head:
    async with asyncio.timeout(within):
        return parse_head(await reader.readuntil(b"\r\n\r\n"))


def split_response(raw: bytes) -> tuple[Head, bytes]:
    """A whole response read until the close: its head and what followed it."""
    head, separator, body = raw.partition(b"\r\n\r\n")
    assert separator, f"no complete head in {raw[:200]!r}"
    return parse_head(head + separator), body
