"""The data path: a client's request from the listener to an upstream and back.

listener, request, wire, server (the listening side); handler (reads the request,
consults the cache and walks the chain); exchange (one request's state on the way);
bodies (the client's body within limits); walk (the chain walk); respond (writing the
answer downstream); access (the access log line and the counters).
tunnel (the byte relay of an upgraded connection, once its 101 is written).

Imports: everything below it: chain, config, upstreams, cache, buffer, proxy.live; and
from ops only stats and logs (standard-library leaves the data path writes into) and
probes (the handler serves livez/readyz/health on the reserved prefix).
Never app, cli, reloader or demo. cache.front and buffer.replay import http back, as
the two callers of the chain walk besides the handler; both are built by app.
"""
