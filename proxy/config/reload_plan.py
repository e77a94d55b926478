"""Hot reload: what a new config changes (pure), and watching the file for changes.

:func:`plan` compares the running snapshot with a new one built off to the side: which
upstreams keep their state (breaker, health-check history, cooldown, quota, connection
pool: those whose settings are equal), which start fresh, which are drained and
closed; which routes' cache entries still fit (same key rules); and which changes
need a restart because applying them would only half-apply them (listeners, the
cache file, the buffer directory). Other route settings (deadline, retries,
``response_mode``, ``stream``, ``upgrade``) are not compared: they are part of the new
snapshot, which every request that starts after the swap reads; a stream or tunnel
already open keeps the snapshot it started with.

:class:`FileWatch` notices a change of the file's content or of the file a symlink
resolves to (a Kubernetes ConfigMap update swaps a ``..data`` symlink; the file's own
path never changes).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from proxy.config.runtime import Runtime

_SERVER_LIMITS = (
    "max_request_line",
    "max_header_size",
    "max_headers",
    "client_header_timeout",
)


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    kept: frozenset[str]  # upstreams whose state carries over
    fresh: frozenset[str]  # new or changed upstreams: new state
    removed: frozenset[str]  # gone or changed: drained, then closed
    purge_routes: frozenset[str]  # routes whose cache entries no longer fit
    needs_restart: tuple[str, ...]  # what is not applied until a restart


def plan(old: Runtime, new: Runtime) -> ReloadPlan:
    kept = frozenset(
        name for name, settings in new.upstreams.items() if old.upstreams.get(name) == settings
    )
    fresh = frozenset(new.upstreams) - kept
    removed = frozenset(old.upstreams) - kept
    new_rules = {route.name: route.cache for route in new.routes}
    purge = frozenset(
        route.name
        for route in old.routes
        if route.cache is not None
        and ((rules := new_rules.get(route.name)) is None or rules.policy != route.cache.policy)
    )
    restart: list[str] = []
    old_config, new_config = old.config, new.config
    if old_config.listen != new_config.listen:
        restart.append(f"listen (running on {old_config.listen.host}:{old_config.listen.port})")
    old_admin, new_admin = old_config.admin, new_config.admin
    if (old_admin.host, old_admin.port) != (new_admin.host, new_admin.port):
        restart.append("admin.host/admin.port")
    old_limits, new_limits = old_config.limits, new_config.limits
    for name in _SERVER_LIMITS:  # the listener's parser and timeouts are set up once
        if getattr(old_limits, name) != getattr(new_limits, name):
            restart.append(f"limits.{name}")
    if old_config.cache.path != new_config.cache.path:
        restart.append("cache.path")
    if old_config.buffer != new_config.buffer:
        restart.append("buffer")
    return ReloadPlan(kept, fresh, removed, purge, tuple(restart))


@dataclass(frozen=True, slots=True)
class Seen:
    target: str  # the file the path resolves to
    digest: str


class FileWatch:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: Seen | None = None

    def look(self) -> Seen | None:
        """The file as it is now (blocking: call it off the event loop); None when it
        cannot be read right now (mid-swap): no change is assumed."""
        try:
            target = os.path.realpath(self.path)
            with open(target, "rb") as file:
                digest = hashlib.sha256(file.read()).hexdigest()
        except OSError:
            return None
        return Seen(target, digest)

    def changed(self, now: Seen | None) -> bool:
        """Whether ``now`` differs from what was seen last (and remember it)."""
        if now is None:
            return False
        if self.seen is None:
            self.seen = now
            return False
        if now == self.seen:
            return False
        self.seen = now
        return True
