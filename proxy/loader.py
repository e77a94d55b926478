"""config.yaml text -> :class:`~proxy.config.Config`, or errors that name the place.

YAML is safe-loaded by walking the composed node tree ourselves, which lets us:
- remember the line of every key and item, so an error reads
  ``config.yaml:14: routes[1].retry.attempts: Input should be greater than or equal to 1``;
- refuse duplicate keys (PyYAML silently keeps the last one);
- refuse anchors and aliases outright (no alias bombs, and no hidden sharing);
- bound the file size before parsing anything.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from proxy.config import Config, reference_errors

MAX_CONFIG_BYTES = 1024 * 1024

ConfigPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    path: ConfigPath
    line: int | None
    message: str

    def located(self, source: str) -> str:
        """``config.yaml:14: routes[1].retry.attempts: ...``, the form editors can jump to."""
        where = f"{source}:{self.line}" if self.line else source
        path = format_path(self.path)
        return f"{where}: {path}: {self.message}" if path else f"{where}: {self.message}"


class ConfigError(Exception):
    """A config that must not be used; ``problems`` lists every place that is wrong."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(problem.located(source) for problem in problems))


def format_path(path: ConfigPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader whose composer refuses anchors and aliases."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise yaml.MarkedYAMLError(
                problem="anchors and aliases (&name, *name) are not allowed in this file",
                problem_mark=event.start_mark,
            )
        return super().compose_node(parent, index)


def _to_python(
    loader: _StrictLoader, node: yaml.Node, path: ConfigPath, lines: dict[ConfigPath, int]
) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                line = key_node.start_mark.line + 1
                raise ConfigError("", [Problem(path, line, "keys must be plain strings")])
            # The key's text as written: YAML 1.1 would turn `on:` (retry.on) into True.
            key = key_node.value
            if key in result:
                line = key_node.start_mark.line + 1
                raise ConfigError("", [Problem((*path, key), line, "duplicate key")])
            result[key] = _to_python(loader, value_node, (*path, key), lines)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(loader, item, (*path, i), lines) for i, item in enumerate(node.value)]
    try:
        return loader.construct_object(node)
    except (yaml.YAMLError, ValueError) as exc:  # an unknown tag, an impossible date
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError("", [Problem(path, lines[path], f"YAML: {problem}")]) from None


def parse_yaml(text: str) -> tuple[Any, dict[ConfigPath, int]]:
    """The document as plain Python values plus the line of every path in it."""
    lines: dict[ConfigPath, int] = {}
    loader = _StrictLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            line = mark.line + 1 if mark else None
            raise ConfigError("", [Problem((), line, f"YAML: {exc.problem}")]) from None
        except yaml.YAMLError as exc:
            raise ConfigError("", [Problem((), None, f"YAML: {exc}")]) from None
        if node is None:
            return {}, lines
        return _to_python(loader, node, (), lines), lines
    finally:
        loader.dispose()


def _line_of(path: ConfigPath, lines: dict[ConfigPath, int]) -> int | None:
    while path not in lines and path:
        path = path[:-1]
    return lines.get(path)


def _friendly(error: ErrorDetails) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required key is missing"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _schema_problems(exc: ValidationError, lines: dict[ConfigPath, int]) -> Iterator[Problem]:
    for error in exc.errors(include_url=False):
        path = tuple(part for part in error["loc"] if part != "[key]")
        yield Problem(path, _line_of(path, lines), _friendly(error))


def _file_problems(config: Config, base: Path, lines: dict[ConfigPath, int]) -> Iterator[Problem]:
    for i, route in enumerate(config.routes):
        if route.default and route.default.body_file:
            path: ConfigPath = ("routes", i, "default", "body_file")
            target = base / route.default.body_file
            if not target.is_file():
                yield Problem(path, _line_of(path, lines), f"no such file: {target}")
    if config.cache.path and (base / config.cache.path).is_dir():
        path = ("cache", "path")
        yield Problem(path, _line_of(path, lines), f"is a directory: {base / config.cache.path}")
    for name, upstream in config.upstreams.items():
        if upstream.tls.ca_file:
            path = ("upstreams", name, "tls", "ca_file")
            target = base / upstream.tls.ca_file
            if not target.is_file():
                yield Problem(path, _line_of(path, lines), f"no such file: {target}")
                continue
            try:
                ssl.create_default_context(cafile=str(target))
            except (ssl.SSLError, OSError, ValueError) as exc:
                yield Problem(path, _line_of(path, lines), f"not a PEM CA bundle: {exc}")


def load_text(text: str, *, source: str = "<config>", base: Path | None = None) -> Config:
    """Validate ``text`` completely; file paths in it are relative to ``base``."""
    if len(text.encode()) > MAX_CONFIG_BYTES:
        raise ConfigError(source, [Problem((), None, f"larger than {MAX_CONFIG_BYTES} bytes")])
    try:
        data, lines = parse_yaml(text)
    except ConfigError as exc:
        raise ConfigError(source, exc.problems) from None
    if not isinstance(data, dict):
        raise ConfigError(source, [Problem((), 1, "the file must be a mapping of keys")])
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, list(_schema_problems(exc, lines))) from None
    problems = [Problem(path, _line_of(path, lines), msg) for path, msg in reference_errors(config)]
    problems += _file_problems(config, base or Path.cwd(), lines)
    if problems:
        raise ConfigError(source, problems)
    return config


def load_file(path: str | Path) -> Config:
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(str(path), [Problem((), None, f"cannot read: {exc.strerror}")]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(str(path), [Problem((), None, f"larger than {MAX_CONFIG_BYTES} bytes")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [Problem((), None, f"not UTF-8: {exc}")]) from None
    return load_text(text, source=str(path), base=path.resolve().parent)
