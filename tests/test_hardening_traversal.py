"""Double-encoded traversal: ``%25`` then the encoding of ``.``, ``/``, ``\\`` or NUL is
refused like the singly encoded forms, because a backend that decodes twice would see
``..``, a slash or a NUL that the proxy's routing never saw."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from proxy.chain.routing import BadTarget, normalise_target
from tests.conftest import raw_exchange, route

DOUBLE_ENCODED = [
    "/%252e%252e/admin",
    "/%252E%252E/admin",
    "/a%252fb",
    "/a%252Fb",
    "/a%255cb",
    "/a%255Cb",
    "/a%2500b",
    "/files/%252e",
]


@pytest.mark.parametrize("target", DOUBLE_ENCODED)
def test_double_encoded_dot_slash_backslash_or_nul_is_refused(target: str) -> None:
    with pytest.raises(BadTarget, match="double-encoded"):
        normalise_target(target)


@pytest.mark.parametrize(
    "target",
    [
        "/a%25%32%65",  # %25 then an encoded "2e": %2e after one decode, "." after two
        "/a%25%32%46",
        "/a%25%35%43",
        "/a%25%30%30",
        "/a%25252e",  # encoded three times
        "/a%2525%32f",
    ],
)
def test_traversal_hidden_by_mixed_or_repeated_encoding_is_refused(target: str) -> None:
    with pytest.raises(BadTarget, match="double-encoded"):
        normalise_target(target)


@pytest.mark.parametrize(
    ("target", "canonical"),
    [
        ("/100%25", "/100%25"),
        ("/a%2541", "/a%2541"),  # "%41" after one decode: a letter, no traversal
        ("/a%252", "/a%252"),
        ("/discount/50%25off", "/discount/50%25off"),
    ],
)
def test_an_encoded_percent_that_hides_no_traversal_is_forwarded(
    target: str, canonical: str
) -> None:
    assert normalise_target(target) == (canonical, "")


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
