"""The last-known-good cache.

- rules: which answers are kept, under which key, when one is served (RFC 9111, numbered);
- freshness: how long an upstream lets an answer be served; store: in memory, LRU;
- status: every ``Cache-Status`` string (RFC 9211);
- file, writer: the SQLite copy on disk, kept in step off the request path;
- front: the cache in front of the failover chain (hits, collapsing, refreshes).

Imports: rules, freshness, store and status: only the standard library, chain and each
other (rules reads a stored entry through a Protocol, so it sits below the store). file
and writer add config.schema. front is the exception, and the reason the rule is per
module: it is the cache's seat on the data path (a refresh walks the chain), so it
imports http, upstreams.attempt, ops.stats and aiohttp. Nothing here imports app or ops
beyond ops.stats.
"""
