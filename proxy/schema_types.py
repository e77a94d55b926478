"""The building blocks of the config schema: the base model (strict, frozen, no unknown
keys) and the value types that read human units (durations, sizes, rates, statuses)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
)

from proxy.units import parse_duration, parse_ratio, parse_size

Duration = Annotated[float, BeforeValidator(parse_duration)]
Ratio = Annotated[float, BeforeValidator(parse_ratio)]
Size = Annotated[int, BeforeValidator(parse_size)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]

TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


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
StatusList = Annotated[list[Any], AfterValidator(status_list)]


def header_name(value: str) -> str:
    if not TOKEN.match(value):
        raise ValueError(f"{value!r} is not a valid HTTP header name")
    return value


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
