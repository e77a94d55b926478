"""An upstream cannot speak for the proxy: its own copies of the proxy's headers, and
``Cache-Status``/``Proxy-Status`` members in the proxy's name, never reach a client;
other proxies' members do, before ours (RFC 9209/9211 lists grow hop by hop)."""

from __future__ import annotations

from multidict import CIMultiDict

from proxy.chain.headers import ForwardingRules

RULES = ForwardingRules(
    via="", forwarded=False, own=("X-Src", "X-Health"), proxy_status="X-Proxy-Status"
)


def test_the_configured_names_are_the_ones_dropped() -> None:
    upstream = CIMultiDict(
        [
            ("x-src", "cache"),
            ("X-HEALTH", "healthy"),
            ("X-Failover-Source", "not ours under this config"),
            ("X-Proxy-Status", "Failover-Proxy; error=x, edge"),
        ]
    )
    assert RULES.downstream_response(upstream, (1, 1)) == [
        ("X-Failover-Source", "not ours under this config"),
        ("X-Proxy-Status", "edge"),
    ]


def test_members_are_split_outside_quoted_strings_and_named_by_their_first_item() -> None:
    value = (
        'edge; details="a, failover-proxy; b", "failover-proxy"; hit, '
        'failover-proxy-2; hit, "other, cache"; hit'
    )
    assert RULES.downstream_response(CIMultiDict({"Cache-Status": value}), (1, 1)) == [
        (
            "Cache-Status",
            'edge; details="a, failover-proxy; b", failover-proxy-2; hit, "other, cache"; hit',
        )
    ]


def test_a_list_left_empty_is_dropped_and_one_without_us_is_kept_byte_for_byte() -> None:
    upstream = CIMultiDict(
        [("Cache-Status", "failover-proxy; hit"), ("Proxy-Status", "edge;error=y ,  cdn")]
    )
    assert RULES.downstream_response(upstream, (1, 1)) == [("Proxy-Status", "edge;error=y ,  cdn")]


def test_a_stored_answer_is_checked_again_when_served() -> None:
    stored = (
        ("X-Src", "cache"),
        ("Cache-Status", "failover-proxy; hit; stale, cdn; hit"),
        ("Content-Type", "text/plain"),
    )
    assert RULES.from_store(stored) == [
        ("Cache-Status", "cdn; hit"),
        ("Content-Type", "text/plain"),
    ]
