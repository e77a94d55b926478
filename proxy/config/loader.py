"""config.yaml text -> :class:`~proxy.config.schema.Config`, or errors that name the place.

YAML is safe-loaded by walking the composed node tree ourselves, which lets us:
- remember the line of every key and item, so an error reads
  ``config.yaml:14: routes[1].retry.attempts: Input should be greater than or equal to 1``
  (a YAML syntax error also has its column: ``config.yaml:3:7: YAML syntax: ...``; an
  unknown key is followed by the closest known one: ``unknown key; did you mean 'retry'?``);
- refuse duplicate keys (PyYAML silently keeps the last one);
- refuse anchors and aliases outright (no alias bombs, and no hidden sharing);
- bound the file size before parsing anything.
"""

from __future__ import annotations

import difflib
import ssl
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from proxy.config.schema import Config, reference_errors
from proxy.config.sharing import share_equal_parts
from proxy.config.yaml_reading import (
    SLOW,
    NotAllowed,
    StrictLoader,
    fast_parse,
    return_freed_memory,
)

MAX_CONFIG_BYTES = 1024 * 1024

ConfigPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    path: ConfigPath
    line: int | None
    message: str
    column: int | None = None  # YAML syntax errors only: where the parser stopped

    def located(self, source: str) -> str:
        """``config.yaml:14: routes[1].retry.attempts: ...``, the form editors can jump to."""
        where = f"{source}:{self.line}" if self.line else source
        if self.line and self.column:
            where += f":{self.column}"
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
        if isinstance(part, int):
            text += f"[{part}]"
        elif not part.isprintable() or not part:  # a key with a line break stays on one line
            text += f"[{part!r}]"
        else:
            text += f".{part}" if text else part
    return text


def _to_python(
    loader: StrictLoader, node: yaml.Node, path: ConfigPath, lines: dict[ConfigPath, int]
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
    try:
        loader = StrictLoader(text)  # its reader refuses unprintable characters at once
    except yaml.reader.ReaderError as exc:
        raise ConfigError("", [_unprintable(text, exc)]) from None
    try:
        try:
            node = loader.get_single_node()
        except NotAllowed as exc:
            mark = exc.problem_mark
            line = mark.line + 1 if mark else None
            raise ConfigError("", [Problem((), line, f"YAML: {exc.problem}")]) from None
        except yaml.MarkedYAMLError as exc:
            raise ConfigError("", [_syntax_problem(exc)]) from None
        except yaml.YAMLError as exc:
            raise ConfigError("", [Problem((), None, f"YAML: {exc}")]) from None
        if node is None:
            return {}, lines
        return _to_python(loader, node, (), lines), lines
    finally:
        loader.dispose()


def _unprintable(text: str, exc: yaml.reader.ReaderError) -> Problem:
    """A character YAML forbids in its text (a C0 control, say), at its line and column."""
    line = text.count("\n", 0, exc.position) + 1
    column = exc.position - text.rfind("\n", 0, exc.position)
    message = f"YAML syntax: character U+{exc.character:04X} is not allowed in YAML text"
    return Problem((), line, message, column)


def _syntax_problem(exc: yaml.MarkedYAMLError) -> Problem:
    """``file:line:column: YAML syntax: <problem>, <context> at line L, column C``: where
    the parser stopped, and where the construct it was reading began (1-based, as editors
    count)."""
    mark = exc.problem_mark or exc.context_mark
    message = f"YAML syntax: {exc.problem or exc.context or 'not valid YAML'}"
    if exc.problem and exc.context:
        message += f", {exc.context}"
        if exc.context_mark is not None:
            began = exc.context_mark
            message += f" at line {began.line + 1}, column {began.column + 1}"
    if mark is None:
        return Problem((), None, message)
    return Problem((), mark.line + 1, message, mark.column + 1)


def _line_of(path: ConfigPath, lines: dict[ConfigPath, int]) -> int | None:
    while path not in lines and path:
        path = path[:-1]
    return lines.get(path)


def _alternatives(annotation: Any) -> list[Any]:
    """The types an annotation may hold: ``Annotated`` unwrapped, unions flattened."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _alternatives(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [alt for arg in typing.get_args(annotation) for alt in _alternatives(arg)]
    return [annotation]


def _keys_at(path: ConfigPath) -> list[str]:
    """The keys the schema allows at ``path`` (the mapping an unknown key sits in)."""
    annotation: Any = Config
    for part in path:
        for candidate in _alternatives(annotation):
            origin = typing.get_origin(candidate)
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                fields = candidate.model_fields
                found = [f.annotation for n, f in fields.items() if part in (n, f.alias)]
                if found:
                    annotation = found[0]
                    break
            elif origin is list and isinstance(part, int):
                annotation = typing.get_args(candidate)[0]
                break
            elif origin is dict:
                annotation = typing.get_args(candidate)[1]
                break
        else:
            return []
    return [
        field.alias or name
        for candidate in _alternatives(annotation)
        if isinstance(candidate, type) and issubclass(candidate, BaseModel)
        for name, field in candidate.model_fields.items()
    ]


def _unknown_key(path: ConfigPath) -> str:
    """``unknown key; did you mean 'retry'?`` when a known key at that level is close."""
    key = path[-1] if path else None
    if not isinstance(key, str):
        return "unknown key"
    known = {name.lower(): name for name in _keys_at(path[:-1])}
    close = difflib.get_close_matches(key.lower(), list(known), n=1)
    return f"unknown key; did you mean {known[close[0]]!r}?" if close else "unknown key"


def _friendly(error: ErrorDetails) -> str:
    if error["type"] == "extra_forbidden":
        return _unknown_key(tuple(error["loc"]))
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
    # The fast parse keeps no lines; only a file with a problem is parsed again, with them.
    data = fast_parse(text)
    if data is SLOW:
        data, _ = _careful_parse(text, source)
    if not isinstance(data, dict):
        raise ConfigError(source, [Problem((), 1, "the file must be a mapping of keys")])
    errors: ValidationError | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        errors = exc
    del data
    if errors is not None:
        lines = _careful_parse(text, source)[1]
        raise ConfigError(source, list(_schema_problems(errors, lines))) from None
    references = reference_errors(config)
    if references or _may_have_file_problems(config):
        lines = _careful_parse(text, source)[1]
        problems = [Problem(path, _line_of(path, lines), msg) for path, msg in references]
        problems += _file_problems(config, base or Path.cwd(), lines)
        if problems:
            raise ConfigError(source, problems)
    share_equal_parts(config)
    return_freed_memory()
    return config


def _careful_parse(text: str, source: str) -> tuple[Any, dict[ConfigPath, int]]:
    try:
        return parse_yaml(text)
    except ConfigError as exc:
        raise ConfigError(source, exc.problems) from None


def _may_have_file_problems(config: Config) -> bool:
    """Whether :func:`_file_problems` has anything to look at (it needs the lines)."""
    return (
        any(route.default and route.default.body_file for route in config.routes)
        or bool(config.cache.path)
        or any(upstream.tls.ca_file for upstream in config.upstreams.values())
    )


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
