"""Issue 12 item 13: what a newcomer tripped on in the docs and the CLI. ``check`` takes
``--config`` as ``run`` does and shows each route's cache step; unknown keys get a "did
you mean"; YAML syntax errors give ``file:line:column``; the README names only keys the
schema has, every ``X-Failover-Source`` value, and no file the repository lacks."""

from __future__ import annotations

import re

import pytest

from proxy.chain.outcome import Source
from proxy.cli import main
from proxy.config.loader import ConfigError, load_text
from proxy.config.schema import Config
from tests.helpers.docs import BUNDLED, CONFIGURATION, all_docs, schema_keys, section

BASE = """\
upstreams:
  primary: {url: "http://127.0.0.1:8000"}
routes:
  - name: r
    upstreams: [primary]
"""


def refusal(text: str) -> str:
    with pytest.raises(ConfigError) as refused:
        load_text(text, source="config.yaml")
    return str(refused.value)


# --- check --config, and the cache step -------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "--config", str(BUNDLED)],
        ["check", str(BUNDLED)],
        ["check", f"--config={BUNDLED}"],
    ],
    ids=["--config", "positional", "--config="],
)
def test_check_takes_the_file_as_run_does(argv, capsys):
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "ok"
    assert err == ""


def test_check_refuses_two_different_files(capsys, tmp_path):
    with pytest.raises(SystemExit) as exited:
        main(["check", str(BUNDLED), "--config", str(tmp_path / "other.yaml")])
    assert exited.value.code == 2
    assert "give the file once" in capsys.readouterr().err


def test_check_without_a_file_reads_config_yaml_in_the_working_directory(
    capsys, monkeypatch, tmp_path
):
    (tmp_path / "config.yaml").write_text(BASE)
    monkeypatch.chdir(tmp_path)
    assert main(["check"]) == 0
    assert capsys.readouterr().out.startswith("ok\n")


def test_check_shows_each_routes_cache_steps(tmp_path, capsys):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        BASE
        + "    cache: {stale_for: 24h}\n"
        + "  - name: fresh\n    upstreams: [primary]\n"
        + "    cache: {stale_for: 1h, fresh_for: 30s, stale_while_revalidate: 10s}\n"
        + "  - name: nocache\n    upstreams: [primary]\n"
    )
    assert main(["check", "--config", str(config_file)]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "route r: any method any path -> primary -> cache (stale for 1d) -> 503 "
        "(deadline 15s, tries per upstream: 1)",
        "route fresh: any method any path -> cache (fresh for 30s, revalidating for 10s) -> "
        "primary -> cache (stale for 1h) -> 503 (deadline 15s, tries per upstream: 1)",
        "route nocache: any method any path -> primary -> 503 "
        "(deadline 15s, tries per upstream: 1)",
    ]


# --- did you mean; YAML syntax with its column -------------------------------------------


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        (
            "    retyr: {attempts: 2}\n",
            "config.yaml:6: routes[0].retyr: unknown key; did you mean 'retry'?",
        ),
        ("listen: {hots: x}\n", "config.yaml:6: listen.hots: unknown key; did you mean 'host'?"),
        (
            "    cache: {stale_fro: 1h, stale_for: 1h}\n",
            "config.yaml:6: routes[0].cache.stale_fro: unknown key; did you mean 'stale_for'?",
        ),
        (
            "    validate: {Status: [200]}\n",
            "config.yaml:6: routes[0].validate.Status: unknown key; did you mean 'status'?",
        ),
        (
            "upstreams2: {}\n",
            "config.yaml:6: upstreams2: unknown key; did you mean 'upstreams'?",
        ),
        (
            "    timeout: 5s\n",  # the route has deadline; an upstream has timeouts
            "config.yaml:6: routes[0].timeout: unknown key",
        ),
    ],
)
def test_an_unknown_key_names_the_closest_known_one(extra, error):
    assert refusal(BASE + extra) == error


def test_did_you_mean_looks_inside_maps_of_names_and_lists():
    text = BASE.replace(
        '{url: "http://127.0.0.1:8000"}',
        '{url: "http://127.0.0.1:8000", circuit_breaker: {open_fro: 1s}}',
    )
    assert refusal(text) == (
        "config.yaml:2: upstreams.primary.circuit_breaker.open_fro: unknown key; "
        "did you mean 'open_for'?"
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            'upstreams:\n  a: {url: "http://x"\nroutes: []\n',
            "config.yaml:3:1: YAML syntax: expected ',' or '}', but got '<scalar>', "
            "while parsing a flow mapping at line 2, column 6",
        ),
        (
            "upstreams:\n  a:\n    url: http://x\n     bad: 1\n",
            "config.yaml:4:9: YAML syntax: mapping values are not allowed here",
        ),
        (
            "routes:\n\t- name: r\n",
            "config.yaml:2:1: YAML syntax: found character '\\t' that cannot start any token, "
            "while scanning for the next token",
        ),
        (
            'listen: {host: "a\x01"}\n',
            "config.yaml:1:18: YAML syntax: character U+0001 is not allowed in YAML text",
        ),
    ],
    ids=["flow-mapping", "indentation", "tab", "unprintable"],
)
def test_a_yaml_syntax_error_gives_file_line_and_column(text, error):
    assert refusal(text) == error


def test_check_prints_a_syntax_error_in_the_house_style(tmp_path, capsys):
    config_file = tmp_path / "config.yaml"
    config_file.write_text("upstreams:\n  a: [\n")
    assert main(["check", "--config", str(config_file)]) == 1
    assert re.fullmatch(
        rf"{re.escape(str(config_file))}:3:1: YAML syntax: [^\n]+\n", capsys.readouterr().err
    )


def test_the_headers_table_lists_every_source_value():
    table = next(
        line
        for line in section(CONFIGURATION, "Headers").splitlines()
        if line.startswith("| `X-Failover-Source`")
    )
    assert "upstream's name" in table
    for source in Source:
        assert f"`{source.value}`" in table, source


def test_every_dotted_config_key_in_the_readme_exists():
    """`cache.stale_for`, `admin.host`, `circuit_breaker.multiplier`: a dotted path that
    starts with a config section must resolve in the schema (at any depth: `retry.on` is
    routes[].retry.on), except the /health fields the README names the same way."""
    keys = {key.replace("[]", "").replace(".*", "") for key in schema_keys(Config)}
    sections = {
        key.rsplit(".", 1)[-1] for key in keys if any(k.startswith(key + ".") for k in keys)
    }
    health_fields = {"health_check.state", "health_check.detail", "upstreams.circuit"}
    missing = []
    for token in set(re.findall(r"`([a-z_<>]+(?:\.[a-z_<>]+)+)`", all_docs())):
        path = ".".join(p for p in token.split(".") if not p.startswith("<"))
        if path.split(".")[0] not in sections or path in health_fields:
            continue
        if re.search(r"\.(py|db|yaml|json|md)$", token):  # a file name, not a key
            continue
        if not any(key == path or key.endswith("." + path) for key in keys):
            missing.append(token)
    assert sorted(missing) == []
