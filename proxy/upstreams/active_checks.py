"""Active health checks: a request to each checked upstream's ``health_check.path``
every ``interval`` (spread with jitter so a fleet of sidecars does not probe in step),
with its own ``timeout``, fed to the upstream's :class:`~proxy.upstreams.guard.UpstreamGuard`.
Runs as one background task per checked upstream; stops cleanly when cancelled.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import aiohttp

from proxy.config.runtime import HealthCheckSettings
from proxy.upstreams.client import UpstreamClient
from proxy.upstreams.exceptions import classify_exception
from proxy.upstreams.guard import UpstreamGuard


class HealthChecker:
    def __init__(
        self,
        client: UpstreamClient,
        guard: UpstreamGuard,
        settings: HealthCheckSettings,
        *,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self._client = client
        self._guard = guard
        self._settings = settings
        self._uniform = uniform
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout)

    async def probe(self) -> tuple[bool, str]:
        """One check: ``(passed, what was seen)``."""
        url = self._client.url(self._settings.path, "")
        try:
            async with self._client.session.get(
                url, timeout=self._timeout, allow_redirects=False
            ) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            failure = classify_exception(exc)
            return False, failure.value if failure else "timeout"
        return status in self._settings.expected_status, f"status {status}"

    async def run(self) -> None:
        settings = self._settings
        await asyncio.sleep(self._uniform(0, settings.interval))
        while True:
            passed, detail = await self.probe()
            self._guard.check_result(
                passed,
                detail,
                healthy_threshold=settings.healthy_threshold,
                unhealthy_threshold=settings.unhealthy_threshold,
            )
            await asyncio.sleep(settings.interval * self._uniform(0.9, 1.1))


class ActiveChecks:
    """The running checks, one task per checked upstream: started with the proxy and for
    each upstream a reload adds or replaces, stopped for each one it removes or
    replaces, and all at shutdown."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(
        self,
        name: str,
        client: UpstreamClient,
        guard: UpstreamGuard,
        settings: HealthCheckSettings | None,
    ) -> None:
        """The upstream's check, if its settings ask for one."""
        if settings is not None:
            checker = HealthChecker(client, guard, settings)
            self._tasks[name] = asyncio.create_task(checker.run(), name=f"check {name}")

    def stop(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        """Stop every check and wait for them to end."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
