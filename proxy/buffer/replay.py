"""Delivering one buffered write (docs/configuration.md, "Writes"): the
:class:`proxy.buffer.buffer.Deliver` the app hands to :meth:`proxy.buffer.buffer.WriteBuffer.start`.

A replay walks the same failover chain as a client's request (:mod:`proxy.http.walk`:
guards, retries, drills and counters included), on the config being served now, with
the write's idempotency key, which makes every failure safe to move on from. What the
upstream answered decides the write's fate (:func:`proxy.buffer.rules.verdict`).
"""

from __future__ import annotations

from typing import Any

from multidict import CIMultiDict

from proxy.buffer.frames import Write
from proxy.buffer.rules import Verdict, final, verdict
from proxy.http.exchange import Exchange
from proxy.http.walk import Walk
from proxy.live import Generation, Live

_BODY_KEPT = 4096  # bytes of the upstream's answer kept with a delivered or dead write


class Replay:
    def __init__(self, live: Live, walk: Walk, idempotency_header: str) -> None:
        self._live = live
        self._walk = walk
        self._idempotency_header = idempotency_header

    async def __call__(self, write: Write, body: bytes) -> tuple[Verdict, dict[str, Any] | None]:
        """The route's upstreams in order, through their guards, with the write's
        idempotency key. A route that no longer buffers makes it a dead letter."""
        current = self._live.current
        with self._live.using(current.number):  # the pools _deliver reads, with no await
            return await self._deliver(current, write, body)

    async def _deliver(
        self, current: Generation, write: Write, body: bytes
    ) -> tuple[Verdict, dict[str, Any] | None]:
        route = current.runtime.route(write.route)
        if route is None or not route.buffers_writes:
            return Verdict.DEAD, {"reason": f"the route {write.route!r} no longer buffers writes"}
        headers = CIMultiDict(write.headers)
        if self._idempotency_header not in headers:
            headers[self._idempotency_header] = write.idempotency_key
        path, _, query = write.target.partition("?")
        replay = Exchange(
            request=None,
            runtime=current.runtime,
            route=route,
            method=write.method,
            headers=headers,
            version=(1, 1),
            client_ip=write.client_ip,
            path=path,
            query=query,
            clients=current.clients,
            guards=current.guards,
            generation=current.number,
            request_id=headers.get("X-Request-Id") or write.id,
            replay=True,
        )
        _, chosen, last_error = await self._walk(replay, body, None)
        if chosen is None:
            if last_error is not None and final(last_error.status):  # the walk's verdict
                text = last_error.body[:_BODY_KEPT].decode(errors="replace")
                answer = {"upstream": last_error.upstream, "status": last_error.status}
                return Verdict.DEAD, {**answer, "body": text}
            return Verdict.RETRY, None
        response = chosen.answer.response
        text = b"".join(chosen.answer.chunks)[:_BODY_KEPT].decode(errors="replace")
        response.close()
        chosen.guard.finish(chosen.ticket, None)
        result = verdict(response.status)
        if result is Verdict.RETRY:
            return result, None
        return result, {"upstream": chosen.upstream, "status": response.status, "body": text}
