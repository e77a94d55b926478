"""The process: start-up checks, the bundled config, and a graceful drain."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import sys

import aiohttp

from tests.conftest import REPO


async def test_bundled_config_serves_its_default_with_nothing_running(tmp_path):
    """The README's quick start: run config.yaml with no backend up, get the default."""
    text = (REPO / "config.yaml").read_text()
    text = re.sub(
        r"listen: \{host: 127.0.0.1, port: 8080\}", "listen: {host: 127.0.0.1, port: 0}", text
    )
    assert "port: 0" in text
    (tmp_path / "config.yaml").write_text(text)
    shutil.copytree(REPO / "defaults", tmp_path / "defaults")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "run",
        "--config",
        str(tmp_path / "config.yaml"),
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    try:
        async with asyncio.timeout(10):
            line = b""
            while b"listening on" not in line:
                line = await process.stderr.readline()
                assert line, "the proxy exited before listening"
        assert b"(event loop: uvloop)" in line
        port = int(line.split(b"listening on ", 1)[1].split()[0].rsplit(b":", 1)[1])
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/api/telemetry/drivers") as response:
                assert response.status == 200
                assert response.headers["X-Failover-Source"] == "default"
                assert (await response.json())["drivers"] == []
            async with session.get(f"http://127.0.0.1:{port}/anything") as response:
                assert response.status == 503
            async with session.post(f"http://127.0.0.1:{port}/api/events", data=b"{}") as r:
                assert r.status == 202
                assert r.headers["X-Failover-Source"] == "buffer"
        assert list((tmp_path / "buffer").glob("journal-*.log"))  # next to the config
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
