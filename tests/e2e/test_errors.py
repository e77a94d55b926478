"""What aiohttp and asyncio raise, mapped to the failure classes that drive failover."""

from __future__ import annotations

import asyncio

from yarl import URL

from tests.conftest import route


async def test_tls_to_a_plain_http_upstream_is_a_tls_error(http_upstream, start_proxy, client):
    from aiohttp import web

    plain = await http_upstream(lambda r: asyncio.sleep(0, web.Response()))
    tls_url = str(URL(plain.url).with_scheme("https"))
    config = {
        "upstreams": {"primary": {"url": tls_url, "tls": {"verify": False}}},
        "routes": [route(upstreams=("primary",))],
    }
    proxy = await start_proxy(config)
    async with client.get(proxy + "/x") as response:
        assert response.status == 503
        assert 'details="tls_error"' in response.headers["Proxy-Status"]
        assert "error=tls_protocol_error" in response.headers["Proxy-Status"]
    assert plain.hits == 0
