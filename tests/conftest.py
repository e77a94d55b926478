"""Real loopback parts for end-to-end tests: upstreams that misbehave on purpose, and
the proxy itself, started in-process on 127.0.0.1 with an ephemeral port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.app import ProxyApp
from proxy.config.schema import Config

LOOPBACK = "127.0.0.1"
# The repository's root, wherever under tests/ a test file sits.
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A loopback port nothing listens on now, for a listener a test starts later."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@dataclass
class Upstream:
    """A recording upstream: how many requests it got, and what they looked like."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def hits(self) -> int:
        return len(self.requests)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def http_upstream() -> AsyncIterator[Callable[[Handler], Awaitable[Upstream]]]:
    """Start an aiohttp upstream whose every request runs ``handler`` and is recorded."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> Upstream:
        upstream = Upstream(url="")

        async def recording(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            upstream.requests.append(
                {
                    "method": request.method,
                    "path_qs": request.raw_path,
                    "headers": request.headers.copy(),
                    "body": body,
                }
            )
            return await handler(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", recording)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, LOOPBACK, 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        upstream.url = f"http://{LOOPBACK}:{port}"
        return upstream

    yield start
    for runner in runners:
        await runner.cleanup()


@dataclass
class RawUpstream:
    """A TCP upstream that answers with scripted bytes; counts connections."""

    url: str
    connections: int = 0


RawScript = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[[RawScript], Awaitable[RawUpstream]]]:
    servers: list[asyncio.Server] = []

    async def start(script: RawScript) -> RawUpstream:
        upstream = RawUpstream(url="")

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            upstream.connections += 1
            try:
                await script(reader, writer)
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(on_connect, LOOPBACK, 0)
        servers.append(server)
        upstream.url = f"http://{LOOPBACK}:{server.sockets[0].getsockname()[1]}"
        return upstream

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def read_request_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


@pytest.fixture
def refused_url() -> str:
    """A loopback URL where nothing listens: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port = sock.getsockname()[1]
    return f"http://{LOOPBACK}:{port}"


@pytest.fixture
async def start_proxy(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Start the proxy with a config given as a dict; returns its base URL."""
    apps: list[ProxyApp] = []

    async def start(config: dict[str, Any], clock: Callable[[], float] | None = None) -> str:
        config = {"listen": {"host": LOOPBACK, "port": 0}, **config}
        extra = {"clock": clock, "wall_clock": clock} if clock else {}
        app = ProxyApp(Config.model_validate(config), tmp_path, **extra)
        await app.start()
        apps.append(app)
        return f"http://{LOOPBACK}:{app.port}"

    yield start
    for app in apps:
        await app.stop()


ADMIN_TOKEN = "test-admin-token"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def start_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., Awaitable[ProxyApp]]]:
    """Start the proxy in-process with its admin listener (token ``ADMIN_TOKEN``);
    returns the app, whose ``port`` and ``admin_port`` tests use."""
    from proxy.ops.admin import TOKEN_ENV

    apps: list[ProxyApp] = []
    monkeypatch.setenv(TOKEN_ENV, ADMIN_TOKEN)

    async def start(
        config: dict[str, Any],
        clock: Callable[[], float] | None = None,
        *,
        config_file: Path | None = None,
    ) -> ProxyApp:
        """``config_file``: the file the config was written to, which a reload reads."""
        config = {
            "listen": {"host": LOOPBACK, "port": 0},
            "admin": {"host": LOOPBACK, "port": 0},
            **config,
        }
        extra: dict[str, Any] = {"clock": clock, "wall_clock": clock} if clock else {}
        app = ProxyApp(Config.model_validate(config), tmp_path, config_file=config_file, **extra)
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop()


class FakeClock:
    """The proxy's monotonic clock for breakers and cooldowns, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


def route(
    name: str = "r", upstreams: tuple[str, ...] = ("primary", "secondary"), **extra: Any
) -> dict[str, Any]:
    return {"name": name, "match": {"path_prefix": "/"}, "upstreams": list(upstreams), **extra}


async def raw_exchange(base_url: str, request: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes to the proxy and read until it closes: for malformed requests."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.read(-1)
    finally:
        writer.close()
