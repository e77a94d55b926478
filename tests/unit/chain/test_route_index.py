"""chain.routing: the Router's index finds exactly the route a scan in file order finds."""

from __future__ import annotations

import random
from collections.abc import Mapping

import pytest
from multidict import CIMultiDict

from proxy.chain.routing import RouteMatcher, Router
from proxy.config.schema import Match


def scan(table: list[tuple[RouteMatcher, str]], method, path, host, headers) -> str | None:
    """The reference: the first route in file order whose whole rule holds."""
    for matcher, route in table:
        if matcher.matches(method, path, host, headers):
            return route
    return None


def compiled(*matches: Match) -> list[tuple[RouteMatcher, str]]:
    return [(RouteMatcher.compile(m), f"route{i}") for i, m in enumerate(matches)]


def find(table: Router[str], method="GET", path="/", host="proxy.local", **headers):
    return table.find(method, path, host, CIMultiDict(headers))


# Few, overlapping pieces, so that prefixes nest, split segments (`/ap` of `/api`) and
# collide with exact paths and regexes.
SEGMENTS = ("a", "ap", "api", "api2", "v1", "x", "")
REGEXES = (r"^/api/v\d", r"x$", r"^/a", r"/v1/", r"^/$", r"2")
METHODS = ("GET", "HEAD", "POST", "DELETE")
HOSTS = ("api.example.com", "*.example.com", "[::1]", "web.local")
REQUEST_HOSTS = ("api.example.com", "API.example.com:8080", "a.b.example.com", "example.com")
HEADERS = (("X-Canary", "yes"), ("X-Tenant", "a"), ("X-Tenant", "b"))


def random_path(rng: random.Random) -> str:
    path = "/" + "/".join(rng.choice(SEGMENTS) for _ in range(rng.randint(0, 3)))
    return path + "/" if rng.random() < 0.2 else path


def random_prefix(rng: random.Random) -> str:
    path = random_path(rng)
    return path[: rng.randint(1, len(path))]  # cut anywhere, not only at a segment


def random_match(rng: random.Random) -> Match:
    rules: dict[str, object] = {}
    kind = rng.choice(("path", "path_prefix", "path_prefix", "path_regex", None))
    if kind == "path":
        rules["path"] = random_path(rng)
    elif kind == "path_prefix":
        rules["path_prefix"] = random_prefix(rng)
    elif kind == "path_regex":
        rules["path_regex"] = rng.choice(REGEXES)
    if rng.random() < 0.35:
        rules["methods"] = rng.sample(METHODS, rng.randint(1, 2))
    if rng.random() < 0.2:
        rules["host"] = rng.choice(HOSTS)
    if rng.random() < 0.25:
        rules["headers"] = dict(rng.sample(HEADERS, rng.randint(1, 2)))
    return Match(**rules)  # type: ignore[arg-type]


def random_request(rng: random.Random) -> tuple[str, str, str, Mapping[str, str]]:
    headers = CIMultiDict(rng.sample(HEADERS, rng.randint(0, 2)))
    return rng.choice(METHODS), random_path(rng), rng.choice(REQUEST_HOSTS), headers


@pytest.mark.parametrize("seed", range(300))
def test_the_index_finds_the_route_the_scan_in_file_order_finds(seed):
    rng = random.Random(seed)
    table = compiled(*(random_match(rng) for _ in range(rng.randint(0, 40))))
    router = Router(table)
    for _ in range(60):
        request = random_request(rng)
        assert router.find(*request) == scan(table, *request), (request, table)


@pytest.mark.parametrize("seed", range(20))
def test_a_reordered_route_keeps_its_place_in_the_index(seed):
    rng = random.Random(seed)
    table = compiled(*(random_match(rng) for _ in range(rng.randint(1, 30))))
    old = table[rng.randrange(len(table))][1]
    router = Router(table).replacing(old, "reordered")
    swapped = [(m, "reordered" if r == old else r) for m, r in table]
    for _ in range(60):
        request = random_request(rng)
        assert router.find(*request) == scan(swapped, *request)


def test_of_overlapping_prefixes_the_first_listed_wins_not_the_longest():
    router = Router(compiled(Match(path_prefix="/api"), Match(path_prefix="/api/users")))
    assert find(router, path="/api/users/7") == "route0"
    router = Router(compiled(Match(path_prefix="/api/users"), Match(path_prefix="/api")))
    assert find(router, path="/api/users/7") == "route0"
    assert find(router, path="/api/orders") == "route1"


def test_a_prefix_matches_by_characters_not_by_segments():
    router = Router(compiled(Match(path_prefix="/ap"), Match(path_prefix="/")))
    assert find(router, path="/api/x") == "route0"
    assert find(router, path="/ap") == "route0"
    assert find(router, path="/a") == "route1"


def test_the_same_prefix_with_different_methods_goes_by_method_then_order():
    router = Router(
        compiled(
            Match(path_prefix="/api", methods=["POST"]),
            Match(path_prefix="/api", methods=["GET", "POST"]),
            Match(path_prefix="/api"),
        )
    )
    assert find(router, "POST", "/api/x") == "route0"
    assert find(router, "GET", "/api/x") == "route1"
    assert find(router, "DELETE", "/api/x") == "route2"
    assert find(router, "DELETE", "/web") is None


def test_a_regex_listed_before_a_matching_prefix_wins():
    router = Router(compiled(Match(path_regex=r"\.css$"), Match(path_prefix="/static/")))
    assert find(router, path="/static/site.css") == "route0"
    assert find(router, path="/static/site.js") == "route1"


def test_a_header_only_route_listed_before_an_exact_one_wins():
    router = Router(compiled(Match(headers={"X-Canary": "yes"}), Match(path="/healthz")))
    assert find(router, path="/healthz", **{"X-Canary": "yes"}) == "route0"
    assert find(router, path="/healthz") == "route1"


def test_an_exact_route_listed_before_a_prefix_and_a_host_route_wins():
    router = Router(
        compiled(Match(path="/api"), Match(path_prefix="/"), Match(host="api.example.com"))
    )
    assert find(router, path="/api", host="api.example.com") == "route0"
    assert find(router, path="/api/", host="api.example.com") == "route1"


def test_a_route_with_no_rule_shadows_every_later_route():
    router = Router(compiled(Match(path="/a"), Match(), Match(path="/b"), Match(path_prefix="/")))
    assert find(router, path="/a") == "route0"
    assert find(router, path="/b") == "route1"
    assert find(router, "POST", "/anything") == "route1"


def test_the_same_exact_path_twice_is_tried_in_order():
    router = Router(compiled(Match(path="/x", host="web.local"), Match(path="/x", methods=["GET"])))
    assert find(router, path="/x", host="web.local:80") == "route0"
    assert find(router, path="/x") == "route1"
    assert find(router, "POST", "/x") is None


def test_ten_thousand_prefix_routes_are_not_scanned(monkeypatch):
    """The last of 10,000 routes is found by trying a handful, not all that come first."""
    router = Router(
        compiled(*(Match(path_prefix=f"/r{i:05d}/", methods=["GET"]) for i in range(10_000)))
    )
    tried = 0
    matches = RouteMatcher.matches

    def counting(self, *args):
        nonlocal tried
        tried += 1
        return matches(self, *args)

    monkeypatch.setattr(RouteMatcher, "matches", counting)
    assert find(router, path="/r09999/small") == "route9999"
    assert find(router, "POST", "/r09999/small") is None
    assert tried == 2
