"""Reading the client's request body within the limits, and deciding whether it can be
sent more than once.

A body up to the route's ``retry.max_replay_body`` is held in memory, so it can be
replayed to a second try. A larger one (or one whose length is unknown and turns out
larger) streams to the first upstream only: :class:`StreamedBody` remembers whether
it has started to flow, because a try that was refused before sending a byte can still
move on with it. Reads time out after ``limits.client_body_timeout`` of silence
(nginx's ``client_body_timeout`` semantics), and the whole body is bounded by
``limits.max_body``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import StreamReader


class ClientBodyError(Exception):
    """The client, not an upstream, is at fault; the proxy answers ``status`` itself."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _read_some(content: StreamReader, timeout: float) -> bytes:
    try:
        async with asyncio.timeout(timeout):
            return await content.readany()
    except TimeoutError:
        raise ClientBodyError(408, "the request body arrived too slowly") from None
    except (ConnectionError, aiohttp.EofStream):
        raise ClientBodyError(400, "the client went away while sending the body") from None


async def read_prefix(
    content: StreamReader, limit: int, max_body: int, timeout: float
) -> tuple[list[bytes], int, bool]:
    """Read until more than ``limit`` bytes or the end: ``(chunks, size, complete)``."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await _read_some(content, timeout)
        if not chunk:
            return chunks, size, True
        size += len(chunk)
        if size > max_body:
            raise ClientBodyError(413, "the request body is larger than the proxy accepts")
        chunks.append(chunk)
    return chunks, size, False


class StreamedBody:
    """A body too large to hold: what was read so far, then the rest as it arrives."""

    def __init__(
        self, prefix: list[bytes], size: int, content: StreamReader, max_body: int, timeout: float
    ) -> None:
        self._prefix = prefix
        self._size = size
        self._content = content
        self._max_body = max_body
        self._timeout = timeout
        self.started = False
        self.finished = False
        self.error: ClientBodyError | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        self.started = True
        for chunk in self._prefix:
            yield chunk
        size = self._size
        while True:
            try:
                chunk = await _read_some(self._content, self._timeout)
            except ClientBodyError as exc:
                self.error = exc
                raise
            if not chunk:
                self.finished = True
                return
            size += len(chunk)
            if size > self._max_body:
                self.error = ClientBodyError(
                    413, "the request body is larger than the proxy accepts"
                )
                raise self.error
            yield chunk
