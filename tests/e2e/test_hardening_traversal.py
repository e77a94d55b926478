"""Double-encoded traversal: ``%25`` then the encoding of ``.``, ``/``, ``\\`` or NUL is
refused like the singly encoded forms, because a backend that decodes twice would see
``..``, a slash or a NUL that the proxy's routing never saw."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tests.conftest import raw_exchange, route
from tests.helpers.traversal import DOUBLE_ENCODED


@pytest.mark.parametrize("target", DOUBLE_ENCODED)
async def test_double_encoded_target_gets_400_and_never_reaches_the_upstream(
    target: str, http_upstream, start_proxy
) -> None:
    upstream = await http_upstream(lambda r: asyncio.sleep(0, web.Response(text="reached")))
    proxy = await start_proxy(
        {
            "upstreams": {"primary": {"url": upstream.url}},
            "routes": [route(upstreams=("primary",))],
        }
    )
    raw = await raw_exchange(
        proxy, f"GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode()
    )
    assert raw.startswith(b"HTTP/1.1 400 ")
    assert b"double-encoded" in raw
    assert upstream.hits == 0
