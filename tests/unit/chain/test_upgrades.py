"""Whether a route takes an ``Upgrade`` request: the protocol names a header offers
(RFC 9110 section 7.8: a comma-separated list of ``name[/version]``, names compared
case-insensitively) and the refusal, decided without I/O."""

from __future__ import annotations

import pytest

from proxy.chain.upgrades import offered_protocols, upgrade_refusal

WEBSOCKET_ONLY = frozenset({"websocket"})


@pytest.mark.parametrize(
    ("header", "offered"),
    [
        ("websocket", ["websocket"]),
        ("WebSocket", ["websocket"]),
        ("  websocket  ", ["websocket"]),
        ("websocket/13", ["websocket"]),
        ("HTTP/2.0, SHTTP/1.3, IRC/6.9, RTA/x11", ["http", "shttp", "irc", "rta"]),
        ("h2c, WebSocket", ["h2c", "websocket"]),
        ("foo/2,bar", ["foo", "bar"]),
        ("websocket / 13", ["websocket"]),
    ],
)
def test_offered_protocols_are_lower_case_names_without_versions(
    header: str, offered: list[str]
) -> None:
    assert offered_protocols(header) == offered


@pytest.mark.parametrize("header", ["", "   ", ",", " , ,", "/13", ", /2 ,"])
def test_a_header_without_a_name_offers_nothing(header: str) -> None:
    assert offered_protocols(header) == []


def test_a_disabled_route_refuses_every_upgrade() -> None:
    for header in ("websocket", "h2c", ""):
        refusal = upgrade_refusal(False, None, header)
        assert refusal == "upgrades are not allowed on this route"
    assert upgrade_refusal(False, WEBSOCKET_ONLY, "websocket") is not None


@pytest.mark.parametrize("header", ["", "  ", ",,", "/13"])
def test_an_upgrade_that_names_no_protocol_is_refused(header: str) -> None:
    assert upgrade_refusal(True, None, header) == "the Upgrade header names no protocol"
    assert upgrade_refusal(True, WEBSOCKET_ONLY, header) == "the Upgrade header names no protocol"


@pytest.mark.parametrize("header", ["websocket", "h2c", "foo/2", "TLS/1.0, HTTP/1.1"])
def test_a_route_without_a_protocol_list_tunnels_any_protocol(header: str) -> None:
    assert upgrade_refusal(True, None, header) is None


@pytest.mark.parametrize(
    "header",
    ["websocket", "WebSocket", "WEBSOCKET", "websocket/13", "h2c, websocket", " x, WebSocket/13 "],
)
def test_an_allowed_protocol_anywhere_in_the_offer_is_tunnelled(header: str) -> None:
    assert upgrade_refusal(True, WEBSOCKET_ONLY, header) is None


@pytest.mark.parametrize("header", ["h2c", "websockets", "web socket", "h2c, foo/websocket"])
def test_a_protocol_the_route_does_not_list_is_refused_naming_the_allowed_ones(
    header: str,
) -> None:
    assert upgrade_refusal(True, WEBSOCKET_ONLY, header) == "this route upgrades only to websocket"


def test_the_refusal_lists_every_allowed_protocol_in_order() -> None:
    allowed = frozenset({"websocket", "h2c"})
    assert upgrade_refusal(True, allowed, "irc/6.9") == "this route upgrades only to h2c, websocket"
    assert upgrade_refusal(True, allowed, "H2C") is None
