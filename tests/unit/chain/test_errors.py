"""What aiohttp and asyncio raise, mapped to the failure classes that drive failover."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey

from proxy.chain.errors import NEVER_SENT, Failure, proxy_status_error
from proxy.upstreams.exceptions import classify_exception

KEY = ConnectionKey("upstream.test", 443, True, True, None, None, None)


def connector_error(cls: type[aiohttp.ClientConnectorError], os_error: OSError):
    return cls(KEY, os_error)


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        (
            connector_error(aiohttp.ClientConnectorDNSError, OSError("no such host")),
            Failure.DNS_ERROR,
        ),
        (
            connector_error(aiohttp.ClientConnectorError, ConnectionRefusedError()),
            Failure.CONNECTION_REFUSED,
        ),
        (
            connector_error(aiohttp.ClientConnectorError, OSError("no route")),
            Failure.CONNECTION_ERROR,
        ),
        (aiohttp.ClientConnectorSSLError(KEY, ssl.SSLError()), Failure.TLS_ERROR),
        (aiohttp.ConnectionTimeoutError(), Failure.CONNECT_TIMEOUT),
        (aiohttp.SocketTimeoutError(), Failure.READ_TIMEOUT),
        (aiohttp.ServerDisconnectedError(), Failure.CONNECTION_RESET),
        (aiohttp.ClientOSError(104, "reset"), Failure.CONNECTION_RESET),
        (aiohttp.ClientPayloadError("cut short"), Failure.BODY_TRUNCATED),
        (aiohttp.ClientResponseError(None, (), status=400, message="bad"), Failure.PROTOCOL_ERROR),
    ],
)
def test_client_exceptions_map_to_failure_classes(exc, failure):
    assert classify_exception(exc) is failure


def test_a_bug_is_not_mistaken_for_an_upstream_failure():
    assert classify_exception(KeyError("oops")) is None
    assert classify_exception(asyncio.CancelledError()) is None


def test_only_failures_before_the_request_left_count_as_never_sent():
    assert Failure.CONNECTION_REFUSED in NEVER_SENT
    assert Failure.READ_TIMEOUT not in NEVER_SENT
    assert Failure.CONNECTION_RESET not in NEVER_SENT


def test_statuses_carry_no_rfc_9209_error_type():
    assert proxy_status_error(Failure.HTTP_5XX) is None
    assert proxy_status_error(Failure.CONNECT_TIMEOUT) == "connection_timeout"
