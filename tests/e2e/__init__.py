"""End-to-end tests over real loopback sockets: upstreams that misbehave on purpose and the
proxy started in-process (the fixtures in tests/conftest.py)."""
