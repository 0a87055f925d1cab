"""Half-open connections against a real `cashmarkets serve`: how many it takes to stop `/health`.

The bench starts one `cashmarkets serve` (temporary data directory, the chart game and the market
maker on, as in `make run`) with the open-files limit given (soft, hard: what the process starts
with; the server may raise its soft limit itself), and stops it (by its pid) at the end.

Then, from `sources` loopback addresses (127.0.0.1, or 127.0.1.1 … 127.0.1.N round-robin), it
opens up to `connections` TCP connections to the HTTP port (or the WebSocket port with
`target="ws"`), each sending `GET / HTTP/1.1\\r\\nHost: x\\r\\n` and nothing more, `step` at a time.
After each step it asks `/health` from 127.0.0.2 (a fresh connection, 2 s to answer). It reports:

- `health_failed_at`: half-open connections open (by this client) when `/health` first did not
  answer 200 in time, or null;
- `health_ok_at_max`: whether `/health` answered once all connections were opened;
- `closed_at_once`: of those, how many the server had closed 0.5 s after the last one opened;
- `open_after_wait` / `all_closed_after_s`: then, how many are still open after `wait_s` seconds,
  and when the last one was closed (null if some are still open).

Every address is on 127.0.0.0/8: nothing leaves the host. Linux only (/proc, RLIMIT_NOFILE).
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
PROBE_SOURCE = "127.0.0.2"
PARTIAL_HEADER = b"GET / HTTP/1.1\r\nHost: x\r\n"
CONNECT_TIMEOUT_S = 2.0
HEALTH_TIMEOUT_S = 2.0
READY_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def source_addresses(sources: int) -> list[str]:
    if sources <= 1:
        return [HOST]
    return [f"127.0.1.{i}" for i in range(1, sources + 1)]


def health(port: int, source: str = PROBE_SOURCE, timeout_s: float = HEALTH_TIMEOUT_S) -> bool:
    """GET /health on a new connection from `source`: True if 200 came back within the time."""
    deadline = time.monotonic() + timeout_s
    try:
        with socket.socket() as s:
            s.bind((source, 0))
            s.settimeout(timeout_s)
            s.connect((HOST, port))
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while b"\r\n" not in data:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def half_open(port: int, source: str) -> socket.socket | None:
    """A connection that sends part of a request header and nothing more (None: connect failed)."""
    s = socket.socket()
    try:
        s.bind((source, 0))
        s.settimeout(CONNECT_TIMEOUT_S)
        s.connect((HOST, port))
        s.sendall(PARTIAL_HEADER)
        s.setblocking(False)
        return s
    except OSError:
        s.close()
        return None


def closed_by_peer(socks: list[socket.socket]) -> list[bool]:
    """Which of these connections the server has closed (EOF or reset), without blocking."""
    poller = select.poll()
    index = {}
    for i, s in enumerate(socks):
        poller.register(s.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
        index[s.fileno()] = i
    closed = [False] * len(socks)
    for fd, _events in poller.poll(0):
        s = socks[index[fd]]
        try:
            closed[index[fd]] = s.recv(4096, socket.MSG_PEEK) == b"" or _drained_to_eof(s)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            closed[index[fd]] = True
    return closed


def _drained_to_eof(s: socket.socket) -> bool:
    """Data came first (e.g. a 408 or 503 answer): read it; closed if EOF follows."""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return True
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def server_limits(pid: int) -> tuple[int, int] | None:
    """(soft, hard) 'Max open files' of a running process, from /proc."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                parts = line.split()
                return int(parts[3]), int(parts[4])
    return None


def open_fds(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return None


def run(
    *,
    connections: int = 2_000,
    step: int = 100,
    sources: int = 1,
    soft_limit: int = 1_024,
    hard_limit: int | None = None,
    target: str = "http",
    wait_s: float = 15.0,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1] if hard_limit is None else hard_limit
    soft = min(soft_limit, hard)

    def limit_fds() -> None:  # pragma: no cover - runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    port, ws_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="cm-bench-half-open-") as tmp:
        log_path = Path(tmp) / "serve.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cashmarkets.cli", "serve", "--data-dir", f"{tmp}/data"],
                env={
                    **os.environ,
                    "CASHMARKETS_PORT": str(port),
                    "CASHMARKETS_WS_PORT": str(ws_port),
                    # 127.0.0.1 is a client here, not a trusted proxy.
                    "CASHMARKETS_FORWARDED_ALLOW_IPS": "127.0.0.254",
                    **(env or {}),
                },
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=limit_fds,
            )
        socks: list[socket.socket] = []
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not health(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.2)
            limits = server_limits(proc.pid)
            fds_before = open_fds(proc.pid)
            addresses = source_addresses(sources)
            attack_port = port if target == "http" else ws_port
            health_failed_at = None
            connect_failures = 0
            while len(socks) < connections and connect_failures < 3:
                for _ in range(min(step, connections - len(socks))):
                    s = half_open(attack_port, addresses[len(socks) % len(addresses)])
                    if s is None:
                        connect_failures += 1
                        if connect_failures >= 3:
                            break
                    else:
                        socks.append(s)
                if health_failed_at is None and not health(port):
                    health_failed_at = len(socks)
            opened_at = time.monotonic()
            health_ok_at_max = health(port)
            fds_at_max = open_fds(proc.pid)
            time.sleep(max(0.0, opened_at + 0.5 - time.monotonic()))
            closed = closed_by_peer(socks)
            closed_at_once = sum(closed)
            all_closed_after_s = None
            end = opened_at + wait_s
            while time.monotonic() < end:
                closed = [c or now for c, now in zip(closed, closed_by_peer(socks), strict=True)]
                if all(closed):
                    all_closed_after_s = round(time.monotonic() - opened_at, 2)
                    break
                time.sleep(0.1)
            health_ok_after_wait = health(port)
            log_text = log_path.read_text(errors="replace")
            return {
                "bench": "half_open",
                "target": target,
                "connections_opened": len(socks),
                "connect_failures": connect_failures,
                "sources": len(addresses),
                "start_open_files_limit": [soft, hard],
                "server_open_files_limit": list(limits) if limits else None,
                "server_fds_before": fds_before,
                "server_fds_at_max": fds_at_max,
                "health_failed_at": health_failed_at,
                "health_ok_at_max": health_ok_at_max,
                "closed_at_once": closed_at_once,
                "open_after_wait": len(closed) - sum(closed),
                "all_closed_after_s": all_closed_after_s,
                "wait_s": wait_s,
                "health_ok_after_wait": health_ok_after_wait,
                "server_alive": proc.poll() is None,
                "too_many_open_files_logged": log_text.count("Too many open files"),
                "snapshot_failures_logged": log_text.count("snapshot failed"),
            }
        finally:
            for s in socks:
                s.close()
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
