"""Issue 12, items 10 and 11: a buffered write's replay does not take a half-open probe a
client could take, and an answer retrying cannot change (501, 505, most 4xx) makes the
write a dead letter at once without counting against the upstream's breaker."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys

import aiohttp

from tests.conftest import REPO

# -- the README's quick start, as a process -------------------------------------------


async def source_of(session: aiohttp.ClientSession, url: str) -> tuple[str, str, bytes]:
    async with session.get(url) as response:
        return (
            response.headers["X-Failover-Source"],
            response.headers.get("Proxy-Status", ""),
            await response.read(),
        )


async def both_down(session: aiohttp.ClientSession, base: str) -> bool:
    async with session.get(f"{base}/_failover/health") as response:
        upstreams = (await response.json())["upstreams"]
    return all(up["health_check"]["state"] == "down" for up in upstreams.values())


async def test_the_quick_start_shows_the_source_change_within_seconds(tmp_path):
    """README "Quick start" on the bundled config.yaml (ports made free): its curls open
    both circuits, then `python3 -m http.server` with a drivers file is the backup
    within a few seconds; its 501 to the buffered POST makes a dead letter; stopped,
    the drivers route serves the backup's answer from the cache."""
    from tests.conftest import free_port
    from tests.procs import spawn

    primary_port, backup_port = free_port(), free_port()
    text = (REPO / "config.yaml").read_text()
    for old, new in (
        ("port: 8080", "port: 0"),
        ("127.0.0.1:8000", f"127.0.0.1:{primary_port}"),
        ("127.0.0.1:8001", f"127.0.0.1:{backup_port}"),
    ):
        assert old in text
        text = text.replace(old, new)
    (tmp_path / "config.yaml").write_text(text)
    shutil.copytree(REPO / "defaults", tmp_path / "defaults")
    proxy = await spawn(tmp_path / "config.yaml")
    server: asyncio.subprocess.Process | None = None
    try:
        await proxy.wait_listening()
        drivers = f"{proxy.url}/api/telemetry/drivers"
        async with aiohttp.ClientSession() as session:
            assert (await source_of(session, drivers))[0] == "default"
            async with session.post(f"{proxy.url}/api/events", data=b'{"n":1}') as response:
                assert response.status == 202
            async with session.get(f"{proxy.url}/anything") as response:
                assert response.status == 503
            # As long as a newcomer takes to type the next command: the curls and the
            # replays open both circuits, and the health checks see both upstreams down.
            async with asyncio.timeout(6):
                while (await source_of(session, drivers))[1].count("breaker_open") < 2:
                    await asyncio.sleep(0.1)
                while not await both_down(session, proxy.url):
                    await asyncio.sleep(0.1)
            served = tmp_path / "backup"
            (served / "api" / "telemetry").mkdir(parents=True)
            (served / "api" / "telemetry" / "drivers").write_text('{"drivers": [{"id": 7}]}\n')
            server = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "http.server",
                str(backup_port),
                "-d",
                str(served),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            started = asyncio.get_running_loop().time()
            async with asyncio.timeout(5):  # the README says "about two seconds"
                while (await source_of(session, drivers))[0] != "backup":
                    await asyncio.sleep(0.1)
            assert asyncio.get_running_loop().time() - started < 4
            async with asyncio.timeout(5):
                while b"is a dead letter" not in proxy.log:
                    await asyncio.sleep(0.05)
            assert b"'status': 501" in proxy.log
            server.terminate()
            await server.wait()
            source, _, body = await source_of(session, drivers)
            assert (source, body) == ("cache", b'{"drivers": [{"id": 7}]}\n')
        proxy.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await proxy.process.wait() == 0
    finally:
        if server is not None and server.returncode is None:
            server.kill()
            await server.wait()
        await proxy.kill()
