"""Hot reload, decided and applied: what carries over, what is refused, what needs a
restart (the plan as a pure function, and the running proxy through its answers)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from proxy.config.reload_plan import FileWatch, plan
from proxy.config.runtime import build_runtime
from proxy.config.schema import Config
from tests.conftest import route


def runtime(config: dict[str, Any], tmp_path: Path):
    return build_runtime(Config.model_validate(config), tmp_path)


def base_config(**extra: Any) -> dict[str, Any]:
    return {
        "upstreams": {
            "a": {"url": "http://127.0.0.1:1001"},
            "b": {"url": "http://127.0.0.1:1002"},
        },
        "routes": [route("r", ("a", "b"), cache={"stale_for": "1h"})],
        **extra,
    }


def test_the_plan_keeps_what_did_not_change(tmp_path: Path):
    old = base_config()
    new = base_config()
    new["upstreams"]["b"] = {"url": "http://127.0.0.1:1002", "timeouts": {"read": "2s"}}
    new["upstreams"]["c"] = {"url": "http://127.0.0.1:1003"}
    new["routes"][0]["upstreams"] = ["b", "a"]  # reordered: key rules unchanged
    change = plan(runtime(old, tmp_path), runtime(new, tmp_path))
    assert change.kept == {"a"}
    assert change.fresh == {"b", "c"}
    assert change.removed == {"b"}  # replaced: the old one is drained
    assert change.purge_routes == frozenset()
    assert change.needs_restart == ()


def test_the_plan_clears_caches_whose_key_rules_changed(tmp_path: Path):
    new = base_config()
    new["routes"][0]["cache"] = {"stale_for": "1h", "vary_headers": ["Accept-Language"]}
    assert plan(runtime(base_config(), tmp_path), runtime(new, tmp_path)).purge_routes == {"r"}
    longer = base_config()
    longer["routes"][0]["cache"] = {"stale_for": "2h"}  # not a key rule: entries still fit
    assert plan(runtime(base_config(), tmp_path), runtime(longer, tmp_path)).purge_routes == set()
    gone = base_config()
    gone["routes"][0].pop("cache")
    assert plan(runtime(base_config(), tmp_path), runtime(gone, tmp_path)).purge_routes == {"r"}


def test_listener_and_file_changes_need_a_restart(tmp_path: Path):
    new = base_config(listen={"host": "127.0.0.1", "port": 9999}, buffer={"path": "b"})
    change = plan(runtime(base_config(), tmp_path), runtime(new, tmp_path))
    assert change.needs_restart == ("listen (running on 0.0.0.0:8080)", "buffer")
    tighter = base_config(limits={"max_headers": 50}, cache={"max_size": "1MiB"})
    assert plan(runtime(base_config(), tmp_path), runtime(tighter, tmp_path)).needs_restart == (
        "limits.max_headers",
    )


def test_the_watch_sees_content_and_target_changes(tmp_path: Path):
    first, second = tmp_path / "one.yaml", tmp_path / "two.yaml"
    first.write_text("a: 1\n")
    second.write_text("a: 1\n")
    link = tmp_path / "config.yaml"
    link.symlink_to(first)
    watch = FileWatch(link)
    assert not watch.changed(watch.look())  # the first look is the baseline
    assert not watch.changed(watch.look())
    first.write_text("a: 2\n")
    assert watch.changed(watch.look())
    tmp = tmp_path / "tmp-link"
    tmp.symlink_to(second)
    os.replace(tmp, link)  # same content, another file: still a change (a ConfigMap swap)
    assert watch.changed(watch.look())
    assert not watch.changed(None)  # unreadable mid-swap: no change assumed
