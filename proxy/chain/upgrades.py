"""Whether a route takes an ``Upgrade`` request (RFC 9110 section 7.8): the decision,
with no I/O. The tunnel itself is :mod:`proxy.http.tunnel`'s."""

from __future__ import annotations

# Seconds a client is asked to wait when a route has as many tunnels open as it allows:
# a tunnel ends when one closes, which the proxy cannot foresee; a few seconds spreads
# the reconnects of a fleet of clients.
TUNNEL_RETRY_AFTER = 5


def offered_protocols(upgrade: str) -> list[str]:
    """The protocol names an ``Upgrade`` header offers, lower-case, without versions
    (``websocket``, ``h2c``; ``foo/2`` is ``foo``)."""
    names = []
    for item in upgrade.split(","):
        name = item.strip().partition("/")[0].strip().lower()
        if name:
            names.append(name)
    return names


def upgrade_refusal(enabled: bool, protocols: frozenset[str] | None, upgrade: str) -> str | None:
    """Why the route refuses this upgrade (answered 403), or None to tunnel it.
    ``protocols``: the names the route allows (None: any)."""
    if not enabled:
        return "upgrades are not allowed on this route"
    offered = offered_protocols(upgrade)
    if not offered:
        return "the Upgrade header names no protocol"
    if protocols is not None and not any(name in protocols for name in offered):
        allowed = ", ".join(sorted(protocols))
        return f"this route upgrades only to {allowed}"
    return None
