"""Last known good means good (issue 12, item 2): only good answers become the stored
copy, and nothing but a newer good answer, a successful write to the same URI or a
purge takes it away. Attacked the way a client would: through a real upstream it can
make fail for one request, before an outage."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from proxy.cache.file import CacheFile, Row
from proxy.cache.freshness import NO_LIMITS
from proxy.cache.rules import CachePolicy, cache_key
from tests.conftest import FakeClock, route


class Origin:
    """An application behind the proxy: ``GET`` answers ``{"n": <count>}``; a request
    with a long header gets 431, as a stricter origin would; writes get ``write_status``;
    ``down`` makes every request a 503 (the outage)."""

    def __init__(self) -> None:
        self.served = 0
        self.down = False
        self.status = 200
        self.headers: dict[str, str] = {}
        self.write_status = 201

    async def __call__(self, request: web.Request) -> web.Response:
        if self.down:
            return web.Response(status=503, text="down")
        if len(request.headers.get("X-Padding", "")) > 1000:
            return web.Response(status=431, text="Request Header Fields Too Large")
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=self.write_status, text="written")
        self.served += 1
        return web.json_response({"n": self.served}, status=self.status, headers=self.headers)


async def start(http_upstream, start_proxy, origin: Origin, **cache: Any) -> str:
    upstream = await http_upstream(origin)
    config = {
        "upstreams": {"primary": {"url": upstream.url, "circuit_breaker": {"enabled": False}}},
        "routes": [route(upstreams=("primary",), cache={"stale_for": "1h", **cache})],
    }
    return await start_proxy(config, clock=FakeClock())


async def get(client, url: str, **headers: str) -> tuple[int, str, dict[str, str]]:
    async with client.get(url, headers=headers) as response:
        return response.status, await response.text(), dict(response.headers)


async def test_a_404_is_not_kept_as_the_last_good_answer(http_upstream, start_proxy, client):
    origin = Origin()
    origin.status = 404  # python3 -m http.server as a backup that lacks the path
    proxy = await start(http_upstream, start_proxy, origin)
    status, _, headers = await get(client, proxy + "/api/drivers")
    assert (status, headers["Cache-Status"]) == (
        404,
        "failover-proxy; fwd=uri-miss; fwd-status=404",
    )
    origin.down = True
    status, _, headers = await get(client, proxy + "/api/drivers")
    assert (status, headers["X-Failover-Source"]) == (503, "primary")


async def test_a_route_may_list_404_as_a_status_to_keep(http_upstream, start_proxy, client):
    origin = Origin()
    origin.status = 404
    proxy = await start(http_upstream, start_proxy, origin, statuses=[200, 404])
    status, _, headers = await get(client, proxy + "/gone")
    assert headers["Cache-Status"].endswith("fwd-status=404; stored")
    origin.down = True
    status, body, headers = await get(client, proxy + "/gone")
    assert (status, body, headers["X-Failover-Source"]) == (404, '{"n": 1}', "cache")


def _padded() -> dict[str, str]:
    return {"X-Padding": "a" * 2000}  # well under the proxy's 8 KiB, over the origin's


@pytest.mark.parametrize(
    "spoil",
    ["431 from a long header", "no-store", "set-cookie", "a status not kept", "500"],
)
async def test_one_bad_answer_does_not_evict_the_good_copy(
    spoil, http_upstream, start_proxy, client
):
    origin = Origin()
    proxy = await start(http_upstream, start_proxy, origin)
    status, body, _ = await get(client, proxy + "/api/drivers")
    assert (status, body) == (200, '{"n": 1}')
    # the attacker's one request, just before the outage
    if spoil == "431 from a long header":
        assert (await get(client, proxy + "/api/drivers", **_padded()))[0] == 431
    else:
        if spoil == "no-store":
            origin.headers = {"Cache-Control": "no-store"}
        elif spoil == "set-cookie":
            origin.headers = {"Set-Cookie": "session=attacker"}
        elif spoil == "a status not kept":
            origin.status = 404
        else:
            origin.status = 500  # a failed try: the stored copy answers it
        status, _, headers = await get(client, proxy + "/api/drivers")
        assert "stored" not in headers.get("Cache-Status", "")
    origin.down = True
    status, body, headers = await get(client, proxy + "/api/drivers")
    assert (status, body, headers["X-Failover-Source"]) == (200, '{"n": 1}', "cache")


async def test_a_newer_good_answer_replaces_the_copy(http_upstream, start_proxy, client):
    origin = Origin()
    proxy = await start(http_upstream, start_proxy, origin)
    await get(client, proxy + "/api/drivers")
    origin.headers = {"Cache-Control": "no-store"}
    await get(client, proxy + "/api/drivers")  # n=2, not kept
    origin.headers = {}
    await get(client, proxy + "/api/drivers")  # n=3, kept
    origin.down = True
    assert (await get(client, proxy + "/api/drivers"))[1] == '{"n": 3}'


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_a_successful_write_drops_the_copies_of_its_uri(
    method, http_upstream, start_proxy, client
):
    origin = Origin()
    proxy = await start(http_upstream, start_proxy, origin)
    await get(client, proxy + "/api/drivers?a=1&b=2")
    async with client.head(proxy + "/api/drivers?a=1&b=2") as response:
        assert response.headers["Cache-Status"].endswith("stored")
    await get(client, proxy + "/api/other")
    async with client.request(method, proxy + "/api/drivers?b=2&a=1", data=b"{}") as response:
        assert response.status == 201
    origin.down = True
    status, _, headers = await get(client, proxy + "/api/drivers?a=1&b=2")
    assert (status, headers["X-Failover-Source"]) == (503, "primary")
    async with client.head(proxy + "/api/drivers?a=1&b=2") as response:
        assert response.status == 503
    status, body, headers = await get(client, proxy + "/api/other")
    assert (status, body, headers["X-Failover-Source"]) == (200, '{"n": 3}', "cache")


@pytest.mark.parametrize("write_status", [400, 409, 500, 503])
async def test_a_failed_write_leaves_the_copy(write_status, http_upstream, start_proxy, client):
    origin = Origin()
    origin.write_status = write_status
    proxy = await start(http_upstream, start_proxy, origin)
    await get(client, proxy + "/api/drivers")
    async with client.post(proxy + "/api/drivers", data=b"{}") as response:
        assert response.status == write_status
    origin.down = True
    status, body, headers = await get(client, proxy + "/api/drivers")
    assert (status, body, headers["X-Failover-Source"]) == (200, '{"n": 1}', "cache")


async def test_a_404_kept_on_disk_by_an_older_version_is_not_served(
    tmp_path, refused_url, start_proxy, client
):
    policy = CachePolicy(frozenset({"GET", "HEAD"}), frozenset({200}), (), frozenset(), False)
    path = tmp_path / "cache.db"
    file = CacheFile(path)
    file.open(0)
    file.write(
        [
            Row(
                cache_key("r", "GET", "api.example.com", target, "", {}, policy),
                "r",
                status,
                None,
                (),
                body,
                990.0,
                NO_LIMITS,
            )
            for target, status, body in (("/drivers", 404, b"Not Found"), ("/ok", 200, b"{}"))
        ],
        [],
    )
    file.close()
    config = {
        "upstreams": {"primary": {"url": refused_url}},
        "routes": [route(upstreams=("primary",), cache={"stale_for": "1h"})],
        "cache": {"path": str(path)},
    }
    proxy = await start_proxy(config, clock=FakeClock())
    host = {"Host": "api.example.com"}
    async with client.get(proxy + "/ok", headers=host) as response:
        assert (response.status, response.headers["X-Failover-Source"]) == (200, "cache")
    async with client.get(proxy + "/drivers", headers=host) as response:
        assert (response.status, response.headers["X-Failover-Source"]) == (503, "none")
