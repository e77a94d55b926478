"""proxy.chain.headers: what crosses the proxy in each direction, and what it adds."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from proxy.chain.errors import Failure
from proxy.chain.headers import FailedHop, ForwardingRules, parse_retry_after, proxy_status

RULES = ForwardingRules(via="failover-proxy", forwarded=True)
HOP_BY_HOP = [
    ("Connection", "keep-alive"),
    ("Keep-Alive", "timeout=5"),
    ("Proxy-Connection", "keep-alive"),
    ("TE", "trailers"),
    ("Trailer", "X-Checksum"),
    ("Transfer-Encoding", "chunked"),
    ("Upgrade", "websocket"),
    ("Proxy-Authenticate", "Basic"),
    ("Proxy-Authorization", "Basic c2VjcmV0"),
]


def up(*headers: tuple[str, str], client_ip="10.0.0.9", preserve_host=False, rules=RULES):
    """What the upstream receives, as a multidict (the rules build a list for aiohttp)."""
    sent = rules.upstream_request(
        CIMultiDict(headers), version=(1, 1), client_ip=client_ip, preserve_host=preserve_host
    )
    return CIMultiDict(sent)


def down(*headers: tuple[str, str], version=(1, 1), rules=RULES):
    return CIMultiDict(rules.downstream_response(CIMultiDict(headers), version))


def test_hop_by_hop_headers_are_not_forwarded_upstream():
    sent = up(*HOP_BY_HOP, ("Accept", "text/html"))
    assert [name for name in sent if name.lower() in {n.lower() for n, _ in HOP_BY_HOP}] == []
    assert sent["Accept"] == "text/html"


def test_hop_by_hop_headers_are_not_forwarded_downstream():
    got = down(*HOP_BY_HOP, ("Content-Type", "text/html"))
    assert dict(got) == {"Content-Type": "text/html", "Via": "1.1 failover-proxy"}


def test_every_name_listed_in_connection_is_stripped_both_ways():
    headers = (("Connection", "close, X-Internal ,x-debug"), ("X-Internal", "1"), ("X-Debug", "2"))
    assert "X-Internal" not in up(*headers) and "X-Debug" not in up(*headers)
    assert "X-Internal" not in down(*headers) and "X-Debug" not in down(*headers)


def test_names_in_a_second_connection_header_line_are_stripped_too():
    headers = (("Connection", "keep-alive"), ("Connection", "X-Internal"), ("X-Internal", "1"))
    assert "X-Internal" not in up(*headers)
    assert "X-Internal" not in down(*headers)


def test_framing_host_and_expect_are_not_forwarded_upstream():
    sent = up(
        ("Content-Length", "5"),
        ("Transfer-Encoding", "chunked"),
        ("Host", "shop.example"),
        ("Expect", "100-continue"),
        ("Content-Type", "application/json"),
    )
    assert "Content-Length" not in sent
    assert "Transfer-Encoding" not in sent
    assert "Host" not in sent
    assert "Expect" not in sent
    assert sent["Content-Type"] == "application/json"


def test_content_length_from_upstream_is_not_relayed_since_the_proxy_reframes():
    assert "Content-Length" not in down(("Content-Length", "12"))


def test_every_set_cookie_from_upstream_reaches_the_client_in_order():
    got = down(("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; HttpOnly"))
    assert got.getall("Set-Cookie") == ["a=1; Path=/", "b=2; HttpOnly"]


def test_x_forwarded_headers_tell_the_upstream_who_asked_and_how():
    sent = up(("Host", "shop.example:8080"), ("X-Forwarded-For", "203.0.113.7"))
    assert sent["X-Forwarded-For"] == "203.0.113.7, 10.0.0.9"
    assert sent["X-Forwarded-Proto"] == "http"
    assert sent["X-Forwarded-Host"] == "shop.example:8080"


def test_x_forwarded_for_starts_with_the_client_when_absent():
    assert up(client_ip="192.0.2.1")["X-Forwarded-For"] == "192.0.2.1"
    assert "X-Forwarded-For" not in up(client_ip=None)


def test_x_forwarded_for_keeps_every_hop_of_a_repeated_header():
    sent = up(("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-For", "198.51.100.2"))
    assert sent.getall("X-Forwarded-For") == ["203.0.113.7, 198.51.100.2, 10.0.0.9"]


def test_via_keeps_every_hop_of_a_repeated_header():
    sent = up(("Via", "1.0 edge"), ("Via", "1.1 lb"))
    assert sent.getall("Via") == ["1.0 edge, 1.1 lb, 1.1 failover-proxy"]


def test_forwarded_false_adds_no_x_forwarded_headers():
    quiet = ForwardingRules(via="failover-proxy", forwarded=False)
    sent = up(("Host", "shop.example"), rules=quiet)
    assert [name for name in sent if name.lower().startswith("x-forwarded")] == []


def test_via_is_appended_with_the_protocol_version_in_both_directions():
    assert up(("Via", "1.0 edge"))["Via"] == "1.0 edge, 1.1 failover-proxy"
    got = down(("Via", "1.1 app"), version=(1, 0))
    assert got["Via"] == "1.1 app, 1.0 failover-proxy"


def test_an_empty_via_pseudonym_sends_no_via():
    silent = ForwardingRules(via="", forwarded=True)
    assert "Via" not in up(rules=silent)
    assert "Via" not in down(rules=silent)


def test_preserve_host_forwards_the_clients_host():
    assert up(("Host", "shop.example"), preserve_host=True)["Host"] == "shop.example"
    assert "Host" not in up(("Host", "shop.example"), preserve_host=False)


def test_proxy_status_has_one_member_per_failed_try_in_order():
    hops = [
        FailedHop("primary", Failure.CONNECTION_REFUSED),
        FailedHop("backup", Failure.HTTP_5XX, 503),
    ]
    assert proxy_status(hops) == (
        'failover-proxy; error=connection_refused; next-hop=primary; details="connection_refused", '
        'failover-proxy; received-status=503; next-hop=backup; details="http_5xx"'
    )


@pytest.mark.parametrize(
    ("failure", "error_type"),
    [
        (Failure.CONNECTION_REFUSED, "connection_refused"),
        (Failure.CONNECTION_RESET, "connection_terminated"),
        (Failure.CONNECTION_ERROR, "destination_unavailable"),
        (Failure.DNS_ERROR, "dns_error"),
        (Failure.CONNECT_TIMEOUT, "connection_timeout"),
        (Failure.READ_TIMEOUT, "http_response_timeout"),
        (Failure.TLS_ERROR, "tls_protocol_error"),
        (Failure.BODY_TRUNCATED, "http_response_incomplete"),
        (Failure.PROTOCOL_ERROR, "http_protocol_error"),
        (Failure.DEADLINE_EXCEEDED, "http_response_timeout"),
    ],
)
def test_proxy_status_uses_the_rfc_9209_error_type(failure, error_type):
    assert proxy_status([FailedHop("primary", failure)]) == (
        f'failover-proxy; error={error_type}; next-hop=primary; details="{failure.value}"'
    )


def test_a_status_failure_reports_the_received_status_and_no_error_type():
    assert proxy_status([FailedHop("primary", Failure.HTTP_429, 429)]) == (
        'failover-proxy; received-status=429; next-hop=primary; details="http_429"'
    )


def test_a_next_hop_that_is_not_an_sf_token_is_quoted():
    assert 'next-hop="2nd"' in proxy_status([FailedHop("2nd", Failure.DNS_ERROR)])


NOW = 1_445_412_000.0  # Wed, 21 Oct 2015 07:20:00 GMT


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("0", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 480.0),
        ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(value, seconds):
    assert parse_retry_after(value, NOW) == seconds


@pytest.mark.parametrize(
    "value",
    [None, "", "soon", "-5", "1.5", "1e3", "Wed, 21 Oct 2015 07:28:00", "Mon, 99 Foo", "²"],
)
def test_unreadable_retry_after_is_ignored(value):
    assert parse_retry_after(value, NOW) is None
