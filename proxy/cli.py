"""``failover-proxy run --config FILE`` and ``failover-proxy check [--config] FILE``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from proxy import __version__
from proxy.config.loader import ConfigError, load_file
from proxy.config.schema import Config, RouteCache
from proxy.config.types import PublishedNames
from proxy.config.units import format_duration
from proxy.ops import logs


def _summary(config: Config) -> list[str]:
    lines = []
    for route in config.routes:
        match = route.match
        where = (
            f"path={match.path}"
            if match.path
            else f"path_prefix={match.path_prefix}"
            if match.path_prefix
            else f"path_regex={match.path_regex}"
            if match.path_regex
            else "any path"
        )
        methods = ",".join(match.methods) if match.methods else "any method"
        fallback = "default payload" if route.default else "503"
        if route.on_failure == "buffer":
            fallback = f"write buffer (writes) -> {fallback}"
        chain = " -> ".join(route.upstreams)
        if route.cache is not None:
            chain = f"{_fresh_step(route.cache)}{chain} -> "
            chain += f"cache (stale for {format_duration(route.cache.stale_for)})"
        lines.append(
            f"route {route.name}: {methods} {where} -> {chain} -> "
            f"{fallback} (deadline {format_duration(route.deadline)}, "
            f"tries per upstream: {route.retry.attempts})"
        )
    return lines


def _fresh_step(cache: RouteCache) -> str:
    """The cache's step before the upstreams, when it has one: answers served without
    asking (``fresh_for``), then while refreshed behind (``stale_while_revalidate``)."""
    if not cache.fresh_for and not cache.stale_while_revalidate:
        return ""
    step = f"cache (fresh for {format_duration(cache.fresh_for)}"
    if cache.stale_while_revalidate:
        step += f", revalidating for {format_duration(cache.stale_while_revalidate)}"
    return step + ") -> "


def _check(path: str) -> int:
    try:
        config = load_file(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print("ok")
    for line in _summary(config):
        print(line)
    return 0


def _run(path: str) -> int:
    from proxy.app import run
    from proxy.http.server import StartupError

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load_file(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    logs.configure(config.logging.level, config.logging.format, config.logging.access_log)
    try:
        # Not resolve(): in a Kubernetes ConfigMap the file is a symlink through ..data,
        # which a reload must follow anew, and files next to it are found through it too.
        config_file = Path(path).absolute()
        run(config, config_file.parent, config_file)
    except StartupError as exc:
        print(f"failover-proxy: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"failover-proxy: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


def _schema() -> int:
    """The JSON Schema of config.yaml, for editors (yaml-language-server and friends)."""
    schema = Config.model_json_schema(
        by_alias=True, mode="validation", schema_generator=PublishedNames
    )
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "failover-proxy config.yaml"
    _drop_defaults(schema)
    print(json.dumps(schema, indent=2, sort_keys=True))
    return 0


def _drop_defaults(node: object) -> None:
    """Defaults are shown as the numbers they became (86400.0 for 24h), which the unit
    types would refuse; docs/configuration.md lists them as written."""
    if isinstance(node, dict):
        node.pop("default", None)
        for key, value in node.items():
            if key in ("properties", "$defs"):  # maps of names: a key may be "default"
                for schema in value.values():
                    _drop_defaults(schema)
            else:
                _drop_defaults(value)
    elif isinstance(node, list):
        for value in node:
            _drop_defaults(value)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text!r}")
    return value


def _demo(duration: float | None, speed: float) -> int:
    from proxy.demo.runner import main as demo

    return demo(duration=duration, speed=speed)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="failover-proxy", description=__doc__)
    parser.add_argument("--version", action="version", version=f"failover-proxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="serve with a config file")
    run_parser.add_argument("--config", default="config.yaml", help="path to config.yaml")
    check_parser = commands.add_parser("check", help="validate a config file without serving")
    check_parser.add_argument("file", nargs="?", help="path to config.yaml")
    check_parser.add_argument(
        "--config", dest="config_file", help="path to config.yaml (as run takes it)"
    )
    commands.add_parser("schema", help="print the JSON Schema of config.yaml")
    demo_parser = commands.add_parser(
        "demo",
        help="watch failover live: demo upstreams, the proxy and traffic, one line a second",
    )
    demo_parser.add_argument(
        "--duration",
        type=_positive,
        default=None,
        metavar="SECONDS",
        help="stop after this many seconds of the schedule (default: all of it, 45s)",
    )
    demo_parser.add_argument(
        "--speed",
        type=_positive,
        default=1.0,
        metavar="FACTOR",
        help="run the schedule this many times faster (default: 1)",
    )
    args = parser.parse_args(argv)
    if args.command == "check":
        if args.file and args.config_file and args.file != args.config_file:
            check_parser.error("give the file once: check FILE or check --config FILE")
        return _check(args.config_file or args.file or "config.yaml")
    if args.command == "schema":
        return _schema()
    if args.command == "demo":
        return _demo(args.duration, args.speed)
    return _run(args.config)
