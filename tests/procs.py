"""The proxy as its own process, for the tests that need a real one: kill -9, SIGHUP,
restarts on the same disk. Started with ``python -m proxy run --config FILE``; its
ports are read from its log lines as it starts, and its log is kept."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import LOOPBACK

LISTENING = re.compile(rb"listening on [\d.]+:(\d+)")
ADMIN = re.compile(rb"admin listener on [\d.]+:(\d+)")


@dataclass
class ProxyProcess:
    process: asyncio.subprocess.Process
    log: bytearray = field(default_factory=bytearray)
    port: int | None = None
    admin_port: int | None = None
    _reading: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.log += line

    async def wait_listening(self, *, admin: bool = False, timeout: float = 20.0) -> None:
        """Until the log names the port (and the admin port, if asked)."""
        async with asyncio.timeout(timeout):
            while True:
                listening, admin_line = LISTENING.search(self.log), ADMIN.search(self.log)
                if listening and (admin_line or not admin):
                    self.port = int(listening[1])
                    self.admin_port = int(admin_line[1]) if admin_line else None
                    return
                assert self.process.returncode is None, (
                    f"the proxy exited ({self.process.returncode}): {self.log.decode()}"
                )
                await asyncio.sleep(0.005)

    async def kill(self) -> None:
        """SIGKILL: no drain, no flush; the process is gone at once."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        if self._reading is not None:
            await self._reading


async def spawn(config_file: Path, env: Mapping[str, str] | None = None) -> ProxyProcess:
    """Start the proxy on ``config_file``; its log is read from the start."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "run",
        "--config",
        str(config_file),
        stderr=asyncio.subprocess.PIPE,
        env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"},
    )
    proxy = ProxyProcess(process)
    proxy._reading = asyncio.create_task(proxy._read())
    return proxy
