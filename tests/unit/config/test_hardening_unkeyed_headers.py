"""Unkeyed inputs do not reach a cached route's upstream (issue 12, item 3): headers that
frameworks read as the host, scheme, port, path or method, but that are not in the
cache key, would let one client choose what everyone is served from the cache."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from proxy.config.schema import Config
from tests.conftest import route


@pytest.mark.parametrize("name", ["X-Forwarded-Prefix", "Accept", "X Host", "x-forwarded-hots"])
def test_keep_headers_lists_only_what_would_be_stripped(name):
    config = {
        "upstreams": {"primary": {"url": "http://127.0.0.1:1"}},
        "routes": [
            route(upstreams=("primary",), cache={"stale_for": "1h", "keep_headers": [name]})
        ],
    }
    with pytest.raises(ValidationError, match="not stripped on cached routes"):
        Config.model_validate(config)
