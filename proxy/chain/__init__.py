"""The pure core: what the failover chain decides, with no I/O.

- errors: the failure taxonomy (which statuses fail, how ``Proxy-Status`` names them);
- plan: which upstream next, after how long, and what answers when none is left;
- outcome: an answer's ``Source`` and ``Health``, the route-health and skipping rules;
- routing: request target to route; headers: what crosses the proxy, what it adds;
- validate: a route's "is this a good answer?" rules; payloads: the proxy's own bodies.
- streams: when an answer is a stream (SSE, NDJSON), its first event, in-band errors.

Imports: only the standard library and other chain modules, plus the schema models of
proxy.config in routing and payloads (a route's match and default payload are compiled
from them). Never aiohttp, yarl or asyncio: the exceptions the client raises are mapped
to failure classes in proxy.upstreams.exceptions, so all of this is tested without
sockets or an event loop.
"""
