"""The admin listener's status page (placeholder until the page lands)."""

PAGE = "<!doctype html><title>failover-proxy</title><p>status page</p>"
