"""config.loader + config.schema: a config is used only when valid; errors name path and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli import main
from proxy.config.loader import MAX_CONFIG_BYTES, ConfigError, load_file, load_text
from tests.conftest import REPO

BUNDLED = REPO / "config.yaml"

BASE = """\
upstreams:
  primary: {url: http://127.0.0.1:8000}
  backup: {url: http://127.0.0.1:8001}
routes:
  - name: drivers
    match: {path_prefix: /api}
    upstreams: [primary, backup]
  - name: rest
    upstreams: [primary]
    retry:
      attempts: 2
"""


def refusal(text: str) -> str:
    with pytest.raises(ConfigError) as refused:
        load_text(text, source="config.yaml")
    return str(refused.value)


def edited(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new, 1)


def test_the_bundled_config_loads_with_its_routes_in_file_order():
    config = load_file(BUNDLED)
    assert [route.name for route in config.routes] == ["drivers", "events", "everything-else"]
    drivers = config.routes[0]
    assert drivers.upstreams == ["primary", "backup"]
    assert drivers.deadline == 5.0
    assert drivers.retry.backoff == 0.05
    assert drivers.retry.on == ["connect_error", "timeout", "5xx", "429"]
    assert config.upstreams["primary"].timeouts.connect == 0.5


def test_a_short_route_gets_the_documented_defaults():
    route = load_text(BASE).routes[0]
    assert route.deadline == 15.0
    assert route.retry.attempts == 1
    assert route.retry.on == ["connect_error", "timeout", "5xx", "429"]
    assert route.failure_statuses == ["5xx", 429]


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        ("attempts: 2", "tries: 2", "config.yaml:11: routes[1].retry.tries: unknown key"),
        (
            "attempts: 2",
            "attempts: two",
            "config.yaml:11: routes[1].retry.attempts: Input should be a valid integer",
        ),
        (
            "attempts: 2",
            "attempts: 0",
            "config.yaml:11: routes[1].retry.attempts: Input should be greater than or equal to 1",
        ),
        (
            "[primary]",
            "[primary, spare]",
            "config.yaml:9: routes[1].upstreams[1]: unknown upstream 'spare' "
            "(known: backup, primary)",
        ),
        (
            "[primary]",
            "[primary, primary]",
            "config.yaml:9: routes[1].upstreams[1]: 'primary' is listed twice",
        ),
        (
            "name: rest",
            "name: drivers",
            "config.yaml:8: routes[1].name: a route named 'drivers' exists already",
        ),
        (
            "    upstreams: [primary]\n",
            "    upstreams: [primary]\n    upstreams: [backup]\n",
            "config.yaml:10: routes[1].upstreams: duplicate key",
        ),
        (
            "  backup: {",
            "  backup: &b {",
            "config.yaml:3: YAML: anchors and aliases (&name, *name) are not allowed in this file",
        ),
        (
            "[primary, backup]",
            "*backup",
            "config.yaml:7: YAML: anchors and aliases (&name, *name) are not allowed in this file",
        ),
        (
            "attempts: 2",
            "attempts: 2\n      backoff: 50",
            "config.yaml:12: routes[1].retry.backoff: "
            "expected a duration such as 250ms, 5s or 24h, got 50",
        ),
        (
            "attempts: 2",
            "attempts: 2\n      max_replay_body: 1TB",
            "config.yaml:12: routes[1].retry.max_replay_body: "
            "expected a size such as 64KiB or 1MiB, got '1TB'",
        ),
        (
            "attempts: 2",
            "attempts: 2\n      on: [5xx, sometimes]",
            "config.yaml:12: routes[1].retry.on: "
            "'sometimes' is not one of connect_error, timeout, reset, 5xx, 429, invalid",
        ),
        (
            "{path_prefix: /api}",
            "{path: /api, path_prefix: /api}",
            "config.yaml:6: routes[0].match: "
            "use one of path, path_prefix, path_regex, not path and path_prefix",
        ),
        (
            "{path_prefix: /api}",
            "{path_regex: '('}",
            "config.yaml:6: routes[0].match.path_regex: not a valid regular expression: "
            "missing ), unterminated subpattern at position 0",
        ),
        (
            "url: http://127.0.0.1:8001",
            "url: ftp://x",
            "config.yaml:3: upstreams.backup.url: "
            "expected an http:// or https:// URL with a host, got 'ftp://x'",
        ),
    ],
)
def test_a_refusal_names_the_line_and_the_path(old, new, error):
    assert refusal(edited(old, new)) == error


def test_every_problem_of_a_file_is_reported_at_once():
    text = edited("[primary]", "[spare]").replace("[primary, backup]", "[primary, extra]")
    assert refusal(text).splitlines() == [
        "config.yaml:7: routes[0].upstreams[1]: unknown upstream 'extra' (known: backup, primary)",
        "config.yaml:9: routes[1].upstreams[0]: unknown upstream 'spare' (known: backup, primary)",
    ]


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n"])
def test_a_top_level_that_is_not_a_mapping_is_refused(text):
    assert refusal(text) == "config.yaml:1: the file must be a mapping of keys"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("!!python/object:os.system x", id="unknown-tag"),
        pytest.param("2024-13-01", id="impossible-date"),
    ],
)
def test_a_value_yaml_cannot_construct_is_a_located_refusal_not_a_crash(value):
    text = edited("attempts: 2", f"attempts: 2\n      backoff: {value}")
    assert refusal(text).startswith("config.yaml:12: ")


def test_retry_on_is_read_as_written_not_as_a_yaml_1_1_boolean():
    text = edited("attempts: 2", "attempts: 2\n      on: [connect_error, 429]")
    assert load_text(text).routes[1].retry.on == ["connect_error", "429"]
    flow = edited("    retry:\n      attempts: 2\n", "    retry: {on: [5xx]}\n")
    assert load_text(flow).routes[1].retry.on == ["5xx"]


def test_default_body_file_is_found_next_to_the_config_not_in_the_working_dir(
    tmp_path, monkeypatch
):
    (tmp_path / "defaults").mkdir()
    (tmp_path / "defaults" / "rest.json").write_text("{}")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(BASE + "    default: {body_file: defaults/rest.json}\n")
    monkeypatch.chdir(Path(__file__).parent)
    assert load_file(config_file).routes[1].default.body_file == "defaults/rest.json"


def test_a_missing_default_body_file_is_refused_with_its_full_path(tmp_path):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(BASE + "    default: {body_file: defaults/gone.json}\n")
    with pytest.raises(ConfigError) as refused:
        load_file(config_file)
    assert str(refused.value) == (
        f"{config_file}:12: routes[1].default.body_file: "
        f"no such file: {tmp_path / 'defaults' / 'gone.json'}"
    )


def test_a_file_over_one_mebibyte_is_refused_before_parsing(tmp_path):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(BASE + "#" * MAX_CONFIG_BYTES)
    with pytest.raises(ConfigError) as refused:
        load_file(config_file)
    assert str(refused.value) == f"{config_file}: larger than 1048576 bytes"


def test_check_prints_ok_and_one_line_per_route(capsys):
    assert main(["check", str(BUNDLED)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "ok"
    assert lines[1:] == [
        "route drivers: GET,HEAD path_prefix=/api/telemetry/drivers -> primary -> backup -> "
        "cache (stale for 1d) -> default payload (deadline 5s, tries per upstream: 2)",
        "route events: POST path_prefix=/api/events -> primary -> backup -> "
        "write buffer (writes) -> 503 (deadline 15s, tries per upstream: 1)",
        "route everything-else: any method path_prefix=/ -> primary -> backup -> 503 "
        "(deadline 15s, tries per upstream: 1)",
    ]
    assert err == ""


def test_check_prints_the_errors_to_stderr_and_exits_1(tmp_path, capsys):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(edited("attempts: 2", "attempts: 0"))
    assert main(["check", str(config_file)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"{config_file}:11: routes[1].retry.attempts: Input should be greater than or equal to 1\n"
    )
