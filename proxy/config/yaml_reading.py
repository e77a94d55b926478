"""Reading config YAML: the strict loader (no anchors or aliases), and the fast path
that builds plain values straight from the parser's events.

The fast path keeps no node tree and no line map, which for a large file (10,000
routes) held most of the load's memory; anything out of the ordinary sends the caller
to the careful parse (:func:`proxy.config.loader.parse_yaml`), which reports it with
its line. After a load, freed heap is handed back to the OS.
"""

from __future__ import annotations

import ctypes
import gc
import sys
from typing import Any

import yaml


class NotAllowed(yaml.MarkedYAMLError):
    """Valid YAML this loader refuses (anchors, aliases): reported like duplicate keys,
    by line, not as a syntax error."""


class StrictLoader(yaml.SafeLoader):
    """A SafeLoader whose composer refuses anchors and aliases."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise NotAllowed(
                problem="anchors and aliases (&name, *name) are not allowed in this file",
                problem_mark=event.start_mark,
            )
        return super().compose_node(parent, index)


def fast_parse(text: str) -> Any:
    """The document as plain Python values, built straight from the parser's events: no
    node tree and no line map, which for a large file (10,000 routes) held most of the
    load's memory. Returns ``_SLOW`` for anything out of the ordinary (an error, a tag, an
    anchor, a key that is not a scalar, a duplicate key, a second document), and the
    caller then runs the careful parse, which reports it with its line."""
    try:
        loader = StrictLoader(text)
    except yaml.YAMLError:
        return SLOW
    try:
        return _from_events(loader)  # typed Any: PyYAML's event API is untyped
    except (yaml.YAMLError, ValueError, TypeError, _Slow):
        return SLOW
    finally:
        loader.dispose()


class _Slow(Exception):
    """The fast path gives up: the careful one will say why."""


SLOW: Any = object()


def _from_events(loader: Any) -> Any:
    get = loader.get_event
    get()  # StreamStartEvent
    if loader.check_event(yaml.StreamEndEvent):
        return _empty_document(loader)
    get()  # DocumentStartEvent
    data = _value(loader, get())
    get()  # DocumentEndEvent
    if not loader.check_event(yaml.StreamEndEvent):
        raise _Slow
    get()
    return data


def _empty_document(loader: Any) -> Any:
    loader.get_event()
    return {}


def _value(loader: Any, event: Any) -> Any:
    if getattr(event, "anchor", None) is not None or isinstance(event, yaml.AliasEvent):
        raise _Slow
    if isinstance(event, yaml.ScalarEvent):
        tag = event.tag
        if tag is None or tag == "!":
            tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        node = yaml.ScalarNode(tag, event.value, style=event.style)  # errors: the slow path
        value = loader.construct_object(node)
        loader.constructed_objects.pop(node, None)  # the loader would keep every node
        return value
    if event.tag is not None:
        raise _Slow
    get = loader.get_event
    if isinstance(event, yaml.MappingStartEvent):
        result: dict[Any, Any] = {}
        while not loader.check_event(yaml.MappingEndEvent):
            key_event = get()
            if not isinstance(key_event, yaml.ScalarEvent) or key_event.anchor is not None:
                raise _Slow
            key = sys.intern(key_event.value)  # the key as written: `on:` stays "on"
            if key in result:
                raise _Slow
            result[key] = _value(loader, get())
        get()
        return result
    if isinstance(event, yaml.SequenceStartEvent):
        items: list[Any] = []
        while not loader.check_event(yaml.SequenceEndEvent):
            items.append(_value(loader, get()))
        get()
        return items
    raise _Slow


def return_freed_memory() -> None:
    """Collect the load's garbage and hand freed heap back to the OS (glibc keeps it
    otherwise: a 10,000-route file left ~40 MB of it behind)."""
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)


def _find_malloc_trim() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return None


_malloc_trim = _find_malloc_trim()
