"""The building blocks of the config schema: the base model (strict, frozen, no unknown
keys) and the value types that read human units (durations, sizes, rates, statuses)."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)
from pydantic.json_schema import GenerateJsonSchema

from proxy.config.units import parse_duration, parse_ratio, parse_size

# What editors see (``failover-proxy schema``): the units as written, not the numbers
# they become.
_DURATION_SCHEMA = {
    "description": "a duration with its unit: 250ms, 5s, 2m, 24h, 7d (or 0)",
    "anyOf": [
        {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)\s*$"},
        {"const": 0},
    ],
}
_SIZE_SCHEMA = {
    "description": "bytes, or a size with its unit: 64KiB, 1MiB, 1GiB (KB/MB/GB: powers of 1000)",
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$"},
    ],
}
_RATIO_SCHEMA = {
    "description": "a percentage such as 50%, or a number from 0 to 1",
    "anyOf": [
        {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*%\s*$"},
        {"type": "number", "minimum": 0, "maximum": 1},
    ],
}
_STATUS_LIST_SCHEMA = {
    "type": "array",
    "items": {
        "anyOf": [
            {"type": "integer", "minimum": 100, "maximum": 599},
            {"enum": ["2xx", "3xx", "4xx", "5xx"]},
        ]
    },
}

Duration = Annotated[
    float, BeforeValidator(parse_duration), WithJsonSchema(_DURATION_SCHEMA, mode="validation")
]
Ratio = Annotated[
    float, BeforeValidator(parse_ratio), WithJsonSchema(_RATIO_SCHEMA, mode="validation")
]
Size = Annotated[int, BeforeValidator(parse_size), WithJsonSchema(_SIZE_SCHEMA, mode="validation")]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]

# \Z, not $: `$` also matches before a final newline, which would let "X-Name\n" through.
TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


def status_list(value: list[Any]) -> list[int | str]:
    """Status codes and classes (``503``, ``5xx``), as ``failure_statuses`` and checks use."""
    for item in value:
        valid_code = isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599
        if not (valid_code or item in ("2xx", "3xx", "4xx", "5xx")):
            raise ValueError(f"expected a status code or a class such as 5xx, got {item!r}")
    return value


def _as_float(value: object) -> object:
    """YAML writes 50 for 50.0; strict mode would refuse the int."""
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


Number = Annotated[float, BeforeValidator(_as_float)]
StatusList = Annotated[
    list[Any], AfterValidator(status_list), WithJsonSchema(_STATUS_LIST_SCHEMA, mode="validation")
]


def positive(value: float) -> float:
    """A duration that must pass before something happens again (a flush, a check): 0
    would spin."""
    if value <= 0:
        raise ValueError("must be longer than 0s")
    return value


def header_name(value: str) -> str:
    """A header name the config sets or matches must be an RFC 9110 token (5.1): a name
    with a space, colon or line break would split or forge a header on the wire."""
    if not TOKEN.match(value):
        raise ValueError(f"{value!r} is not a valid HTTP header name (RFC 9110 token)")
    return value


def header_value(value: str) -> str:
    """A header value the config sets: no control characters but HTAB (RFC 9110 5.5).
    CR and LF would inject headers, NUL truncates in some parsers; Unicode line and
    paragraph separators and C1 controls are refused too, as text tools split on them.
    Refused when the file loads, so a bad value never waits for the first request."""
    for char in value:
        if char != "\t" and unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            raise ValueError(
                f"{value!r} has a control character ({char!r}) that a header value may not hold"
            )
    return value


HeaderName = Annotated[str, AfterValidator(header_name)]
HeaderValue = Annotated[str, AfterValidator(header_value)]


def published_name(class_name: str) -> str:
    """The name a schema class has in the JSON Schema users see: without the ``Config``
    suffix that, in the code, keeps it apart from the runtime object it configures
    (``CircuitBreakerConfig`` configures a ``CircuitBreaker``; the schema says
    ``CircuitBreaker``, as it always has)."""
    return class_name.removesuffix("Config") or class_name


class PublishedNames(GenerateJsonSchema):
    """JSON Schema ``$defs`` keyed by :func:`published_name`."""

    def normalize_name(self, name: str) -> str:
        return super().normalize_name(published_name(name))


class Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        model_title_generator=lambda model: published_name(model.__name__),
    )
