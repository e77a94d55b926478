"""Writing an answer's body that arrives as a stream (an upstream's body past the
commit point, a Server-Sent Events stream): each chunk goes out as it comes, framed
for the client, with the writer waiting whenever the client's socket is full, so a slow
client never makes the proxy hold an unbounded answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from proxy.http.wire import LAST_CHUNK, chunk
from proxy.upstreams.flow import WriteFlow


async def send_stream(
    flow: WriteFlow, transport: asyncio.Transport, stream: AsyncIterator[bytes], *, chunked: bool
) -> bool:
    """The stream written after its head; False when it failed (the client connection
    is then aborted: a body cut short never gets a clean end) or the client left."""
    try:
        async for data in stream:
            if data:
                transport.write(chunk(data) if chunked else data)
                await flow.writable()
                if transport.is_closing():
                    return False
    except asyncio.CancelledError:
        raise
    except Exception:
        transport.abort()
        return False
    finally:
        await close_stream(stream)  # it reports how it ended (the client may have left)
    if chunked:
        transport.write(LAST_CHUNK)
    return True


async def close_stream(stream: object) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()
