"""The process: start-up checks, the bundled config, and a graceful drain."""

from __future__ import annotations

import pytest

from proxy.http import server
from proxy.http.server import StartupError, require_strict_parser


def test_the_strict_c_parser_is_in_use():
    require_strict_parser()


def test_refuses_to_start_on_the_pure_python_parser(monkeypatch):
    from aiohttp import http_parser

    monkeypatch.setattr(server.web_protocol, "HttpRequestParser", http_parser.HttpRequestParserPy)
    with pytest.raises(StartupError, match="pure-Python"):
        require_strict_parser()


def test_refuses_an_aiohttp_older_than_the_pin(monkeypatch):
    monkeypatch.setattr(server.aiohttp, "__version__", "3.8.6")
    with pytest.raises(StartupError, match="too old"):
        require_strict_parser()
