"""WebSocket fan-out: one topic, one message every `interval_ms`, N subscribers.

Servers (subprocesses, distributed mode on a scratch PostgreSQL database and Redis stream): one
`engine`, one `poller` (synthetic prices, one tick per symbol every `interval_ms`) and `gateways`
`cashmarkets gateway` processes sharing one port. The load client is this process: N picows
connections with the binary codec, each subscribed to `bookTicker.BTC_USDC_PERP` (a ~120-byte
message). A message's header carries the engine time of its tick (ms); latency is the client's
receive time minus that (same host clock), so it covers poller -> Redis -> replica -> fan-out ->
socket; the gateways' own fan-out time (their histogram, scraped from each one's /metrics) is
reported beside it, since the load client shares the host's cores and adds its own queueing.
Delivery: per connection, the messages received against the sequence numbers spanned
(a gap is a lost message); messages are counted from each connection's first message in the
measured window to its last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Final

import structlog
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from cashmarkets.benchmarks.http import (
    HOST,
    REDIS_URL,
    CpuSample,
    Server,
    _child_env,
    _cpu_report,
    _delete_stream,
    free_port,
    run_migrate,
)
from cashmarkets.gateway.protocol import HEADER, PROTOCOL_VERSION, MsgType, binary_frame
from cashmarkets.store import scratchdb

log = structlog.get_logger("cashmarkets.bench.ws")

TOPIC: Final = "bookTicker.BTC_USDC_PERP"
CONNECT_CONCURRENCY: Final = 256
LATENCY_BUCKETS_MS: Final = 10_000  # latencies above this are counted in the last bucket


class Subscriber(WSListener):
    """Counts what arrives; does nothing per message beyond unpacking the 14-byte header."""

    def __init__(self, stats: Stats) -> None:
        super().__init__()
        self.stats = stats
        self.first_seq = 0
        self.last_seq = 0
        self.received = 0
        self.subscribed = asyncio.get_running_loop().create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        transport.send(WSMsgType.BINARY, binary_frame(MsgType.SUBSCRIBE_ROUND, 0, 1, {"topic": TOPIC}))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.BINARY:
            return
        version, kind, ts_ms, seq = HEADER.unpack_from(frame.get_payload_as_memoryview())
        if kind == MsgType.RESULT and not self.subscribed.done():
            self.subscribed.set_result(None)
            return
        if kind != MsgType.STREAM_DATA or version != PROTOCOL_VERSION:
            return
        stats = self.stats
        if not stats.measuring:
            return
        if self.first_seq == 0:
            self.first_seq = seq
        self.last_seq = seq
        self.received += 1
        latency = time.time_ns() // 1_000_000 - ts_ms
        stats.latency[min(max(latency, 0), LATENCY_BUCKETS_MS - 1)] += 1

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.stats.measuring:
            self.stats.dropped += 1  # the server closed it mid-run (a slow consumer, say)


class Stats:
    def __init__(self) -> None:
        self.latency = [0] * LATENCY_BUCKETS_MS
        self.measuring = False
        self.dropped = 0

    def percentile_ms(self, q: float) -> int | None:
        total = sum(self.latency)
        if total == 0:
            return None
        rank = q * (total - 1)
        seen = 0
        for ms, count in enumerate(self.latency):
            seen += count
            if seen > rank:
                return ms
        return LATENCY_BUCKETS_MS - 1

    def max_ms(self) -> int | None:
        return max((ms for ms, c in enumerate(self.latency) if c), default=None)


def _raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def _start(
    tmp: Path, database: str, stream: str, gateways: int, interval_ms: int
) -> tuple[int, list[Server]]:
    database_url = await scratchdb.create_database(database)
    env = _child_env(
        {
            "CASHMARKETS_DATABASE_URL": database_url,
            "CASHMARKETS_REDIS_URL": REDIS_URL,
            "CASHMARKETS_REDIS_STREAM": stream,
            "CASHMARKETS_JWT_SECRET": "bench-secret-" + uuid.uuid4().hex + uuid.uuid4().hex,
            "CASHMARKETS_APIKEY_MASTER_KEY": uuid.uuid4().hex + uuid.uuid4().hex,
            "CASHMARKETS_DATA_DIR": str(tmp / "engine"),
            "CASHMARKETS_HOST": HOST,
            "CASHMARKETS_PRICE_SOURCE": "synthetic",
            "CASHMARKETS_PRICE_INTERVAL_MS": str(interval_ms),
            "CASHMARKETS_WS_CONNECTIONS_PER_IP": "1000000",
            "CASHMARKETS_LOG_LEVEL": "warning",
        }
    )
    await run_migrate(env)
    port = free_port()
    servers = [Server("engine", ["engine"], env, tmp), Server("poller", ["poller"], env, tmp)]
    servers += [
        Server(f"gateway{i}", ["gateway", "--port", str(port)], env, tmp, metrics_port=free_port())
        for i in range(gateways)
    ]
    return port, servers


async def _fanout_buckets(servers: list[Server]) -> dict[float, float]:
    """Cumulative counts of the gateways' fan-out histogram (summed over gateways), by bound."""
    import httpx

    counts: dict[float, float] = {}
    async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
        for server in servers:
            if server.metrics_port is None:
                continue
            text = (await client.get(f"http://{HOST}:{server.metrics_port}/metrics")).text
            for line in text.splitlines():
                if line.startswith("cashmarkets_ws_fanout_seconds_bucket{"):
                    bound = line.split('le="', 1)[1].split('"', 1)[0]
                    le = float("inf") if bound == "+Inf" else float(bound)
                    counts[le] = counts.get(le, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def _bucket_percentile_ms(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The upper bound (ms) of the histogram bucket holding the q-th fan-out of the window."""
    bounds = sorted(after)
    deltas = [after[b] - before.get(b, 0.0) for b in bounds]
    total = deltas[-1] if deltas else 0.0
    if total <= 0:
        return None
    for bound, cumulative in zip(bounds, deltas, strict=True):
        if cumulative >= q * total:
            return None if bound == float("inf") else round(bound * 1000, 3)
    return None


async def _connect_all(port: int, n: int, stats: Stats) -> list[tuple[WSTransport, Subscriber]]:
    url = f"ws://{HOST}:{port}/ws"
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one() -> tuple[WSTransport, Subscriber]:
        async with gate:
            transport, listener = await ws_connect(
                lambda: Subscriber(stats), url, websocket_handshake_timeout=30
            )
            assert isinstance(listener, Subscriber)
            await asyncio.wait_for(listener.subscribed, 30)
            return transport, listener

    return list(await asyncio.gather(*(one() for _ in range(n))))


C_CLIENT_SOURCE: Final = Path(__file__).resolve().parents[3] / "bench" / "c" / "wsload.c"


def build_c_client() -> Path | None:
    """Compile bench/c/wsload.c with the host's C compiler (cached by source hash); None if the
    source or a compiler is missing (the Python client is used then)."""
    import hashlib
    import shutil

    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or not C_CLIENT_SOURCE.is_file():
        return None
    digest = hashlib.sha256(C_CLIENT_SOURCE.read_bytes()).hexdigest()[:16]
    binary = Path(tempfile.gettempdir()) / f"cashmarkets-wsload-{digest}"
    if not binary.exists():
        partial = binary.with_suffix(f".{uuid.uuid4().hex}")
        subprocess.run([compiler, "-O2", "-o", str(partial), str(C_CLIENT_SOURCE)], check=True, timeout=120)
        partial.replace(binary)
    return binary


def _subscribe_frame_hex() -> str:
    """A client SUBSCRIBE_ROUND frame, masked with the all-zero key (the payload stays as is)."""
    payload = binary_frame(MsgType.SUBSCRIBE_ROUND, 0, 1, {"topic": TOPIC})
    assert len(payload) < 126
    return (bytes((0x82, 0x80 | len(payload))) + b"\0\0\0\0" + payload).hex()


async def _run_c_client(
    binary: Path, port: int, subscribers: int, warmup_s: float, duration_s: float, servers: list[Server]
) -> tuple[dict[str, Any], list[CpuSample], dict[float, float], dict[float, float]]:
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        str(port),
        str(subscribers),
        str(warmup_s),
        str(duration_s),
        _subscribe_frame_hex(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None and proc.stdout is not None
    line = await asyncio.wait_for(proc.stderr.readline(), 300)
    if line.strip() != b"connected":
        raise RuntimeError(f"wsload: {line.decode(errors='replace')}{(await proc.stderr.read()).decode()}")
    await asyncio.sleep(warmup_s)
    cpu = [CpuSample(servers)]
    before = await _fanout_buckets(servers)
    await asyncio.sleep(duration_s)
    cpu.append(CpuSample(servers))
    after = await _fanout_buckets(servers)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wsload exited {proc.returncode}: {err.decode(errors='replace')}")
    return json.loads(out), cpu, before, after


async def run(
    subscribers: int = 3_000,
    gateways: int = 1,
    duration_s: float = 10.0,
    warmup_s: float = 2.0,
    interval_ms: int = 65,
    client: str = "c",
) -> dict[str, Any]:
    if subscribers < 1 or gateways < 1 or duration_s <= 0 or warmup_s < 0 or interval_ms < 1:
        raise ValueError("subscribers, gateways >= 1; duration_s > 0; warmup_s >= 0; interval_ms >= 1")
    logging.getLogger("picows").setLevel(logging.WARNING)  # a line per connection otherwise
    fd_limit = _raise_fd_limit()  # the gateways inherit it
    if subscribers + 100 > fd_limit:
        raise ValueError(f"{subscribers} connections need more than this host's {fd_limit} open files")
    hexid = uuid.uuid4().hex
    database, stream = f"cm_bench_{hexid}", f"cashmarkets:bench:{hexid}"
    stats = Stats()
    servers: list[Server] = []
    connections: list[tuple[WSTransport, Subscriber]] = []
    with tempfile.TemporaryDirectory(prefix="cm-bench-ws-") as tmp_name:
        try:
            port, servers = await _start(Path(tmp_name), database, stream, gateways, interval_ms)
            await _wait_listening(port)
            c_binary = build_c_client() if client == "c" else None
            if c_binary is not None:
                figures, cpu, fanout_before, fanout_after = await _run_c_client(
                    c_binary, port, subscribers, warmup_s, duration_s, servers
                )
                client_name = "c (epoll, bench/c/wsload.c)"
            else:
                started = time.monotonic()
                connections = await _connect_all(port, subscribers, stats)
                connect_s = time.monotonic() - started
                log.info("subscribed", subscribers=subscribers, connect_s=round(connect_s, 1))
                await asyncio.sleep(warmup_s)
                cpu = [CpuSample(servers)]
                fanout_before = await _fanout_buckets(servers)
                stats.measuring = True
                await asyncio.sleep(duration_s)
                stats.measuring = False
                cpu.append(CpuSample(servers))
                fanout_after = await _fanout_buckets(servers)
                figures = {
                    "connect_s": round(connect_s, 2),
                    "messages_expected": sum(
                        sub.last_seq - sub.first_seq + 1 for _, sub in connections if sub.received
                    ),
                    "messages_delivered": sum(sub.received for _, sub in connections),
                    "connections_without_messages": sum(1 for _, sub in connections if not sub.received),
                    "disconnected_during_run": stats.dropped,
                    "p50_ms": stats.percentile_ms(0.5),
                    "p99_ms": stats.percentile_ms(0.99),
                    "max_ms": stats.max_ms(),
                }
                client_name = "python (picows, this process)"
            alive = {s.name: s.alive() for s in servers}
        except BaseException:
            for server in servers:
                sys.stderr.write(f"---- {server.name} output tail ----\n{server.tail()}\n")
            raise
        finally:
            for transport, _ in connections:
                transport.disconnect()
            for server in reversed(servers):
                server.stop()
            with contextlib.suppress(Exception):
                await _delete_stream(stream)
            with contextlib.suppress(Exception):
                await scratchdb.drop_database(database)
    delivered, spanned = figures["messages_delivered"], figures["messages_expected"]
    return {
        "bench": "ws_fanout",
        "client": client_name,
        "subscribers": subscribers,
        "gateways": gateways,
        "interval_ms": interval_ms,
        "duration_s": duration_s,
        "connect_s": figures["connect_s"],
        "messages_expected": spanned,
        "messages_delivered": delivered,
        "delivered_ratio": round(delivered / spanned, 6) if spanned else 0.0,
        "messages_per_s": round(delivered / duration_s, 1),
        "connections_without_messages": figures["connections_without_messages"],
        "disconnected_during_run": figures["disconnected_during_run"],
        "p50_ms": figures["p50_ms"],
        "p99_ms": figures["p99_ms"],
        "max_ms": figures["max_ms"],
        # Server side alone: one message handed to every subscriber of a gateway (histogram bucket
        # bounds, so "<= this many ms").
        "gateway_fanout_p50_ms_le": _bucket_percentile_ms(fanout_before, fanout_after, 0.5),
        "gateway_fanout_p99_ms_le": _bucket_percentile_ms(fanout_before, fanout_after, 0.99),
        **_cpu_report(cpu[0], cpu[1]),
        # The C client measures its own CPU over its window (it exits as the window ends).
        **({"client_cpu_percent": figures["client_cpu_percent"]} if "client_cpu_percent" in figures else {}),
        "servers_alive_at_end": alive,
    }


async def _wait_listening(port: int, timeout_s: float = 60.0) -> None:
    """Until a gateway accepts TCP connections on `port`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection(HOST, port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
