"""Issue 12 item 7: the admin listener answers only to a ``Host`` that names it, before
the token is looked at, so a browser tricked by DNS rebinding (it sends the attacker's
name as ``Host``) cannot reach the API or the status page. Real requests on loopback:
aiohttp with an explicit ``Host``, and a raw socket for what a client library won't send.
"""

from __future__ import annotations

import pytest

from proxy.ops.admin_hosts import AllowedHosts, host_of

# The rule itself, for listener addresses the tests cannot bind on loopback only.


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("localhost", "localhost"),
        ("LOCALHOST:9901", "localhost"),
        ("example.com.:80", "example.com"),
        ("10.0.0.7:9901", "10.0.0.7"),
        ("[::1]:9901", "::1"),
        ("[0:0::0001]", "::1"),
        ("::1", None),  # an IPv6 address in Host is always in brackets (RFC 3986 3.2.2)
        ("", None),
        ("a b", None),
        ("[zz::1]", None),
        ("user@host", None),
        ("host:port", None),
    ],
)
def test_host_of(value, host):
    assert host_of(value) == host


def test_a_wildcard_listener_answers_any_ip_address_but_only_listed_names():
    allowed = AllowedHosts.build("0.0.0.0", ["admin.prod.svc"])
    for host in ("10.1.2.3", "127.0.0.1", "[::1]", "[fd00::7]", "localhost", "admin.prod.svc"):
        assert allowed.allows(host_of(host) or ""), host
    for host in ("evil.example", "0.0.0.0.evil.example", "10.1.2.3.nip.io"):
        assert not allowed.allows(host_of(host) or ""), host
    assert AllowedHosts.build("::", []).allows("10.9.8.7")


def test_a_loopback_listener_answers_loopback_addresses_only():
    allowed = AllowedHosts.build("127.0.0.1", [])
    assert allowed.allows("127.0.0.1") and allowed.allows("::1") and allowed.allows("localhost")
    assert not allowed.allows("10.0.0.7")
    assert not allowed.allows("evil.example")


def test_a_listener_on_one_address_answers_that_address_and_localhost():
    allowed = AllowedHosts.build("10.0.0.7", [])
    assert allowed.allows("10.0.0.7") and allowed.allows("localhost")
    assert not allowed.allows("10.0.0.8")
    assert not allowed.allows("127.0.0.1")
    named = AllowedHosts.build("admin.internal", [])
    assert named.allows("admin.internal") and not named.allows("evil.example")
