"""Which ``Host`` the admin listener answers to: the defence against DNS rebinding.

A page on ``evil.example`` whose name is made to resolve to 127.0.0.1 can make a
browser send requests to the admin listener; the browser still writes
``Host: evil.example``. So a request is answered only when its ``Host`` (port left
out) is one the listener is known by:

- the listener's own address (``admin.host``);
- ``localhost``;
- a loopback IP address (``127.0.0.1``, ``::1``), when it listens on loopback;
- any IP address, when it listens on every address (``0.0.0.0``, ``::``): then the
  pod's IP is its address, and an IP address cannot be rebound (rebinding needs a
  name), so every IP literal is as safe as the pod's own;
- a name in ``admin.allowed_hosts`` (a Service name, say).

Anything else is 421 Misdirected Request, before the token is looked at. Pure: no
sockets, so it tests without them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_WILDCARDS = ("", "0.0.0.0", "::")
# reg-name or IPv4 (RFC 3986 3.2.2, without percent escapes), then an optional port
_NAME = re.compile(r"^([A-Za-z0-9_.~!$&'()*+,;=-]+)(?::([0-9]*))?\Z")
_BRACKETED = re.compile(r"^\[([0-9A-Fa-f:.]+)\](?::([0-9]*))?\Z")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def host_of(value: str) -> str | None:
    """The host part of a ``Host`` header, lower case, without port, brackets or a
    final dot; None when the value is not a host at all (then the request gets 400)."""
    if (match := _BRACKETED.match(value)) is not None:
        try:
            return str(ipaddress.IPv6Address(match.group(1)))
        except ValueError:
            return None
    if (match := _NAME.match(value)) is None:
        return None
    host = match.group(1).lower().removesuffix(".")
    return _canonical(host)


def _canonical(host: str) -> str:
    """An IP address in its one written form (``::0001`` is ``::1``); a name as given."""
    address = _ip(host)
    return str(address) if address is not None else host


def _ip(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class AllowedHosts:
    """Decided once from the listener's address and ``admin.allowed_hosts``."""

    names: frozenset[str]
    any_ip: bool  # listening on every address: any IP literal is this listener
    loopback_ip: bool  # listening on loopback: any loopback IP literal is

    @classmethod
    def build(cls, listen_host: str, allowed: list[str]) -> AllowedHosts:
        listen = listen_host.lower().removeprefix("[").removesuffix("]")
        address = _ip(listen)
        names = {"localhost", *(_canonical(name) for name in allowed)}
        if listen not in _WILDCARDS:
            names.add(_canonical(listen))
        loopback = listen == "localhost" or (address is not None and address.is_loopback)
        return cls(frozenset(names), listen in _WILDCARDS, loopback)

    def allows(self, host: str) -> bool:
        """``host`` as :func:`host_of` returns it."""
        if host in self.names:
            return True
        address = _ip(host)
        if address is None:
            return False
        return self.any_ip or (self.loopback_ip and address.is_loopback)
