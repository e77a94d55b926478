"""The schema of a route in config.yaml: how requests are matched, retried, validated,
cached, streamed or upgraded, and answered when every upstream fails
(docs/configuration.md, "Configuration reference"). Checks across routes and upstreams
(names that point nowhere) live in :func:`proxy.config.schema.reference_errors`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, GetJsonSchemaHandler, field_validator, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from proxy.cache.rules import DEFAULT_STATUSES
from proxy.chain.headers import UNKEYED_REQUEST_HEADER_NAMES, UNKEYED_REQUEST_HEADERS
from proxy.chain.validate import parse_json_path
from proxy.config.types import (
    TOKEN,
    Duration,
    HeaderName,
    HeaderValue,
    Model,
    Name,
    Size,
    StatusList,
    header_name,
    positive,
)

RETRY_ON_CHOICES = ("connect_error", "timeout", "reset", "5xx", "429", "invalid")


class Match(Model):
    path: str | None = None
    path_prefix: str | None = None
    path_regex: str | None = None
    methods: list[str] | None = None
    host: str | None = None
    headers: dict[HeaderName, HeaderValue] = {}

    @field_validator("path", "path_prefix")
    @classmethod
    def _starts_with_slash(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"a path starts with '/', got {value!r}")
        return value

    @field_validator("path_regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @field_validator("methods")
    @classmethod
    def _method_tokens(cls, value: list[str]) -> list[str]:
        for method in value:
            if not TOKEN.match(method):
                raise ValueError(f"{method!r} is not an HTTP method")
        return [method.upper() for method in value]

    @field_validator("host")
    @classmethod
    def _lower_host(cls, value: str) -> str:
        return value.lower()

    @model_validator(mode="after")
    def _one_path_rule(self) -> Match:
        given = [key for key in ("path", "path_prefix", "path_regex") if getattr(self, key)]
        if len(given) > 1:
            raise ValueError(f"use one of path, path_prefix, path_regex, not {' and '.join(given)}")
        return self


class Retry(Model):
    """Same-upstream retries; moving on to the next upstream needs no retry budget."""

    attempts: int = Field(default=1, ge=1, le=10)  # tries per upstream, counting the first
    backoff: Duration = 0.025
    max_backoff: Duration = 1.0  # also caps the Retry-After the proxy is willing to wait
    on: list[Any] = ["connect_error", "timeout", "5xx", "429"]
    non_idempotent: bool = False
    max_replay_body: Size = 1024**2

    @field_validator("on")
    @classmethod
    def _known_conditions(cls, value: list[Any]) -> list[str]:
        names = [str(item) for item in value]
        for name in names:
            if name not in RETRY_ON_CHOICES:
                raise ValueError(f"{name!r} is not one of {', '.join(RETRY_ON_CHOICES)}")
        return names


class DefaultPayload(Model):
    status: int = Field(default=200, ge=200, le=599)
    headers: dict[HeaderName, HeaderValue] = {}  # checked at load: no header injection
    body: str | None = None
    body_file: str | None = None

    @model_validator(mode="after")
    def _one_body(self) -> DefaultPayload:
        if self.body is not None and self.body_file is not None:
            raise ValueError("use body or body_file, not both")
        return self


class Validate(Model):
    status: StatusList | None = None  # codes or classes; default: any the route accepts
    content_type: str | None = None
    min_size: Size = 0
    json_nonempty: str | None = None
    max_body: Size = 1024**2

    @field_validator("json_nonempty")
    @classmethod
    def _json_path(cls, value: str) -> str:
        parse_json_path(value)
        return value


class RouteCache(Model):
    stale_for: Duration  # how long a stored answer may be served when every upstream fails
    fresh_for: Duration = 0.0  # how long it may be served without asking an upstream at all
    stale_while_revalidate: Duration = 0.0  # past fresh_for: served while refreshed behind
    honour_cache_control: bool = True  # the upstream's Cache-Control may narrow the above
    vary_headers: list[str] = []
    ignore_params: list[str] = []
    methods: list[str] = ["GET", "HEAD"]
    # what may become the last good answer: a 404 or a redirect is not, unless listed
    statuses: list[Annotated[int, Field(ge=200, le=599)]] = list(DEFAULT_STATUSES)
    max_entry_size: Size = 1024**2
    allow_authorization: bool = (
        False  # keep answers to Authorization/Cookie requests, keyed on them
    )
    keep_headers: list[str] = []  # unkeyed inputs still forwarded (then part of the key)

    @field_validator("vary_headers")
    @classmethod
    def _header_names(cls, value: list[str]) -> list[str]:
        return [header_name(name).lower() for name in value]

    @field_validator("statuses")
    @classmethod
    def _whole_answers(cls, value: list[int]) -> list[int]:
        """206 is a part of an answer and 304 none at all (it refers to a copy the
        client holds): neither can stand in for the resource in an outage."""
        for status in value:
            if status in (206, 304):
                raise ValueError(f"{status} is not a whole answer and cannot be kept")
        return value

    @field_validator("keep_headers")
    @classmethod
    def _unkeyed_names(cls, value: list[str]) -> list[str]:
        """Only the names the route would strip: any other header is forwarded anyway
        (put it in vary_headers to key on it), so another name is most likely a typo."""
        for name in value:
            if name.lower() not in UNKEYED_REQUEST_HEADERS:
                known = ", ".join(sorted(UNKEYED_REQUEST_HEADER_NAMES))
                raise ValueError(f"{name!r} is not stripped on cached routes (those are: {known})")
        return [name.lower() for name in value]


def _positive_or_off(value: float | None) -> float | None:
    """A limit that may be off (null); 0 would cut everything at once, so it is refused."""
    if value is not None and value <= 0:
        raise ValueError("must be longer than 0s (null: no limit)")
    return value


class StreamConfig(Model):
    """A streamed answer (Server-Sent Events, NDJSON): held until its first event that
    carries data, then relayed chunk by chunk (docs/configuration.md, "Streams and
    upgrades")."""

    # Every field is hashable, so pydantic shares the default: one object for all routes.
    hold_max: Size = 16 * 1024  # bytes held before committing when no data event came
    first_event_timeout: Duration | None = None  # per try; None: the upstream's read timeout
    idle_timeout: Duration = 60.0  # silence allowed between chunks after the commit
    max_duration: Duration | None = None  # the whole stream; None: no limit
    abort_on_error_event: bool = False  # an error event after the commit aborts the stream

    _idle = field_validator("idle_timeout")(positive)
    _limits = field_validator("first_event_timeout", "max_duration")(_positive_or_off)

    @field_validator("hold_max")
    @classmethod
    def _holds_something(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be at least 1 byte")
        return value


class UpgradeConfig(Model):
    """Upgraded connections (WebSocket): tunnelled after the upstream's 101, with limits.
    ``upgrade: true`` and ``upgrade: false`` stand for these defaults, enabled or not."""

    enabled: bool = True
    protocols: list[str] | None = None  # Upgrade names allowed, lower case; None or []: any
    handshake_timeout: Duration = 10.0  # the wait for the upstream's 101, per try
    idle_timeout: Duration = 300.0  # no byte either way this long: the tunnel is closed
    max_duration: Duration | None = None  # the whole tunnel; None: no limit
    max_tunnels: int = Field(default=1000, ge=1)  # open on this route; more: 503

    _timeouts = field_validator("handshake_timeout", "idle_timeout")(positive)
    _limit = field_validator("max_duration")(_positive_or_off)

    @field_validator("protocols")
    @classmethod
    def _protocol_names(cls, value: list[str]) -> list[str]:
        """RFC 9110 7.8: a protocol name is a token, compared case-insensitively."""
        for name in value:
            if not TOKEN.match(name):
                raise ValueError(f"{name!r} is not an Upgrade protocol name such as websocket")
        return [name.lower() for name in value]


UPGRADE_ON = UpgradeConfig()
UPGRADE_OFF = UpgradeConfig(enabled=False)


def _switch_or_mapping(value: object) -> object:
    """``true``/``false`` as the shared default mappings; a mapping is read as written."""
    if isinstance(value, bool):
        return UPGRADE_ON if value else UPGRADE_OFF
    if not isinstance(value, dict):
        shown = "null" if value is None else repr(value)
        raise ValueError(f"expected true, false or a mapping, got {shown}")
    return value


class _SwitchInSchema:
    """What editors see (``failover-proxy schema``): ``true``, ``false`` or the mapping."""

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"anyOf": [{"type": "boolean"}, handler(schema)]}


UpgradeSwitch = Annotated[UpgradeConfig, BeforeValidator(_switch_or_mapping), _SwitchInSchema()]


class Route(Model):
    name: Name
    match: Match = Match()
    upstreams: list[Name] = Field(min_length=1)
    deadline: Duration = 15.0
    retry: Retry = Retry()
    failure_statuses: StatusList = ["5xx", 429]
    default: DefaultPayload | None = None
    validate_: Validate | None = Field(default=None, alias="validate")
    cache: RouteCache | None = None
    on_failure: str | None = None  # "buffer": writes are kept on disk when every upstream failed
    response_mode: Literal["auto", "buffer", "stream"] = "auto"
    stream: StreamConfig = StreamConfig()
    upgrade: UpgradeSwitch = UPGRADE_ON

    @field_validator("on_failure")
    @classmethod
    def _on_failure(cls, value: str | None) -> str | None:
        if value not in (None, "buffer"):
            raise ValueError("the only choice is buffer")
        return value

    @field_validator("deadline")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("the deadline must be longer than 0s")
        return value

    @model_validator(mode="after")
    def _streams_are_not_stored(self) -> Route:
        if self.response_mode == "stream" and self.cache is not None:
            raise ValueError(
                "response_mode: stream cannot have a cache (a stream is never stored); "
                "use response_mode: auto, or remove cache"
            )
        return self
