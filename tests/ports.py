"""Free ports for servers the tests and benchmarks start on 127.0.0.1."""

import random
import socket


def free_port() -> int:
    """A port in 20000-32000 that nothing listens on now: below 32767, the highest port MMS
    accepts, since the kernel's own picks (bind to port 0) lie above it."""
    for port in random.sample(range(20000, 32001), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")
