"""Last known good means good (issue 12, item 2): only good answers become the stored
copy, and nothing but a newer good answer, a successful write to the same URI or a
purge takes it away. Attacked the way a client would: through a real upstream it can
make fail for one request, before an outage."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from proxy.cache.rules import CachePolicy, cache_key, uri_key
from proxy.cache.store import Entry, Store
from proxy.config.schema import Config
from tests.conftest import FakeClock, route


def test_invalidating_a_uri_drops_every_variant_and_nothing_else():
    policy = CachePolicy(
        frozenset({"GET", "HEAD"}), frozenset({200}), ("accept",), frozenset(), False
    )
    store = Store(max_bytes=10**6, max_entries=10, clock=FakeClock())

    def key(method: str, target: str, accept: str, route: str = "r") -> str:
        path, _, query = target.partition("?")
        return cache_key(route, method, "Example.com", path, query, {"accept": accept}, policy)

    kept = [key("GET", "/a?x=1", "text/html"), key("HEAD", "/a?x=1", "*/*")]
    others = [
        key("GET", "/a?x=2", "*/*"),
        key("GET", "/ab", "*/*"),
        key("GET", "/a?x=1", "*/*", "s"),
    ]
    for k in kept + others:
        store.put(k, Entry("r", 200, "OK", (), b"{}", 0.0))
    assert store.invalidate(uri_key("r", "example.com", "/a", "x=1", policy)) == 2
    assert sorted(k for k, _ in store.items()) == sorted(others)
    assert store.invalidate(uri_key("r", "example.com", "/a", "x=1", policy)) == 0


def test_the_uri_index_forgets_evicted_entries():
    policy = CachePolicy(frozenset({"GET"}), frozenset({200}), (), frozenset(), False)
    store = Store(max_bytes=10**6, max_entries=2, clock=FakeClock())
    for n in range(100):
        store.put(
            cache_key("r", "GET", "h", f"/{n}", "", {}, policy), Entry("r", 200, None, (), b"", 0.0)
        )
    assert len(store) == 2
    assert len(store._by_uri) == 2


@pytest.mark.parametrize("statuses", [[100], [304], [206], [600], [True]])
def test_statuses_are_whole_final_answers(statuses):
    config = {
        "upstreams": {"primary": {"url": "http://127.0.0.1:1"}},
        "routes": [route(upstreams=("primary",), cache={"stale_for": "1h", "statuses": statuses})],
    }
    with pytest.raises(ValidationError):
        Config.model_validate(config)
