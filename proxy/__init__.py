"""failover-proxy: a sidecar reverse proxy that adds failover at the HTTP layer."""

__version__ = "0.1.0"
