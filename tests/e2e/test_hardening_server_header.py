"""The proxy's own answers do not advertise versions: no ``Server`` header (aiohttp adds
``Server: Python/3.x aiohttp/3.y`` to every answer without one) on either listener; an
upstream's own ``Server`` passes through unchanged."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from tests.conftest import ADMIN_TOKEN, LOOPBACK, raw_exchange, read_request_head, route


def head_of(raw: bytes) -> list[bytes]:
    """The status line and header lines of one raw answer."""
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def server_lines(raw: bytes) -> list[bytes]:
    return [line for line in head_of(raw)[1:] if line.lower().startswith(b"server:")]


def get(path: bytes, *extra: bytes, host: bytes = b"x") -> bytes:
    head = b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + b"".join(extra)
    return head + b"Connection: close\r\n\r\n"


def admin_get(path: bytes, *, token: bool = True) -> bytes:
    auth = b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\n"
    return get(path, *([auth] if token else []), host=b"localhost")


async def start(start_app, refused_url: str, tmp_path: Path, **upstreams: str):
    config = {
        "upstreams": {
            "down": {"url": refused_url},
            **{n: {"url": u} for n, u in upstreams.items()},
        },
        "routes": [
            route("failing", ("down",), match={"path_prefix": "/failing"}),
            route(
                "defaulted",
                ("down",),
                match={"path_prefix": "/defaulted"},
                default={"status": 200, "body": "fallback"},
            ),
            route("events", ("down",), match={"path_prefix": "/events"}, on_failure="buffer"),
            *[route(n, (n,), match={"path_prefix": f"/{n}"}) for n in upstreams],
        ],
        "buffer": {"path": str(tmp_path / "buffer")},
    }
    app = await start_app(config)
    return app, f"http://{LOOPBACK}:{app.port}", f"http://{LOOPBACK}:{app.admin_port}"


async def test_no_answer_of_the_proxy_own_names_a_server(start_app, refused_url, tmp_path):
    _, proxy, admin = await start(start_app, refused_url, tmp_path)
    write = b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    answers = {
        "no route": await raw_exchange(proxy, get(b"/nowhere")),
        "malformed": await raw_exchange(proxy, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"),
        "all failed": await raw_exchange(proxy, get(b"/failing")),
        "buffered": await raw_exchange(proxy, write),
        "default": await raw_exchange(proxy, get(b"/defaulted")),
        "livez": await raw_exchange(proxy, get(b"/_failover/livez")),
        "admin": await raw_exchange(admin, admin_get(b"/health")),
        "admin refused": await raw_exchange(admin, admin_get(b"/health", token=False)),
        "admin unknown": await raw_exchange(admin, admin_get(b"/nowhere")),
        "admin wrong host": await raw_exchange(admin, get(b"/health")),
        "admin malformed": await raw_exchange(admin, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"),
    }
    statuses = {name: head_of(raw)[0].split(b" ")[1] for name, raw in answers.items()}
    assert statuses == {
        "no route": b"404",
        "malformed": b"400",
        "all failed": b"503",
        "buffered": b"202",
        "default": b"200",
        "livez": b"200",
        "admin": b"200",
        "admin refused": b"401",
        "admin unknown": b"404",
        "admin wrong host": b"421",
        "admin malformed": b"400",
    }
    assert {name: server_lines(raw) for name, raw in answers.items()} == {
        name: [] for name in answers
    }


async def test_an_upstream_server_header_passes_through_unchanged(
    start_app, refused_url, http_upstream, raw_upstream, tmp_path
):
    async def named(request: web.Request) -> web.Response:
        return web.Response(text="ok", headers={"Server": "origin/1.0"})

    async def aiohttp_default(request: web.Request) -> web.Response:
        return web.Response(text="ok")  # aiohttp adds its own Server: the upstream's

    async def anonymous(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()

    upstreams = {
        "named": (await http_upstream(named)).url,
        "aio": (await http_upstream(aiohttp_default)).url,
        "anonymous": (await raw_upstream(anonymous)).url,
    }
    _, proxy, _ = await start(start_app, refused_url, tmp_path, **upstreams)
    assert server_lines(await raw_exchange(proxy, get(b"/named"))) == [b"Server: origin/1.0"]
    assert server_lines(await raw_exchange(proxy, get(b"/aio"))) == [
        b"Server: " + SERVER_SOFTWARE.encode()
    ]
    assert server_lines(await raw_exchange(proxy, get(b"/anonymous"))) == []
