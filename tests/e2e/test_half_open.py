"""Black-box (issue 15): half-open connections — a partial request header, then nothing — no longer
exhaust `cashmarkets serve`'s file descriptors.

The server starts with a soft open-files limit of 512 and a hard one of 3,072, which it raises
its soft limit to. 2,000 half-open connections from 127.0.0.1 to the HTTP port, then 2,000 to the
WebSocket port, held together, would need more descriptors than that (the unchanged server, with
1,024, stopped answering `/health` at 1,000). Here the server holds at most 256 per address per
port and closes the rest at once; /health answers another address (127.0.0.2) meanwhile; the
header timeout (3 s here) closes the held ones; snapshots and chart rounds go on.

(The hard limit is above the HTTP port's listen backlog, 2,048: the event loop accepts a whole
queue of connections before any of them can be refused, so a limit below one queue can be
exhausted by a single burst whatever the per-address limit; the server warns about that.)
"""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.e2e.processes import Proc, free_port, wait_ready

CLIENT, OTHER = "127.0.0.1", "127.0.0.2"
HALF_OPEN = 2_000
HARD_LIMIT = 3_072
PER_IP = 256
HEADER_TIMEOUT_S = 3
PARTIAL = b"GET / HTTP/1.1\r\nHost: x\r\n"


def limit_open_files() -> None:  # in the child, before exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, HARD_LIMIT))


def half_open(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((CLIENT, 0))
        s.settimeout(5)
        s.connect((CLIENT, port))
        s.sendall(PARTIAL)
        s.setblocking(False)
        socks.append(s)
    return socks


def read_until_closed(socks: list[socket.socket], timeout_s: float) -> list[bytes | None]:
    """What each connection received before the server closed it; None: still open at the end."""
    got: list[bytes] = [b"" for _ in socks]
    done = [False] * len(socks)
    deadline = time.monotonic() + timeout_s
    while not all(done) and time.monotonic() < deadline:
        for i, s in enumerate(socks):
            while not done[i]:
                try:
                    chunk = s.recv(65536)
                except BlockingIOError:
                    break
                except OSError:  # reset
                    chunk = b""
                if chunk:
                    got[i] += chunk
                else:
                    done[i] = True
        time.sleep(0.1)
    return [g if d else None for g, d in zip(got, done, strict=True)]


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def store_count(store: Path, sql: str) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10)) as db:
        return int(db.execute(sql).fetchone()[0])


def newest_snapshot_seq(store: Path) -> int:
    return store_count(store, "SELECT coalesce(max(seq), 0) FROM engine_snapshots")


def chart_candles(store: Path) -> int:
    """Chart candles made by the rounds (engine), projected into the store (projector child)."""
    return store_count(store, "SELECT count(*) FROM chart_candles")


METRICS_TOKEN = "half-open-metrics"
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}


def progress(store: Path) -> Callable[[], bool]:
    """True once a newer snapshot and more chart candles than now are in the store."""
    snapshot_seq, candles = newest_snapshot_seq(store), chart_candles(store)
    return lambda: newest_snapshot_seq(store) > snapshot_seq and chart_candles(store) > candles


def until(check: Callable[[], bool], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition never met"
        time.sleep(0.1)


def test_half_open_connections_are_limited_per_address_and_timed_out(tmp_path: Path) -> None:
    port, ws_port = free_port(), free_port()
    data = tmp_path / "data"
    proc = Proc(
        ["serve", "--data-dir", str(data), "--port", str(port)],
        {
            "CASHMARKETS_WS_PORT": str(ws_port),
            "CASHMARKETS_CHARTGAME": "1",
            "CASHMARKETS_PRICE_SOURCE": "none",
            "CASHMARKETS_SNAPSHOT_INTERVAL_S": "0.5",
            "CASHMARKETS_HTTP_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
            "CASHMARKETS_HTTP_CONNECTIONS_PER_IP": str(PER_IP),
            "CASHMARKETS_FORWARDED_ALLOW_IPS": "127.0.0.254",  # 127.0.0.1 is a client, not a proxy
            "CASHMARKETS_METRICS_TOKEN": METRICS_TOKEN,  # /metrics on the HTTP port needs it
        },
        tmp_path / "serve.log",
        preexec_fn=limit_open_files,
    )
    socks: list[socket.socket] = []
    transport = httpx.HTTPTransport(local_address=OTHER)
    try:
        with httpx.Client(base_url=f"http://{CLIENT}:{port}", transport=transport, timeout=5) as other:
            wait_ready(proc, f"http://{CLIENT}:{port}")
            # The limit was raised to the hard limit, and logged once.
            limits = Path(f"/proc/{proc.proc.pid}/limits").read_text()
            assert [ln.split()[3:5] for ln in limits.splitlines() if ln.startswith("Max open files")] == [
                [str(HARD_LIMIT), str(HARD_LIMIT)]
            ]
            log_lines = proc.log_path.read_text().splitlines()
            logged = [json.loads(ln) for ln in log_lines if '"open files limit' in ln]
            assert [(e["event"], e["soft"]) for e in logged] == [
                ("open files limit", HARD_LIMIT),
                (
                    "open files limit below the listen backlog plus headroom: a burst of connections"
                    " can exhaust it",
                    HARD_LIMIT,
                ),
            ]
            assert (logged[0]["soft_before"], logged[0]["hard"], logged[1]["listen_backlog"]) == (
                512,
                HARD_LIMIT,
                2048 + 4096,
            )
            store = data / "store.db"
            until(lambda: chart_candles(store) > 0 and newest_snapshot_seq(store) > 0, 60)
            before = progress(store)

            for target in (port, ws_port):
                wave = half_open(target, HALF_OPEN)
                socks += wave
                # Another address is served while the wave is open...
                assert other.get("/health").json() == {"status": "ok"}
                text = other.get("/metrics", headers=METRICS_AUTH).text
                # ... and the server holds at most PER_IP of them (plus this client's).
                assert metric(text, "cashmarkets_http_connections ") <= PER_IP + 2
                # Snapshots and rounds go on.
                until(progress(store))

            # Everything is closed by the header timeout at the latest.
            received = read_until_closed(socks, HEADER_TIMEOUT_S + 30)
            assert received.count(None) == 0, f"{received.count(None)} connections still open"
            http_answers = received[:HALF_OPEN]
            refused = sum(1 for r in http_answers if r is not None and r.startswith(b"HTTP/1.1 503"))
            timed_out = sum(1 for r in http_answers if r is not None and r.startswith(b"HTTP/1.1 408"))
            # Each got one of two answers: 503 when it came (over the limit), or 408 when its
            # time was up (within the limit).
            assert refused + timed_out == HALF_OPEN and timed_out >= PER_IP and refused > 0
            text = other.get("/metrics", headers=METRICS_AUTH).text
            closed = 'cashmarkets_connections_closed_total{reason="%s",server="%s"}'
            assert metric(text, closed % ("per_ip_limit", "http")) == refused
            assert metric(text, closed % ("header_timeout", "http")) == timed_out
            ws_refused = metric(text, closed % ("per_ip_limit", "ws"))
            ws_timed_out = metric(text, closed % ("header_timeout", "ws"))
            assert ws_refused + ws_timed_out == HALF_OPEN and ws_timed_out >= PER_IP and ws_refused > 0

            assert other.get("/health").status_code == 200
            assert before()
            assert proc.alive()
        output = proc.log_path.read_text()
        assert "Too many open files" not in output and "snapshot failed" not in output, output[-4000:]
    finally:
        for s in socks:
            s.close()
        proc.stop()
