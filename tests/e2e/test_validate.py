""" "Never show empty data": validation rules, then the chain they drive, end to end."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tests.conftest import route


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
