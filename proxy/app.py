"""Process lifecycle: build the runtime, open the upstream pools, listen, and drain on
SIGTERM/SIGINT.

The drain is Envoy's (and Istio's sidecar drain): ``readyz`` answers 503 at once while the
listener keeps accepting and answering as usual, because whoever routes to the proxy
(a kubelet probe, a load balancer, the app next to it) notices later than the signal
arrives. The listener closes once nothing has been in flight and no request has arrived
for :data:`DRAIN_QUIET`, or when ``shutdown_grace`` is over; requests still running then
are cancelled. Then buffered writes are replayed for up to ``shutdown_grace`` while
upstreams take them, and the pools close. A second signal ends the drain at once."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from proxy.buffer.buffer import WriteBuffer, write_buffer_for
from proxy.buffer.journal import JournalLocked
from proxy.buffer.replay import Replay
from proxy.cache.file import CacheFileError
from proxy.cache.store import Store
from proxy.cache.writer import cache_writer_for
from proxy.config.runtime import UpstreamSettings, build_runtime
from proxy.config.schema import Config
from proxy.http.handler import ProxyHandler
from proxy.http.listener import Listener
from proxy.http.server import StartupError, build_listener, require_strict_parser
from proxy.live import Live
from proxy.ops.admin import TOKEN_ENV, AdminApi, admin_token, serve_without_versions
from proxy.ops.health import ConfigInfo, Observed
from proxy.ops.probes import Ops
from proxy.ops.stats import Stats
from proxy.reloader import Reloader
from proxy.upstreams.active_checks import ActiveChecks
from proxy.upstreams.client import UpstreamClient
from proxy.upstreams.drills import Drills
from proxy.upstreams.events import EventLog
from proxy.upstreams.guard import UpstreamGuard

log = logging.getLogger("failover_proxy")

# Young-generation collections every 20,000 allocations instead of 700: a request
# allocates a few hundred short-lived objects that reference counting frees; the cyclic
# collector only needs to run now and then (measured: see bench/README.md).
GC_THRESHOLD = 20_000

DRAIN_QUIET = 1.0  # seconds with nothing in flight and no new request: the drain is over
_DRAIN_POLL = 0.05
_CANCEL_WAIT = 1.0  # for handlers cancelled at the end of the drain to unwind


class ProxyApp:
    """A running proxy: its runtime snapshot, upstream clients and listener."""

    def __init__(
        self,
        config: Config,
        base: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        config_file: Path | None = None,
    ) -> None:
        self.base = base
        runtime = build_runtime(config, base)
        events = EventLog(clock)

        def new_guard(settings: UpstreamSettings) -> UpstreamGuard:
            return UpstreamGuard(settings, clock=clock, wall_clock=wall_clock, events=events)

        # the pools are opened by start(), inside the event loop
        guards = {name: new_guard(settings) for name, settings in runtime.upstreams.items()}
        self.live = Live(runtime, {}, guards)
        store = Store(
            max_bytes=config.cache.max_size, max_entries=config.cache.max_entries, clock=clock
        )
        self.cache_writer = cache_writer_for(
            config.cache, base, store, clock=clock, wall_clock=wall_clock
        )
        self.stats = Stats(
            [route.name for route in runtime.routes], runtime.upstreams, clock, wall_clock
        )
        self.events = events
        self.drills = Drills(clock, events)
        self.checks = ActiveChecks()
        self.handler = ProxyHandler(self.live, store, self.stats, self.drills)
        self.observed = Observed(
            live=self.live,
            stats=self.stats,
            store=store,
            events=events,
            drills=self.drills,
            config=ConfigInfo(str(config_file) if config_file else None, wall_clock()),
            cache_file=lambda: str(self.cache_writer.file.path) if self.cache_writer else None,
            clock=clock,
            wall_clock=wall_clock,
            tunnels=self.handler.tunnels,
        )
        self.ops = self.handler.ops = Ops(self.observed)
        self.handler.buffer = self.observed.buffer = write_buffer_for(
            config.buffer, base, clock=clock, wall_clock=wall_clock
        )
        self._listener: Listener | None = None
        self._drain_deadline: float | None = None  # loop time; set by drain()
        self.hurry = asyncio.Event()  # a second SIGTERM: stop draining, close now
        self._admin_runner: web.AppRunner | None = None
        self.admin_port: int | None = None
        self.port: int | None = None
        self.reloader: Reloader | None = None
        if config_file is not None:
            self.reloader = Reloader(
                config_file,
                config.reload.poll_interval,
                base=base,
                live=self.live,
                new_guard=new_guard,
                checks=self.checks,
                store=store,
                cache_writer=self.cache_writer,
                drills=self.drills,
                stats=self.stats,
                info=self.observed.config,
                wall_clock=wall_clock,
            )

    async def start(self) -> None:
        require_strict_parser()
        current = self.live.current
        runtime = current.runtime
        await self._load_cache()
        await self._open_buffer()
        for name, settings in runtime.upstreams.items():
            current.clients[name] = client = UpstreamClient(settings)
            self.checks.start(name, client, current.guards[name], settings.health_check)
        config = runtime.config
        listener = build_listener(self.handler, config.limits, asyncio.get_running_loop())
        self.port = await listener.start(
            config.listen.host, config.listen.port, backlog=config.listen.backlog
        )
        self._listener = listener
        buffer = self.handler.buffer
        if buffer is not None:
            idempotency_header = buffer.settings.idempotency_header
            buffer.start(Replay(self.live, self.handler.walk, idempotency_header))
        loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
        log.info("listening on %s:%s (event loop: %s)", config.listen.host, self.port, loop_name)
        await self._start_admin(config)
        if self.reloader is not None:
            await self.reloader.start()
        self._freeze()
        self.ops.ready = True

    def _freeze(self) -> None:
        """Everything built by now (modules, the config schema, the runtime, the admin
        listener's aiohttp application, the health checks' sessions) lives as long as
        the process: take it out of the cyclic GC's sight, so that collections under load
        only walk what requests allocate. Done last: objects made after the freeze are
        walked by every full collection (an admin listener started after it cost 22 us
        per proxied request, measured with wrk -c 50)."""
        for client in self.live.current.clients.values():
            if client.settings.health_check is not None:
                _ = client.session  # the checks' aiohttp session, made now rather than later
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD)

    async def _start_admin(self, config: Config) -> None:
        """The admin listener, only with a token: without one it does not start."""
        try:
            token = admin_token(config.admin.token_file, self.base)
        except OSError as exc:
            log.error("admin: cannot read admin.token_file: %s; the admin listener is off", exc)
            return
        if token is None:
            log.warning(
                "admin: no token (set %s or admin.token_file): the admin listener is off",
                TOKEN_ENV,
            )
            return
        api = AdminApi(token, self.observed, self.drills, self.ops, self.reloader)
        self._admin_runner = web.AppRunner(api.app(), access_log=None, handle_signals=False)
        await self._admin_runner.setup()
        serve_without_versions(self._admin_runner)
        site = web.TCPSite(
            self._admin_runner, config.admin.host, config.admin.port, reuse_address=True
        )
        await site.start()
        addresses = self._admin_runner.addresses
        self.admin_port = addresses[0][1] if addresses else config.admin.port
        log.info("admin listener on %s:%s", config.admin.host, self.admin_port)

    async def _open_buffer(self) -> None:
        """The write buffer's journal: unlike the cache, one that cannot be opened stops
        the start (acknowledged writes are in it)."""
        buffer = self.handler.buffer
        if buffer is None:
            return
        routes = [route.name for route in self.live.current.runtime.routes if route.buffers_writes]
        try:
            await buffer.open(routes)
        except JournalLocked as exc:
            raise StartupError(str(exc)) from None
        except (OSError, ValueError) as exc:
            where = buffer.journal.directory
            raise StartupError(f"cannot open the write buffer {where}: {exc}") from None

    async def drain(self) -> None:
        """SIGTERM's first step: ``readyz`` answers 503 while the listener keeps serving,
        until the proxy is idle for :data:`DRAIN_QUIET` (nothing in flight, no request
        arrived, probes included) or ``shutdown_grace`` is over, or :attr:`hurry` is set
        (a second signal). :meth:`stop` then closes the listener."""
        self.ops.ready = False
        server = self._listener
        if server is None:
            return
        grace = self.live.current.runtime.config.shutdown_grace
        loop = asyncio.get_running_loop()
        started = idle_since = loop.time()
        self._drain_deadline = deadline = started + grace
        log.info(
            "draining: readyz answers 503; %d requests in flight; the listener stays open "
            "until %ss pass without a request or shutdown_grace (%ss) is over",
            self.live.in_flight,
            DRAIN_QUIET,
            grace,
        )
        seen = server.requests
        reason = "shutdown_grace is over"
        while (now := loop.time()) < deadline:
            if self.hurry.is_set():
                reason = "a second signal"
                break
            if server.requests != seen or self.live.in_flight:
                seen, idle_since = server.requests, now
            elif now - idle_since >= DRAIN_QUIET:
                reason = "idle"
                break
            await asyncio.sleep(min(_DRAIN_POLL, deadline - now))
        log.info(
            "draining: closing the listener after %.1fs (%s); %d requests in flight",
            loop.time() - started,
            reason,
            self.live.in_flight,
        )

    async def _close_listener(self, listener: Listener) -> None:
        """Stop accepting; requests in flight finish until the drain's deadline (or
        ``shutdown_grace`` from the stop, without a drain); what still runs is cancelled."""
        loop = asyncio.get_running_loop()
        deadline = self._drain_deadline or loop.time()
        listener.stop_accepting()
        while self.live.in_flight and loop.time() < deadline and not self.hurry.is_set():
            await asyncio.sleep(_DRAIN_POLL)
        if self.live.in_flight:
            log.warning(
                "draining: %d requests still in flight when shutdown_grace was over; "
                "cancelled (their clients see the connection close)",
                self.live.in_flight,
            )
        await listener.close(grace=_CANCEL_WAIT)

    async def _close_tunnels(self) -> None:
        """Tunnels (WebSockets) run on until ``shutdown_grace`` is over (counted from the
        drain's start), then are closed: a long-lived one would hold the exit forever."""
        loop = asyncio.get_running_loop()
        deadline = self._drain_deadline or loop.time()
        grace = 0.0 if self.hurry.is_set() else max(0.0, deadline - loop.time())
        await self.handler.tunnels.close_all(grace)

    async def _drain_buffer(self, buffer: WriteBuffer) -> None:
        """Deliver buffered writes before exiting when upstreams take them (a pod being
        deleted may lose its disk); what is left stays in the journal for the next start."""
        if not buffer.status().depth:
            return
        grace = self.live.current.runtime.config.shutdown_grace
        loop = asyncio.get_running_loop()
        started = loop.time()
        left = await buffer.drain(grace)
        if left:
            waited = loop.time() - started
            why = (
                "shutdown_grace is over"
                if waited >= grace
                else "a pass where no upstream took a write"
            )
            log.warning(
                "buffer: %d writes still wait after %.1fs of replay at shutdown (%s); they "
                "stay in %s for the next start",
                left,
                waited,
                why,
                buffer.journal.directory,
            )

    async def _load_cache(self) -> None:
        """The last good answers a previous run kept on disk. A file that cannot be used
        is logged and the proxy starts with an empty cache: never a reason not to start."""
        writer = self.cache_writer
        if writer is None:
            return
        routes = {route.name: route.cache for route in self.live.current.runtime.routes}

        def usable(route: str, age: float) -> bool:
            rules = routes.get(route)
            return rules is not None and age <= max(
                rules.stale_for, rules.fresh_for + rules.stale_while_revalidate
            )

        try:
            loaded = await writer.load(usable)
        except CacheFileError as exc:
            log.error("%s: the cache is kept in memory only", exc)
            self.cache_writer = None
            return
        # a status the route no longer keeps (a 404 kept by an older version): not a
        # last good answer; deleted from the file with the writer's first flush
        for key, entry in self.handler.store.items():
            rules = routes.get(entry.route)
            if rules is not None and entry.status not in rules.policy.statuses:
                self.handler.store.remove(key)
                loaded -= 1
        log.info("cache: %d answers loaded from %s", loaded, writer.file.path)
        writer.start()

    async def stop(self) -> None:
        self.ops.ready = False
        if self._drain_deadline is None:  # no drain: shutdown_grace counts from now
            grace = self.live.current.runtime.config.shutdown_grace
            self._drain_deadline = asyncio.get_running_loop().time() + grace
        if self.reloader is not None:
            await self.reloader.stop()
        await self.checks.close()
        if self._listener is not None:
            await self._close_listener(self._listener)
            self._listener = None
        await self._close_tunnels()
        await self.handler.close()
        buffer = self.handler.buffer
        if buffer is not None:
            await self._drain_buffer(buffer)
            await buffer.close()
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
            self._admin_runner = None
        if self.cache_writer is not None:
            await self.cache_writer.close()
        for client in self.live.current.clients.values():
            await client.close()


async def serve(config: Config, base: Path, config_file: Path | None = None) -> None:
    """Run until SIGTERM or SIGINT, then drain."""
    app = ProxyApp(config, base, config_file=config_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_stop() -> None:
        (app.hurry if stop.is_set() else stop).set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_stop)
    reloader = app.reloader
    if reloader is not None:
        pending: set[asyncio.Task[object]] = set()

        def on_hup() -> None:
            if not app.ops.ready:  # still starting, or draining: nothing to reload
                log.warning("SIGHUP ignored: the proxy is starting or draining")
                return
            task = asyncio.create_task(reloader.reload("SIGHUP"))
            pending.add(task)
            task.add_done_callback(pending.discard)

        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, on_hup)
    await app.start()
    try:
        await stop.wait()
        await app.drain()
    finally:
        await app.stop()


def run(config: Config, base: Path, config_file: Path | None = None) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(config, base, config_file))
    else:
        uvloop.run(serve(config, base, config_file))
