"""Applying a reload to a running proxy (docs/configuration.md, "Reloading the config"):
validate the file and build the new snapshot off to the side, then swap it in with one
assignment. State carries over as :func:`proxy.config.reload_plan.plan` says; upstreams that went
away are drained (their in-flight calls finish) and then closed. A file that does not
validate is refused: the old config keeps serving, and the refusal is logged, counted
and shown in ``/health`` until a good file loads.

Triggers: the file's content or symlink target changing (polled every
``reload.poll_interval``), SIGHUP, and ``POST /admin/reload``; one reload at a time.

The reloader is the only writer of :class:`proxy.live.Live` (:meth:`~proxy.live.Live.swap`);
it is handed the few things a reload changes besides, never the whole application.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from proxy.cache.store import Store
from proxy.cache.writer import CacheWriter
from proxy.config.loader import ConfigError, load_file
from proxy.config.reload_plan import FileWatch, plan
from proxy.config.runtime import UpstreamSettings, build_runtime
from proxy.live import Live
from proxy.ops import logs
from proxy.ops.health import ConfigInfo
from proxy.ops.stats import Stats
from proxy.upstreams.active_checks import ActiveChecks
from proxy.upstreams.client import UpstreamClient
from proxy.upstreams.drills import Drills
from proxy.upstreams.guard import UpstreamGuard

log = logging.getLogger("failover_proxy")


@dataclass(frozen=True, slots=True)
class ReloadResult:
    applied: bool
    message: str  # what changed, or why the file was refused
    needs_restart: tuple[str, ...] = ()


class Reloader:
    def __init__(
        self,
        path: Path,
        poll_interval: float,
        *,
        base: Path,
        live: Live,
        new_guard: Callable[[UpstreamSettings], UpstreamGuard],
        checks: ActiveChecks,
        store: Store,
        cache_writer: CacheWriter | None,
        drills: Drills,
        stats: Stats,
        info: ConfigInfo,
        wall_clock: Callable[[], float],
    ) -> None:
        self.path = path
        self.base = base  # what relative paths in the file are relative to
        self.live = live
        self._new_guard = new_guard
        self._checks = checks
        self._store = store
        self._cache_writer = cache_writer
        self._drills = drills
        self._stats = stats
        self.info = info  # what /health shows of the config file and its reloads
        self._wall_clock = wall_clock
        self.poll_interval = poll_interval
        self.watch = FileWatch(path)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._draining: set[asyncio.Task[None]] = set()
        self._replaced: set[UpstreamClient] = set()  # pools waiting to be closed

    async def start(self) -> None:
        self.watch.changed(await asyncio.to_thread(self.watch.look))  # the file as started
        if self.poll_interval > 0:
            self._task = asyncio.create_task(self._poll(), name="config watch")

    async def stop(self) -> None:
        """Stop watching; pools still being drained are closed now (the proxy is going)."""
        tasks = [t for t in (self._task, *self._draining) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in list(self._replaced):
            await client.close()
        self._replaced.clear()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            if self.watch.changed(await asyncio.to_thread(self.watch.look)):
                await self.reload("the file changed")

    async def reload(self, trigger: str) -> ReloadResult:
        async with self._lock:
            try:
                result = await self._reload(trigger)
            except Exception as exc:  # never kill the watcher or answer the admin with 500
                log.exception("config reload failed unexpectedly")
                result = ReloadResult(False, f"{self.path}: {exc!r}")
        info = self.info
        key = "success" if result.applied else "failure"
        info.reloads[key] = info.reloads.get(key, 0) + 1
        if result.applied:
            info.last_reload_error = None
            info.loaded_at = self._wall_clock()
            info.needs_restart = list(result.needs_restart)
            log.warning("config reloaded (%s): %s", trigger, result.message)
        else:
            info.last_reload_error = result.message
            log.error(
                "config reload refused (%s), the old config keeps serving: %s",
                trigger,
                result.message,
            )
        return result

    async def _reload(self, trigger: str) -> ReloadResult:
        try:
            config = await asyncio.to_thread(load_file, self.path)
            runtime = await asyncio.to_thread(build_runtime, config, self.base)
        except ConfigError as exc:
            return ReloadResult(False, str(exc))
        except (OSError, ValueError) as exc:
            return ReloadResult(False, f"{self.path}: {exc}")
        old = self.live.current
        change = plan(old.runtime, runtime)
        guards = {
            name: old.guards[name] if name in change.kept else self._new_guard(settings)
            for name, settings in runtime.upstreams.items()
        }
        clients: dict[str, UpstreamClient] = {}
        try:
            for name, settings in runtime.upstreams.items():
                kept = name in change.kept
                clients[name] = old.clients[name] if kept else UpstreamClient(settings)
        except Exception as exc:  # e.g. a ca_file that is not PEM: refused, nothing leaks
            failed = name
            for built, client in clients.items():
                if built not in change.kept:
                    await client.close()
            return ReloadResult(False, f"{self.path}: upstream {failed}: {exc}")
        self._stats.ensure([route.name for route in runtime.routes], runtime.upstreams)
        # The swap: from here new requests see the new config; none sees a mix.
        new = self.live.swap(runtime, clients, guards)
        for route in change.purge_routes:
            self._store.purge(route)
        self._store.resize(config.cache.max_size, config.cache.max_entries)
        if self._cache_writer is not None:
            self._cache_writer.interval = config.cache.flush_interval
        for name in change.removed:
            self._checks.stop(name)
            if name not in runtime.upstreams:
                self._drills.stop(name, "its upstream was removed from the config")
            self._replaced.add(old.clients[name])  # closed by the drain, or at stop
            drain = asyncio.create_task(self._drain(old.clients[name], new.number))
            self._draining.add(drain)
            drain.add_done_callback(self._draining.discard)
        for name in change.fresh:
            settings = runtime.upstreams[name]
            self._checks.start(name, clients[name], guards[name], settings.health_check)
        if config.logging != old.runtime.config.logging:
            logs.configure(config.logging.level, config.logging.format, config.logging.access_log)
        summary = (
            f"{len(runtime.routes)} routes; upstreams kept {sorted(change.kept)}, "
            f"new or changed {sorted(change.fresh)}, removed or replaced "
            f"{sorted(change.removed)}; cache cleared for {sorted(change.purge_routes)}"
        )
        if change.needs_restart:
            summary += f"; needs a restart to apply: {', '.join(change.needs_restart)}"
        _refreeze()
        return ReloadResult(True, summary, change.needs_restart)

    async def _drain(self, client: UpstreamClient, generation: int) -> None:
        """Close a replaced upstream's pool once every request that started on an older
        config is done (it may still move on to this upstream, after a retry backoff or
        a slow earlier try), or once the shutdown grace has passed."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self.live.current.runtime.config.shutdown_grace
        while not self.live.drained(generation) and loop.time() < until:
            await asyncio.sleep(0.05)
        self._replaced.discard(client)
        await client.close()


def _refreeze() -> None:
    """The new snapshot lives until the next reload: out of the cyclic GC's sight, like
    the first one (``ProxyApp._freeze``), so collections under load walk only what
    requests allocate. Unfrozen first, so the cycles of what the reload replaced can
    still be collected once it is unused."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
