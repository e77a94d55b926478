"""Reading the client's request body within the limits, and deciding whether it can be
sent more than once.

A body up to the route's ``retry.max_replay_body`` is held in memory, so it can be
replayed to a second try. A larger one (or one whose length is unknown and turns out
larger) streams to the first upstream only: :class:`StreamedBody` remembers whether
it has started to flow, because a try that was refused before sending a byte can still
move on with it. The whole body is bounded by ``limits.max_body``.

``limits.client_body_timeout`` is a budget for the whole body, not a per-read silence
timeout (nginx's): the time spent waiting for the client's bytes is summed over every
read, so a client that trickles a byte a second is cut (408) once the budget is spent,
however steadily it sends. Time spent waiting for a slow upstream to take a streamed
body is not the client's and does not count.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from proxy.http.request import Refused, RequestBody

ClientBodyError = Refused
"""The client, not an upstream, is at fault; the proxy answers ``status`` itself (the
listener's refusal, raised here for a body: the same answer either way)."""


class BodyReader:
    """The client's body, read within ``max_body`` bytes and ``timeout`` seconds of
    waiting for it in all (one budget per request, shared by every read)."""

    def __init__(self, content: RequestBody, max_body: int, timeout: float) -> None:
        self._content = content
        self._max_body = max_body
        self._left = timeout
        self.size = 0

    async def read(self) -> bytes:
        """The next chunk, or ``b""`` at the end of the body."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(self._left):
                chunk = await self._content.readany()
        except TimeoutError:
            raise ClientBodyError(408, "the request body arrived too slowly") from None
        except ConnectionError:
            raise ClientBodyError(400, "the client went away while sending the body") from None
        finally:
            self._left -= loop.time() - started
        self.size += len(chunk)
        if self.size > self._max_body:
            raise ClientBodyError(413, "the request body is larger than the proxy accepts")
        return chunk


async def read_prefix(reader: BodyReader, limit: int) -> tuple[list[bytes], bool]:
    """Read until more than ``limit`` bytes or the end: ``(chunks, complete)``."""
    chunks: list[bytes] = []
    while reader.size <= limit:
        chunk = await reader.read()
        if not chunk:
            return chunks, True
        chunks.append(chunk)
    return chunks, False


class StreamedBody:
    """A body too large to hold: what was read so far, then the rest as it arrives."""

    def __init__(self, prefix: list[bytes], reader: BodyReader) -> None:
        self._prefix = prefix
        self._reader = reader
        self.started = False
        self.finished = False
        self.error: ClientBodyError | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        self.started = True
        for chunk in self._prefix:
            yield chunk
        while True:
            try:
                chunk = await self._reader.read()
            except ClientBodyError as exc:
                self.error = exc
                raise
            if not chunk:
                self.finished = True
                return
            yield chunk
