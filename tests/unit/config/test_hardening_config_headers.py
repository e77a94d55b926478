"""Issue 12 item 8: the config cannot inject headers. Every header name the file sets or
matches must be an RFC 9110 token and no value may hold a control character but HTAB;
``check``, start-up and every reload refuse such a file with ``file:line``, instead of
the proxy failing (or splitting a header) at request time."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli import main
from proxy.config.loader import ConfigError, load_text

BASE = """\
upstreams:
  primary: {url: "http://127.0.0.1:8000"}
routes:
  - name: r
    upstreams: [primary]
"""

# (yaml appended to BASE, the refusal: line and path, and part of the message)
REFUSED = [
    pytest.param(
        '    default:\n      headers:\n        X-A: "a\\r\\nSet-Cookie: s=1"\n',
        "config.yaml:8: routes[0].default.headers.X-A: 'a\\r\\nSet-Cookie: s=1' has a control "
        "character ('\\r')",
        id="default-value-crlf",
    ),
    pytest.param(
        '    default:\n      headers: {X-A: "a\\nb"}\n',
        "config.yaml:7: routes[0].default.headers.X-A: 'a\\nb' has a control character ('\\n')",
        id="default-value-lf",
    ),
    pytest.param(
        '    default:\n      headers: {X-A: "a\\0b"}\n',
        "config.yaml:7: routes[0].default.headers.X-A: 'a\\x00b' has a control character",
        id="default-value-nul",
    ),
    pytest.param(
        '    default:\n      headers: {X-A: "a\\x7fb"}\n',
        "config.yaml:7: routes[0].default.headers.X-A: 'a\\x7fb' has a control character",
        id="default-value-del",
    ),
    pytest.param(
        '    default:\n      headers: {X-A: "a\\x85b"}\n',
        "config.yaml:7: routes[0].default.headers.X-A: 'a\\x85b' has a control character",
        id="default-value-c1-nel",
    ),
    pytest.param(
        '    default:\n      headers: {X-A: "a\\u2028b"}\n',
        "config.yaml:7: routes[0].default.headers.X-A: 'a\\u2028b' has a control character",
        id="default-value-line-separator",
    ),
    pytest.param(
        "    default:\n      headers:\n        X-A: |\n          two\n          lines\n",
        "config.yaml:8: routes[0].default.headers.X-A: 'two\\nlines\\n' has a control character",
        id="default-value-block-scalar",
    ),
    pytest.param(
        '    default:\n      headers:\n        "X-A\\r\\nX-B": v\n',
        "config.yaml:8: routes[0].default.headers['X-A\\r\\nX-B']: 'X-A\\r\\nX-B' is not a valid "
        "HTTP header name",
        id="default-name-crlf",
    ),
    pytest.param(
        '    default:\n      headers: {"X A": v}\n',
        "config.yaml:7: routes[0].default.headers.X A: 'X A' is not a valid HTTP header name",
        id="default-name-space",
    ),
    pytest.param(
        '    default:\n      headers: {"X-A:": v}\n',
        "config.yaml:7: routes[0].default.headers.X-A:: 'X-A:' is not a valid HTTP header name",
        id="default-name-colon",
    ),
    pytest.param(
        '    match:\n      headers: {X-Tenant: "a\\r\\nb"}\n',
        "config.yaml:7: routes[0].match.headers.X-Tenant: 'a\\r\\nb' has a control character",
        id="match-value",
    ),
    pytest.param(
        '    cache:\n      stale_for: 1h\n      vary_headers: ["Accept\\n"]\n',
        "config.yaml:8: routes[0].cache.vary_headers: 'Accept\\n' is not a valid HTTP header name",
        id="vary-name-trailing-lf",
    ),
    pytest.param(
        'headers: {source: "X-Failover-Source\\n"}\n',
        "config.yaml:6: headers.source: 'X-Failover-Source\\n' is not a valid HTTP header name",
        id="source-name-trailing-lf",
    ),
    pytest.param(
        'headers: {health: "X-Health\\r\\nSet-Cookie: a=b"}\n',
        "config.yaml:6: headers.health: 'X-Health\\r\\nSet-Cookie: a=b' is not a valid HTTP "
        "header name",
        id="health-name",
    ),
    pytest.param(
        'headers: {proxy_status: "Proxy-Status\\0"}\n',
        "config.yaml:6: headers.proxy_status: 'Proxy-Status\\x00' is not a valid HTTP header name",
        id="proxy-status-name",
    ),
    pytest.param(
        'headers: {via: "proxy\\r\\nX-Evil: 1"}\n',
        "config.yaml:6: headers.via: 'proxy\\r\\nX-Evil: 1' is not a valid Via pseudonym",
        id="via",
    ),
    pytest.param(
        'headers: {via: "my proxy"}\n',
        "config.yaml:6: headers.via: 'my proxy' is not a valid Via pseudonym",
        id="via-space",
    ),
    pytest.param(
        'buffer: {idempotency_header: "Idempotency-Key\\n"}\n',
        "config.yaml:6: buffer.idempotency_header: 'Idempotency-Key\\n' is not a valid HTTP "
        "header name",
        id="idempotency-header",
    ),
    pytest.param(
        '    match:\n      methods: ["GET\\n"]\n',
        "config.yaml:7: routes[0].match.methods: 'GET\\n' is not an HTTP method",
        id="method-trailing-lf",
    ),
]


@pytest.mark.parametrize(("extra", "error"), REFUSED)
def test_a_header_the_config_sets_is_checked_when_the_file_loads(extra, error):
    with pytest.raises(ConfigError) as refused:
        load_text(BASE + extra, source="config.yaml")
    assert str(refused.value).startswith(error)
    assert "\n" not in str(refused.value)  # one line per problem, whatever the key holds


@pytest.mark.parametrize(
    "extra",
    [
        '    default:\n      headers: {X-A: "tab\\tinside", X-B: "caf\\u00e9", X-C: ""}\n',
        '    match:\n      headers: {X-Tenant: "a b"}\n',
        'headers: {via: ""}\n',
        "headers: {via: edge-1.example}\n",
    ],
    ids=["htab-and-non-ascii", "match-space", "no-via", "via-token"],
)
def test_ordinary_values_still_load(extra):
    load_text(BASE + extra)


def test_check_refuses_it_with_file_and_line(tmp_path: Path, capsys):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(BASE + '    default:\n      headers: {X-A: "a\\r\\nX-B: c"}\n')
    assert main(["check", "--config", str(config_file)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{config_file}:7: routes[0].default.headers.X-A: ")
