""" "Never show empty data": validation rules, then the chain they drive, end to end."""

from __future__ import annotations

import pytest

from proxy.chain.validate import Validator, parse_json_path

DRIVERS = Validator(
    statuses=frozenset({200}),
    content_type="application/json",
    min_size=2,
    json_path=parse_json_path("$.drivers"),
    json_path_text="$.drivers",
    max_body=1024,
)


@pytest.mark.parametrize(
    ("status", "content_type", "body", "problem"),
    [
        (200, "application/json; charset=utf-8", b'{"drivers": [1]}', None),
        (200, "application/json", b'{"drivers": []}', "$.drivers is missing or empty"),
        (200, "application/json", b'{"cars": [1]}', "$.drivers is missing or empty"),
        (200, "application/json", b'{"drivers": null}', "$.drivers is missing or empty"),
        (200, "text/html", b"<html>error</html>", "content type text/html is not application/json"),
        (200, "application/json", b"{", "body of 1 bytes is smaller than 2"),
        (200, "application/json", b"not json", "body is not JSON"),
        (204, "application/json", b"", "status 204 is not allowed"),
    ],
)
def test_what_a_good_answer_is(status, content_type, body, problem):
    assert DRIVERS.problem(status, content_type, body) == problem


def test_json_paths_take_keys_and_list_indexes():
    assert parse_json_path("$.data.items[0].id") == ("data", "items", 0, "id")
    with pytest.raises(ValueError, match="starts with"):
        parse_json_path("data.items")
    with pytest.raises(ValueError, match="cannot read"):
        parse_json_path("$.data[x]")
