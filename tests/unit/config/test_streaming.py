"""A route's ``response_mode``, ``stream`` and ``upgrade`` keys (docs/configuration.md,
"Streams and upgrades"): their defaults, shared by every route that keeps them, the
forms ``upgrade`` takes, and every bad value refused with its line."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import jsonschema
import pytest

from proxy.cli import main
from proxy.config.loader import ConfigError, load_text
from proxy.config.reload_plan import plan
from proxy.config.runtime import (
    DEFAULT_STREAM,
    DEFAULT_UPGRADE,
    Runtime,
    StreamSettings,
    UpgradeSettings,
    build_runtime,
)

BASE = """\
upstreams:
  primary: {url: http://127.0.0.1:8000}
routes:
  - name: plain
    upstreams: [primary]
  - name: chat
    upstreams: [primary]
"""


def compiled(extra: str = "", tmp_path: Path = Path(".")) -> Runtime:
    """The runtime of BASE, with ``extra`` lines added to the route ``chat``."""
    return build_runtime(load_text(BASE + extra, source="config.yaml"), tmp_path)


def refusal(extra: str) -> str:
    with pytest.raises(ConfigError) as refused:
        load_text(BASE + extra, source="config.yaml")
    return str(refused.value)


# --- defaults ----------------------------------------------------------------------------


def test_a_route_without_the_keys_gets_the_documented_defaults():
    chat = compiled().routes[1]
    assert chat.response_mode == "auto"
    assert chat.stream == StreamSettings(
        hold_max=16 * 1024,
        first_event_timeout=None,
        idle_timeout=60.0,
        max_duration=None,
        abort_on_error_event=False,
    )
    assert chat.upgrade == UpgradeSettings(
        enabled=True,
        protocols=None,
        handshake_timeout=10.0,
        idle_timeout=300.0,
        max_duration=None,
        max_tunnels=1000,
    )


def test_routes_on_the_defaults_share_one_settings_object():
    """10,000 routes must not hold 10,000 copies (tests/process/test_config_memory.py)."""
    config = load_text(BASE)
    assert config.routes[0].stream is config.routes[1].stream
    assert config.routes[0].upgrade is config.routes[1].upgrade
    plain, chat = build_runtime(config, Path(".")).routes
    assert plain.stream is chat.stream is DEFAULT_STREAM
    assert plain.upgrade is chat.upgrade is DEFAULT_UPGRADE


def test_routes_with_equal_settings_written_out_share_them_too():
    same = "    stream: {idle_timeout: 2m}\n    upgrade: {max_tunnels: 10}\n"
    text = BASE.replace("    upstreams: [primary]\n", "    upstreams: [primary]\n" + same)
    plain, chat = build_runtime(load_text(text), Path(".")).routes
    assert plain.stream is chat.stream
    assert plain.upgrade is chat.upgrade
    assert chat.stream.idle_timeout == 120.0 and chat.upgrade.max_tunnels == 10


def test_writing_the_defaults_out_changes_nothing():
    written = compiled(
        "    response_mode: auto\n"
        "    stream: {hold_max: 16KiB, first_event_timeout: null, idle_timeout: 60s,"
        " max_duration: null, abort_on_error_event: false}\n"
        "    upgrade: {enabled: true, protocols: [], handshake_timeout: 10s,"
        " idle_timeout: 5m, max_duration: null, max_tunnels: 1000}\n"
    ).routes[1]
    assert written.stream is DEFAULT_STREAM
    assert written.upgrade is DEFAULT_UPGRADE


# --- values as written -------------------------------------------------------------------


def test_stream_settings_are_read_with_their_units():
    chat = compiled(
        "    response_mode: stream\n"
        "    stream:\n"
        "      hold_max: 1KiB\n"
        "      first_event_timeout: 30s\n"
        "      idle_timeout: 500ms\n"
        "      max_duration: 1h\n"
        "      abort_on_error_event: true\n"
    ).routes[1]
    assert chat.response_mode == "stream"
    assert chat.stream == StreamSettings(
        hold_max=1024,
        first_event_timeout=30.0,
        idle_timeout=0.5,
        max_duration=3600.0,
        abort_on_error_event=True,
    )


@pytest.mark.parametrize("mode", ["auto", "buffer", "stream"])
def test_each_response_mode_is_accepted(mode):
    assert compiled(f"    response_mode: {mode}\n").routes[1].response_mode == mode


def test_upgrade_true_is_the_default_mapping():
    assert compiled("    upgrade: true\n").routes[1].upgrade is DEFAULT_UPGRADE


@pytest.mark.parametrize(
    "extra", ["    upgrade: false\n", "    upgrade: {enabled: false}\n"], ids=["false", "mapping"]
)
def test_upgrades_can_be_refused_on_a_route(extra):
    runtime = compiled(extra)
    assert runtime.routes[1].upgrade.enabled is False
    assert runtime.routes[0].upgrade.enabled is True  # the other route keeps its default


def test_a_mapping_sets_the_tunnel_limits_and_lowercases_the_protocols():
    upgrade = (
        compiled(
            "    upgrade:\n"
            "      protocols: [WebSocket, H2C, websocket]\n"
            "      handshake_timeout: 2s\n"
            "      idle_timeout: 30s\n"
            "      max_duration: 2h\n"
            "      max_tunnels: 50\n"
        )
        .routes[1]
        .upgrade
    )
    assert upgrade == UpgradeSettings(
        enabled=True,
        protocols=frozenset({"websocket", "h2c"}),
        handshake_timeout=2.0,
        idle_timeout=30.0,
        max_duration=7200.0,
        max_tunnels=50,
    )


def test_an_empty_protocol_list_allows_any():
    assert compiled("    upgrade: {protocols: []}\n").routes[1].upgrade.protocols is None


# --- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        (
            "    response_mode: streaming\n",
            "config.yaml:8: routes[1].response_mode: Input should be 'auto', 'buffer' or 'stream'",
        ),
        (
            "    stream: {hold_max: 0}\n",
            "config.yaml:8: routes[1].stream.hold_max: must be at least 1 byte",
        ),
        (
            "    stream: {hold_max: lots}\n",
            "config.yaml:8: routes[1].stream.hold_max: "
            "expected a size such as 64KiB or 1MiB, got 'lots'",
        ),
        (
            "    stream: {first_event_timeout: 30}\n",
            "config.yaml:8: routes[1].stream.first_event_timeout: "
            "expected a duration such as 250ms, 5s or 24h, got 30",
        ),
        (
            "    stream: {first_event_timeout: 0}\n",
            "config.yaml:8: routes[1].stream.first_event_timeout: "
            "must be longer than 0s (null: no limit)",
        ),
        (
            "    stream: {idle_timeout: 0}\n",
            "config.yaml:8: routes[1].stream.idle_timeout: must be longer than 0s",
        ),
        (
            "    stream: {max_duration: 0s}\n",
            "config.yaml:8: routes[1].stream.max_duration: must be longer than 0s (null: no limit)",
        ),
        (
            "    stream: {abort_on_error_event: maybe}\n",
            "config.yaml:8: routes[1].stream.abort_on_error_event: Input should be a valid boolean",
        ),
        (
            "    stream: {hold_maximum: 1KiB}\n",
            "config.yaml:8: routes[1].stream.hold_maximum: unknown key; did you mean 'hold_max'?",
        ),
        (
            "    stream: true\n",
            "config.yaml:8: routes[1].stream: "
            "Input should be a valid dictionary or instance of StreamConfig",
        ),
        (
            "    upgrade: websocket\n",
            "config.yaml:8: routes[1].upgrade: expected true, false or a mapping, got 'websocket'",
        ),
        (
            "    upgrade: null\n",
            "config.yaml:8: routes[1].upgrade: expected true, false or a mapping, got null",
        ),
        (
            "    upgrade: {protocols: [web socket]}\n",
            "config.yaml:8: routes[1].upgrade.protocols: "
            "'web socket' is not an Upgrade protocol name such as websocket",
        ),
        (
            "    upgrade: {protocols: websocket}\n",
            "config.yaml:8: routes[1].upgrade.protocols: Input should be a valid list",
        ),
        (
            "    upgrade: {handshake_timeout: 0}\n",
            "config.yaml:8: routes[1].upgrade.handshake_timeout: must be longer than 0s",
        ),
        (
            "    upgrade: {idle_timeout: 0}\n",
            "config.yaml:8: routes[1].upgrade.idle_timeout: must be longer than 0s",
        ),
        (
            "    upgrade: {max_duration: 0}\n",
            "config.yaml:8: routes[1].upgrade.max_duration: "
            "must be longer than 0s (null: no limit)",
        ),
        (
            "    upgrade: {max_tunnels: 0}\n",
            "config.yaml:8: routes[1].upgrade.max_tunnels: "
            "Input should be greater than or equal to 1",
        ),
        (
            "    upgrade: {idle_timout: 1m}\n",
            "config.yaml:8: routes[1].upgrade.idle_timout: "
            "unknown key; did you mean 'idle_timeout'?",
        ),
    ],
)
def test_a_bad_value_is_refused_with_its_line(extra, error):
    assert refusal(extra) == error


def test_a_bad_value_on_its_own_line_is_placed_there():
    assert refusal("    upgrade:\n      enabled: true\n      max_tunnels: -1\n") == (
        "config.yaml:10: routes[1].upgrade.max_tunnels: Input should be greater than or equal to 1"
    )


def test_a_streaming_route_with_a_cache_is_refused():
    assert refusal("    response_mode: stream\n    cache: {stale_for: 1h}\n") == (
        "config.yaml:6: routes[1]: response_mode: stream cannot have a cache "
        "(a stream is never stored); use response_mode: auto, or remove cache"
    )


@pytest.mark.parametrize("mode", ["auto", "buffer"])
def test_a_cache_goes_with_the_other_modes(mode):
    chat = compiled(f"    response_mode: {mode}\n    cache: {{stale_for: 1h}}\n").routes[1]
    assert chat.cache is not None


# --- reload, and what editors see ---------------------------------------------------------


def test_a_reload_takes_new_stream_and_upgrade_settings_without_a_restart(tmp_path: Path):
    old = compiled(tmp_path=tmp_path)
    new = compiled(
        "    response_mode: stream\n    stream: {idle_timeout: 5s}\n    upgrade: false\n",
        tmp_path,
    )
    change = plan(old, new)
    assert change.kept == {"primary"}
    assert change.purge_routes == frozenset()
    assert change.needs_restart == ()
    chat = new.route("chat")
    assert chat is not None
    assert (chat.response_mode, chat.stream.idle_timeout, chat.upgrade.enabled) == (
        "stream",
        5.0,
        False,
    )


@pytest.fixture(scope="module")
def schema() -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["schema"]) == 0
    return json.loads(out.getvalue())


@pytest.mark.parametrize(
    ("upgrade", "valid"),
    [
        (True, True),
        (False, True),
        ({"protocols": ["websocket"], "idle_timeout": "5m"}, True),
        ("yes please", False),
        ({"tunnels": 3}, False),
    ],
)
def test_the_json_schema_takes_the_same_upgrade_forms(schema, upgrade, valid):
    config = {
        "upstreams": {"primary": {"url": "http://127.0.0.1:8000"}},
        "routes": [{"name": "chat", "upstreams": ["primary"], "upgrade": upgrade}],
    }
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(config))
    assert (errors == []) is valid
