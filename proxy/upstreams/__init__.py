"""One upstream: whether it is tried, and trying it.

State machines, pure, on an injected clock: breaker, budget (retries), quota, events,
drills, and guard (those together with a ``Retry-After`` cooldown and a concurrency cap).
Client side: client (a session per upstream), pool, connection and response (keep-alive
connections and the answers read on them), attempt (one try within the route's
deadline), exceptions (aiohttp and asyncio errors to failure classes), active_checks.

Imports: chain and config (settings come from config.runtime). The state machines import
only the standard library, chain.errors, config.runtime and each other: never aiohttp,
yarl or multidict. Only the client side talks to the network. Nothing here imports http,
cache, buffer or ops.
"""
