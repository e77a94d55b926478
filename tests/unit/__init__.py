"""Pure tests, one folder per subpackage of proxy/: no sockets and no subprocesses (the
conftest here refuses both), so the whole set runs in seconds."""
