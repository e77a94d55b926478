"""Tests that start the proxy (tests/procs.py) or another program (promtool, a browser,
``python -m proxy``) as its own process."""
