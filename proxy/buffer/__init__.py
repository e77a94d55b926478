"""The durable write buffer: writes kept on disk when every upstream failed, replayed later.

- rules: which failed writes may be buffered, replay backoff, what a replay's answer means;
- frames: the journal's format (a ``Write`` and its checksummed frames), pure;
- journal: the append-only segment files (blocking file I/O, one thread);
- buffer: accepting writes (group commit) and the replay loop; status: what it reports;
- replay: delivering one write through the same chain walk as a client's request.

Imports: rules and frames: the standard library and chain; journal and status: frames
and journal; buffer: config.schema and ops.stats (its counters, a standard-library
leaf). replay is the one module above the data path: it imports http (exchange, walk)
and proxy.live, because a replay walks the chain a client's request walks. Nothing
imports buffer.replay but app.
"""
