"""chain.routing: one canonical target, matched and forwarded; the first route that fits wins."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from proxy.chain.routing import BadTarget, RouteMatcher, Router, normalise_target
from proxy.config.schema import Match


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("/a/../admin", "dot segments are not allowed in the path"),
        ("/a/./b", "dot segments are not allowed in the path"),
        ("/..", "dot segments are not allowed in the path"),
        ("/static/.", "dot segments are not allowed in the path"),
        ("http://evil.example/../x", "dot segments are not allowed in the path"),
        ("/%2e%2e/admin", "encoded b'.' in the path"),
        ("/%2E/admin", "encoded b'.' in the path"),
        ("/a%2fb", "encoded b'/' in the path"),
        ("/a%2Fb", "encoded b'/' in the path"),
        ("/a%5cb", "encoded b'\\\\' in the path"),
        ("/a%00b", "encoded b'\\x00' in the path"),
        ("/a\\b", "the path has characters that must be percent-encoded"),
        ("/a b", "the path has characters that must be percent-encoded"),
        ("/a\tb", "the path has characters that must be percent-encoded"),
        ("/a\x01b", "the path has characters that must be percent-encoded"),
        ("/a\x7fb", "the path has characters that must be percent-encoded"),
        ("/a%zz", "the path has a malformed percent escape"),
        ("/a%4", "the path has a malformed percent escape"),
        ("/a%", "the path has a malformed percent escape"),
        ("/a?b c", "the query has characters that must be percent-encoded"),
        ("/a?b\x00", "the query has characters that must be percent-encoded"),
        ("*", "the request target must be a path or an http(s) URL"),
        ("ftp://evil.example/x", "the request target must be a path or an http(s) URL"),
    ],
)
def test_a_target_that_could_escape_or_confuse_is_refused(target, reason):
    with pytest.raises(BadTarget) as refused:
        normalise_target(target)
    assert str(refused.value) == reason


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/%61dmin", "/admin", ""),
        ("/%41%7a%30%2d%5f%7e", "/Az0-_~", ""),
        ("/caf%c3%a9", "/caf%C3%A9", ""),
        ("/a%2a?x=%2f", "/a%2A", "x=%2f"),
        ("/100%25", "/100%25", ""),
        ("/a..b/.c/...", "/a..b/.c/...", ""),
        ("/search?q=../etc", "/search", "q=../etc"),
    ],
)
def test_a_safe_target_is_put_in_one_canonical_form(target, path, query):
    assert normalise_target(target) == (path, query)


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("http://evil.example/x?y", "/x", "y"),
        ("HTTPS://evil.example:444/a/b", "/a/b", ""),
        ("http://evil.example", "/", ""),
        ("http://evil.example?y=1", "/", "y=1"),
    ],
)
def test_an_absolute_form_target_keeps_path_and_query_and_ignores_the_authority(
    target, path, query
):
    assert normalise_target(target) == (path, query)


def router(*matches: Match) -> Router[str]:
    return Router([(RouteMatcher.compile(m), f"route{i}") for i, m in enumerate(matches)])


def find(table: Router[str], method="GET", path="/", host="proxy.local", **headers):
    return table.find(method, path, host, CIMultiDict(headers))


def test_the_first_route_that_matches_wins_in_file_order():
    table = router(Match(path_prefix="/api/users"), Match(path_prefix="/api"), Match())
    assert find(table, path="/api/users/7") == "route0"
    assert find(table, path="/api/orders") == "route1"
    assert find(table, path="/") == "route2"


def test_a_catch_all_listed_first_shadows_every_later_route():
    table = router(Match(), Match(path="/admin"))
    assert find(table, path="/admin") == "route0"


def test_methods_are_matched_as_listed_in_any_case():
    table = router(Match(methods=["get", "head"]), Match(methods=["POST"]))
    assert find(table, "GET") == "route0"
    assert find(table, "HEAD") == "route0"
    assert find(table, "POST") == "route1"
    assert find(table, "DELETE") is None


def test_an_exact_path_matches_only_itself():
    table = router(Match(path="/healthz"))
    assert find(table, path="/healthz") == "route0"
    assert find(table, path="/healthz/") is None
    assert find(table, path="/healthzz") is None


def test_a_prefix_matches_everything_under_it():
    table = router(Match(path_prefix="/api/"))
    assert find(table, path="/api/") == "route0"
    assert find(table, path="/api/v1/x") == "route0"
    assert find(table, path="/api") is None


def test_a_regex_matches_when_it_is_found_in_the_path():
    table = router(Match(path_regex=r"^/users/\d+$"))
    assert find(table, path="/users/42") == "route0"
    assert find(table, path="/users/me") is None


def test_a_canonical_path_cannot_slip_past_an_exact_route():
    table = router(Match(path="/admin", methods=["POST"]), Match())
    path, _ = normalise_target("/%61dmin")
    assert find(table, "GET", path) == "route1"
    assert find(table, "POST", path) == "route0"


def test_host_is_matched_without_its_port_and_in_any_case():
    table = router(Match(host="API.example.com"))
    assert find(table, host="api.example.com") == "route0"
    assert find(table, host="Api.Example.Com:8080") == "route0"
    assert find(table, host="web.example.com") is None


def test_a_wildcard_host_matches_subdomains_but_not_the_domain_itself():
    table = router(Match(host="*.example.com"))
    assert find(table, host="a.example.com") == "route0"
    assert find(table, host="a.b.example.com:443") == "route0"
    assert find(table, host="example.com") is None
    assert find(table, host="badexample.com") is None


def test_an_ipv6_host_keeps_its_brackets_when_the_port_is_removed():
    table = router(Match(host="[::1]"))
    assert find(table, host="[::1]:8080") == "route0"


def test_header_rules_need_every_named_header_with_the_exact_value():
    table = router(Match(headers={"X-Canary": "yes", "X-Tenant": "a"}), Match())
    assert find(table, **{"x-canary": "yes", "x-tenant": "a"}) == "route0"
    assert find(table, **{"X-Canary": "YES", "X-Tenant": "a"}) == "route1"
    assert find(table, **{"X-Canary": "yes"}) == "route1"


def test_no_matching_route_gives_none():
    table = router(Match(path_prefix="/api", methods=["GET"]), Match(host="admin.local"))
    assert find(table, "POST", "/api/x") is None
    assert find(table, "GET", "/web", host="proxy.local") is None
    assert router().find("GET", "/", "h", {}) is None
