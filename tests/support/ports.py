"""Ports for servers a test starts.

A port the kernel hands out for `bind(0)` comes from the ephemeral range, the same range it takes
the source ports of outgoing connections from. A test that stops a server and starts it again on
the same port (an outage test) could then find its port taken by some other test's client, and
with several pytest-xdist workers two workers could be handed the same port in turn. So ports
come from below the ephemeral range (which starts at 32768 on Linux), from a slice of their own
per xdist worker, and each is checked free with a bind before it is handed out.
"""

from __future__ import annotations

import os
import random
import socket

PORTS_LOW = 10_000  # below: well-known and registered services' ports
PORTS_HIGH = 32_000  # above: the kernel's ephemeral range (net.ipv4.ip_local_port_range)
WORKER_SLICES = 8  # xdist workers gw0..gw7 each get their own slice (more share slices)
ATTEMPTS_MAX = 200


def _slice() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    width = (PORTS_HIGH - PORTS_LOW) // WORKER_SLICES
    low = PORTS_LOW + (index % WORKER_SLICES) * width
    return range(low, low + width)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, from this worker's slice."""
    ports = _slice()
    for _ in range(ATTEMPTS_MAX):
        port = random.choice(ports)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports.start}..{ports.stop - 1} after {ATTEMPTS_MAX} tries")
