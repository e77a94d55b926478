""" "Never show empty data": validation rules, then the chain they drive, end to end."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from proxy.chain.validate import Validator, parse_json_path
from tests.conftest import route

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


def json_answer(body: str, content_type: str = "application/json"):
    return lambda r: asyncio.sleep(0, web.Response(body=body.encode(), content_type=content_type))


VALIDATE = {"status": [200], "content_type": "application/json", "json_nonempty": "$.drivers"}


@pytest.mark.parametrize(
    "bad",
    [
        json_answer('{"drivers": []}'),
        json_answer('{"other": 1}'),
        json_answer("<html>Service temporarily unavailable</html>", "text/html"),
    ],
)
async def test_an_invalid_200_fails_over_to_the_secondary(bad, http_upstream, start_proxy, client):
    primary = await http_upstream(bad)
    secondary = await http_upstream(json_answer('{"drivers": [{"id": 7}]}'))
    config = {
        "upstreams": {"primary": {"url": primary.url}, "secondary": {"url": secondary.url}},
        "routes": [route(validate=VALIDATE)],
    }
    proxy = await start_proxy(config)
    async with client.get(proxy + "/drivers") as response:
        assert await response.json() == {"drivers": [{"id": 7}]}
        assert response.headers["X-Failover-Source"] == "secondary"
        assert response.headers["X-Failover-Health"] == "degraded"
        assert 'details="invalid_response"' in response.headers["Proxy-Status"]
        assert "received-status=200" in response.headers["Proxy-Status"]


async def test_when_every_answer_is_empty_the_default_is_served(http_upstream, start_proxy, client):
    empty = await http_upstream(json_answer('{"drivers": []}'))
    config = {
        "upstreams": {"primary": {"url": empty.url}, "secondary": {"url": empty.url}},
        "routes": [route(validate=VALIDATE, default={"body": '{"drivers": ["cached"]}'})],
    }
    proxy = await start_proxy(config)
    async with client.get(proxy + "/drivers") as response:
        assert response.headers["X-Failover-Source"] == "default"
        assert await response.text() == '{"drivers": ["cached"]}'


async def test_an_invalid_answer_is_never_passed_through(http_upstream, start_proxy, client):
    empty = await http_upstream(json_answer('{"drivers": []}'))
    config = {
        "upstreams": {"primary": {"url": empty.url}},
        "routes": [route(upstreams=("primary",), validate=VALIDATE)],
    }
    proxy = await start_proxy(config)
    async with client.get(proxy + "/drivers") as response:
        assert response.status == 503
        assert response.headers["X-Failover-Source"] == "none"
        report = await response.json()
        assert report["tried"] == [
            {"upstream": "primary", "failure": "invalid_response", "status": 200}
        ]


async def test_a_body_too_large_to_check_fails_rather_than_passing_unchecked(
    http_upstream, start_proxy, client
):
    big = await http_upstream(json_answer('{"drivers": [' + "1," * 5000 + "1]}"))
    config = {
        "upstreams": {"primary": {"url": big.url}},
        "routes": [route(upstreams=("primary",), validate={**VALIDATE, "max_body": "1KiB"})],
    }
    proxy = await start_proxy(config)
    async with client.get(proxy + "/drivers") as response:
        assert response.status == 503
        assert 'details="invalid_response"' in response.headers["Proxy-Status"]
