"""Starting, pinning, probing and stopping the processes a benchmark run needs.

Every child goes into its own session (so its own process group) and is recorded in
``Children``; ``run.py`` calls ``Children.stop_all()`` in ``finally``, which signals
whole groups: nginx's workers and anything failover-proxy forks die with their parent.

CPU pinning wraps the command in ``taskset -c CPU`` (or, without util-linux, a Python
one-liner doing the same ``sched_setaffinity`` + ``exec``) rather than a ``preexec_fn``,
which is unsafe once the parent has threads. Affinity is inherited across fork and
exec, so nginx's workers stay on the master's CPU.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

HOST = "127.0.0.1"


class StartError(RuntimeError):
    """A server did not come up, or came up answering wrongly."""


def pinned(argv: list[str], cpu: int | None) -> list[str]:
    """``argv`` run on ``cpu`` only: ``taskset -c`` when installed, else a Python
    trampoline that sets its own affinity and execs (affinity survives exec)."""
    if cpu is None:
        return argv
    if shutil.which("taskset"):
        return ["taskset", "-c", str(cpu), *argv]
    trampoline = (
        "import os, sys; os.sched_setaffinity(0, {%d}); os.execvp(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", trampoline % cpu, *argv]


def affinity(pid: int) -> list[int] | None:
    try:
        return sorted(os.sched_getaffinity(pid))
    except (AttributeError, OSError):
        return None


def free_ports(count: int) -> list[int]:
    """Distinct loopback ports that bind now, chosen below the kernel's ephemeral range so
    that no client connection (wrk's, a proxy's pool) can be sitting on one when a
    server is started on it later."""
    low = _ephemeral_low()
    first, last = max(1024, low - 12000), low - count - 1000
    start = random.randrange(first, last) if last > first else 1024
    chosen: list[int] = []
    for port in range(start, low):
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
        chosen.append(port)
        if len(chosen) == count:
            return chosen
    raise StartError(f"no {count} free ports below {low}")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class Children:
    """The processes this run started, stopped newest first."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        name: str,
        argv: list[str],
        cpu: int | None,
        cwd: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """``extra_env`` is added to this process's environment for the child only."""
        env = {**os.environ, **extra_env} if extra_env else None
        with open(self.log_path(name), "wb") as log:
            proc = subprocess.Popen(
                pinned(argv, cpu),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._procs.append(proc)
        return proc

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        """SIGTERM the group, SIGKILL it if the leader outlives ``grace`` seconds; then
        SIGKILL whatever of the group is left (a worker ignoring SIGTERM)."""
        if proc in self._procs:
            self._procs.remove(proc)
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for proc in reversed(self._procs[:]):
            self.stop(proc)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_for_port(proc: subprocess.Popen[bytes], port: int, timeout: float, log: Path) -> None:
    """Poll-connect until the server accepts, failing fast if it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise StartError(f"exited with code {proc.returncode}:\n{log_tail(log)}")
        try:
            with socket.create_connection((HOST, port), timeout=0.25):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise StartError(
                f"no connection accepted on port {port} within {timeout:g}s:\n{log_tail(log)}"
            )
        time.sleep(0.05)


def fetch(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One GET over a fresh connection; http.client ignores *_proxy environment variables."""
    status, _, body = fetch_with_headers(port, path, timeout)
    return status, body


def fetch_with_headers(
    port: int,
    path: str,
    timeout: float = 5.0,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """Like ``fetch``, with the response headers (looked up case-insensitively); also
    for other methods, with a request body and request headers."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def expect_body(port: int, path: str, body: bytes, timeout: float) -> None:
    """Retry until ``path`` answers 200 with exactly ``body``: a proxy may need a moment
    (health checks, pool warm-up) before its first good answer."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, got = fetch(port, path)
            problem = _mismatch(status, got, body)
        except OSError as exc:
            problem = repr(exc)
        if not problem:
            return
        if time.monotonic() > deadline:
            raise StartError(f"GET {path} never answered correctly: {problem}")
        time.sleep(0.2)


def _mismatch(status: int, got: bytes, want: bytes) -> str:
    if status == 200 and got == want:
        return ""
    return f"status {status}, {len(got)} bytes (want 200, {len(want)}): {got[:200]!r}"
