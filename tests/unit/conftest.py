"""Keeps the fast set honest: a test under tests/unit that opens a network connection, binds
a port or starts a program fails at once, so it is moved to tests/e2e or tests/process
instead of slowing the set down."""

from __future__ import annotations

import socket
import subprocess
from typing import Any, NoReturn

import pytest


def _refuse(what: str) -> Any:
    def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise AssertionError(
            f"a unit test {what}: it belongs in tests/e2e (sockets) or tests/process (programs)"
        )

    return refuse


@pytest.fixture(autouse=True)
def _no_sockets_or_subprocesses(monkeypatch: pytest.MonkeyPatch) -> None:
    # The event loop's own self-pipe is a socketpair: neither bound nor connected, so it passes.
    for method in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, method, _refuse(f"called socket.{method}"))
    monkeypatch.setattr(subprocess.Popen, "_execute_child", _refuse("started a program"))
