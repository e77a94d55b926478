"""The tests, laid out as the package is: ``unit/<subpackage>/`` (pure: no sockets, no
subprocesses, seconds in all), ``e2e/`` (real loopback sockets, the proxy in-process) and
``process/`` (the proxy or another program as its own process)."""
