"""The operator's side: what the proxy is doing, and the levers to change it.

- probes: livez, readyz, health, metrics; health (gathers), report (typed records),
  advice (recommendations): ``/health``; metrics: the Prometheus exposition;
- stats: the counters the data path writes; logs: JSON or text log lines;
- admin, admin_hosts: the admin API and the Host check in front of it;
- status_page: the admin listener's HTML page.

Imports: it reads everything below the wiring (chain, config, upstreams, cache, buffer,
http, proxy.live) and admin calls proxy.reloader. It is imported by app, cli and the
reloader, by http.handler for the probes, and, for stats and logs only, by the data path:
those two import nothing but the standard library, so writing a counter never pulls in
the rest of ops.
"""
