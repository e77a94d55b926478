"""How each server in the benchmark is configured and started.

Each ``start_*`` function writes whatever config the server needs into the run's
temporary directory, starts it pinned to the CPU it is given, waits until it accepts
connections, and checks that it serves both bodies correctly before any load is put
on it: a misconfigured proxy answering 404 or 502 fast must not look like a fast one.

nginx runs in the foreground (``-g 'daemon off;'``) with one worker, every path it
writes (pid, temp dirs) under its own prefix inside the temp directory, errors to
stderr (our log file), and no access log. Its keep-alive request caps are raised so
that neither wrk nor a proxy's upstream pool reconnects every 1000 requests.

The nginx upstream also answers ``/rNNNNN/small`` with ``/small`` (an internal
rewrite), for the many-routes targets, whose matching route is ``/rNNNNN/``.
``failover-proxy-full`` and its variants (open breaker, fresh hits, access log, many
routes) are configured in ``full_targets.py``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import payloads
from procs import HOST, Children, StartError, expect_body, fetch_with_headers, wait_for_port

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent

DEFAULT_PROXY_CMD = "{python} -m proxy run --config {config}"

Proc = subprocess.Popen[bytes]


def nginx_main(prefix: Path, http_block: str) -> str:
    """A whole nginx.conf: one worker, everything it writes under ``prefix``, no access
    log unless ``http_block`` (the inside of ``http {}``) turns one on."""
    temp_paths = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root nginx would switch its worker to "nobody", who cannot read our 0700 temp dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes 1;\npid {prefix / 'nginx.pid'};\nerror_log stderr warn;\n"
        "events { worker_connections 4096; }\n"
        "http {\n    access_log off;\n    keepalive_requests 1000000;\n"
        f"{temp_paths}\n{http_block}}}\n"
    )


def nginx_upstream_conf(prefix: Path, port: int, www: Path) -> str:
    return nginx_main(
        prefix,
        "    sendfile on;\n    tcp_nopush on;\n    types { }\n"
        f"    server {{\n        listen {HOST}:{port} backlog=1024;\n        root {www};\n"
        f"        location = {payloads.SMALL_PATH} "
        f"{{ default_type {payloads.SMALL_CONTENT_TYPE}; }}\n"
        f"        location = {payloads.BIG_PATH} {{ default_type {payloads.BIG_CONTENT_TYPE}; }}\n"
        f"        location ~ ^/r[0-9]+{payloads.SMALL_PATH}$ "
        f"{{ rewrite ^ {payloads.SMALL_PATH} last; }}\n"
        "    }\n",
    )


def nginx_proxy_conf(prefix: Path, port: int, upstream_port: int) -> str:
    """proxy_pass to a keep-alive pool the size of the Python proxies' pools (100).
    Buffers hold a 1 MiB body in memory, as the Python proxies do, instead of
    spilling it to a temp file."""
    return nginx_main(
        prefix,
        f"    upstream backend {{\n        server {HOST}:{upstream_port};\n"
        "        keepalive 100;\n        keepalive_requests 1000000;\n    }\n"
        f"    server {{\n        listen {HOST}:{port} backlog=1024;\n"
        "        location / {\n            proxy_pass http://backend;\n"
        "            proxy_http_version 1.1;\n"
        '            proxy_set_header Connection "";\n'
        "            proxy_buffers 64 16k;\n            proxy_max_temp_file_size 0;\n"
        "        }\n    }\n",
    )


# Like nginx's `access_log off` and bare-aiohttp's access_log=None: every server is
# measured without a line per request.
NO_ACCESS_LOG = "logging: {access_log: false}\n"


def failover_proxy_conf(port: int, upstream_port: int) -> str:
    return (
        f"listen: {{host: {HOST}, port: {port}}}\n"
        f"{NO_ACCESS_LOG}"
        "upstreams:\n  primary:\n"
        f"    url: http://{HOST}:{upstream_port}\n    max_connections: 100\n"
        "routes:\n  - name: all\n    match: {path_prefix: /}\n    upstreams: [primary]\n"
    )


def start_nginx(
    children: Children, name: str, conf_text: str, prefix: Path, cpu: int | None
) -> Proc:
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(conf_text)
    argv = ["nginx", "-p", str(prefix), "-e", "stderr", "-c", str(conf), "-g", "daemon off;"]
    return children.start(name, argv, cpu)


def ready(children: Children, name: str, proc: Proc, port: int, timeout: float) -> None:
    """Accepting connections and serving both bodies byte for byte."""
    wait_for_port(proc, port, timeout, children.log_path(name))
    expect_body(port, payloads.SMALL_PATH, payloads.SMALL_BODY, timeout)
    expect_body(port, payloads.BIG_PATH, payloads.BIG_BODY, timeout)


def expect_failover(port: int, skipped_because: str, timeout: float, which: str) -> None:
    """One ``GET /small`` that ``secondary`` served (200, exact body) after ``primary``
    failed or was skipped with ``skipped_because`` in ``Proxy-Status``."""
    try:
        status, headers, body = fetch_with_headers(port, payloads.SMALL_PATH, timeout)
    except OSError as exc:
        raise StartError(f"{which}: GET {payloads.SMALL_PATH} failed: {exc!r}") from exc
    source = headers.get("X-Failover-Source", "")
    proxy_status = headers.get("Proxy-Status", "")
    if (
        status != 200
        or body != payloads.SMALL_BODY
        or source != "secondary"
        or skipped_because not in proxy_status
        or "next-hop=primary" not in proxy_status
    ):
        raise StartError(
            f"{which}: want 200 with the exact body, X-Failover-Source: secondary and "
            f"{skipped_because} for primary in Proxy-Status; got {status}, {len(body)} "
            f"bytes, X-Failover-Source: {source!r}, Proxy-Status: {proxy_status!r}"
        )


def start_upstream(children: Children, kind: str, port: int, cpu: int | None) -> Proc:
    """``kind`` is ``nginx`` (static files written here) or ``aiohttp`` (upstream.py)."""
    if kind == "nginx":
        prefix = children.log_dir / "upstream-nginx"
        www = prefix / "www"
        www.mkdir(parents=True)
        (www / payloads.SMALL_PATH.lstrip("/")).write_bytes(payloads.SMALL_BODY)
        (www / payloads.BIG_PATH.lstrip("/")).write_bytes(payloads.BIG_BODY)
        conf = nginx_upstream_conf(prefix, port, www)
        return start_nginx(children, "upstream", conf, prefix, cpu)
    argv = [sys.executable, str(BENCH_DIR / "upstream.py"), "--port", str(port)]
    return children.start("upstream", argv, cpu)


def start_failover_proxy(
    children: Children,
    port: int,
    upstream_port: int,
    cpu: int | None,
    command: str,
    wrapper: Sequence[str] = (),
) -> Proc:
    """``command`` is a template with ``{python}`` and ``{config}``, run from the repo root;
    ``wrapper`` goes in front of it (``instructions.py`` puts valgrind there)."""
    conf = failover_proxy_conf(port, upstream_port)
    return start_failover(children, "failover-proxy", conf, cpu, command, wrapper)


def start_failover(
    children: Children,
    name: str,
    conf_text: str,
    cpu: int | None,
    command: str,
    wrapper: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
) -> Proc:
    """failover-proxy with ``conf_text`` as its config file; ``extra_env`` (such as an
    admin token) is added to its environment."""
    config = children.log_dir / f"{name}.yaml"
    config.write_text(conf_text)
    argv = [arg.format(python=sys.executable, config=config) for arg in shlex.split(command)]
    return children.start(name, [*wrapper, *argv], cpu, cwd=REPO_DIR, extra_env=extra_env)


def start_nginx_proxy(children: Children, port: int, upstream_port: int, cpu: int | None) -> Proc:
    prefix = children.log_dir / "proxy-nginx"
    return start_nginx(
        children, "nginx", nginx_proxy_conf(prefix, port, upstream_port), prefix, cpu
    )


def start_bare_proxy(
    children: Children, port: int, upstream_port: int, cpu: int | None, wrapper: Sequence[str] = ()
) -> Proc:
    argv = [
        *wrapper, sys.executable, str(BENCH_DIR / "bare_proxy.py"), "--port", str(port),
        "--upstream", f"http://{HOST}:{upstream_port}", "--limit", "100",
    ]  # fmt: skip
    return children.start("bare-aiohttp", argv, cpu)
