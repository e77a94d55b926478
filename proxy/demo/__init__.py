"""``failover-proxy demo``: the real proxy in front of simulated upstreams, failing
over live, in under a minute.

- runner: builds the upstreams, the config and the proxy, drives the traffic and prints
  a line per second.

Imports: anything, like an entry point: proxy.app (the real proxy, not a copy), config,
chain and ops. Imported only by the cli.
"""
