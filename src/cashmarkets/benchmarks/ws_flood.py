"""One user floods socket commands; another user's HTTP latency, idle and under that flood.

The server is the real embedded one (`cashmarkets serve`, SQLite journal and store in a temporary
directory; see `benchmarks.http`), with the default per-user rate limit (50/s, burst 100); the
per-IP limit is raised out of the way because every client here is 127.0.0.1.

- victim: one user, one keep-alive HTTP connection (`benchmarks.rawhttp`, in this process), paced
  at `victim_rate` iterations/s, each `GET /api/v1/balance`, `POST /api/v1/trade/create`,
  `POST /api/v1/trade/close` (3 requests, under the user's own limit). Latency is per request,
  from its send to its answer. Measured idle for `duration_s`, then again under the flood.
- flood: another user, in a child process (so that its CPU does not queue the victim's client
  loop): `sockets` WebSocket connections (the `websockets` library, binary codec), each keeping
  `in_flight` OPEN_POSITION commands outstanding and sending the next one as soon as any answer
  arrives, whatever it is (a hostile client: it ignores `retryAfterMs`). Answers are counted by
  kind over the measured window.

Engine commands from the flood are the server's own count (`cashmarkets_commands_total` of
OpenPosition, scraped from /metrics, minus the victim's opens). The goal is the victim's p99
under the flood within 2x of its idle p99. Client and server share the host's cores.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import re
import time
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec
import structlog

from cashmarkets.benchmarks.http import (
    PASSWORD,
    CpuSample,
    Server,
    _cpu_report,
    _proc_cpu_s,
    running_servers,
)
from cashmarkets.benchmarks.rawhttp import Connection, HttpError, encode_request
from cashmarkets.gateway.protocol import HEADER, PROTOCOL_VERSION, MsgType

log = structlog.get_logger("cashmarkets.bench.ws_flood")

HUGE: Final = "10000000"
# The shipped per-user limit (Settings' defaults), explicit: `running_servers` raises every limit.
LIMITS_ENV: Final = {
    "CASHMARKETS_RATE_LIMIT_USER_PER_S": "50",
    "CASHMARKETS_RATE_LIMIT_USER_BURST": "100",
    "CASHMARKETS_RATE_LIMIT_IP_PER_S": HUGE,
    "CASHMARKETS_RATE_LIMIT_IP_BURST": HUGE,
    "CASHMARKETS_WS_CONNECTIONS_PER_USER": "64",
}
FLOOD_ORDER: Final = {"asset": "BTC", "type": "long", "margin": 100, "leverage": 2}  # 1 USDC
VICTIM_ORDER: Final = b'{"asset":"ETH","type":"long","margin":100,"leverage":2}'
READY_TIMEOUT_S: Final = 60.0
_OPENED = msgspec.json.Decoder(dict[str, Any])


# ---- the flood (a child process) --------------------------------------------------------------


def _reply_kind(message: bytes) -> str:
    """opened | rejected:<reason> (the engine or the API refused) | error:<code>[:<reason>]."""
    msg_type = message[1]
    if msg_type == MsgType.POSITION_UPDATE:
        return "opened"
    body = msgspec.msgpack.decode(message[HEADER.size :])
    code = body.get("code") if isinstance(body, dict) else None
    reason = body.get("reason", "") if isinstance(body, dict) else ""
    if code == 9:
        return f"rejected:{reason}"
    return f"error:{code}" + (f":{reason}" if reason else "")


async def _flood(url: str, sockets: int, in_flight: int, pipe: Pipe) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    counts: dict[str, int] = {}
    closed: list[str] = []
    payload = msgspec.msgpack.encode(FLOOD_ORDER)
    stop = asyncio.Event()

    def frame(sequence: int) -> bytes:
        return HEADER.pack(PROTOCOL_VERSION, MsgType.OPEN_POSITION, 0, sequence & 0xFFFFFFFF) + payload

    async def one(ws: Any) -> None:
        sequence = 0
        try:
            for _ in range(in_flight):
                sequence += 1
                await ws.send(frame(sequence))
            async for message in ws:
                kind = _reply_kind(message) if isinstance(message, bytes) else "text"
                counts[kind] = counts.get(kind, 0) + 1
                if stop.is_set():
                    return
                sequence += 1
                await ws.send(frame(sequence))
        except ConnectionClosed as exc:
            closed.append(f"{exc.rcvd.code if exc.rcvd else '?'} {exc.rcvd.reason if exc.rcvd else ''}")

    conns = [await connect(url, max_size=2**20, open_timeout=30, ping_interval=None) for _ in range(sockets)]
    tasks = [asyncio.create_task(one(ws)) for ws in conns]
    loop = asyncio.get_running_loop()
    pipe.send("ready")
    marks: list[tuple[float, dict[str, int]]] = []
    while True:
        order = await loop.run_in_executor(None, pipe.recv)
        marks.append((time.perf_counter(), dict(counts)))
        if order == "stop":
            break
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.gather(*(asyncio.wait_for(ws.close(), 2) for ws in conns), return_exceptions=True)
    (t0, before), (t1, after) = marks[0], marks[-1]
    window = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    pipe.send({"elapsed_s": t1 - t0, "counts": window, "closed": closed})


def _flood_main(url: str, sockets: int, in_flight: int, pipe: Pipe) -> None:
    logging.disable(logging.CRITICAL)  # stdout is the parent's JSON; nothing of ours goes there
    try:
        import uvloop

        uvloop.run(_flood(url, sockets, in_flight, pipe))
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(_flood(url, sockets, in_flight, pipe))


# ---- the victim -------------------------------------------------------------------------------


class Latencies:
    def __init__(self) -> None:
        self.by_kind: dict[str, list[int]] = {"balance": [], "create": [], "close": []}
        self.errors = 0
        self.error_samples: list[str] = []
        self.opens = 0

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what[:300])

    def report(self) -> dict[str, Any]:
        every = [v for values in self.by_kind.values() for v in values]
        return {
            **_percentiles(every),
            "errors": self.errors,
            "error_samples": self.error_samples,
            **{kind: _percentiles(values) for kind, values in self.by_kind.items()},
        }


def _percentiles(values_ns: list[int]) -> dict[str, Any]:
    lat = sorted(values_ns)
    n = len(lat)

    def ms(i: int) -> float | None:
        return round(lat[i] / 1e6, 3) if n else None

    return {
        "requests": n,
        "p50_ms": ms(n // 2),
        "p90_ms": ms(min(n - 1, int(n * 0.9))),
        "p99_ms": ms(min(n - 1, int(n * 0.99))),
        "max_ms": ms(n - 1),
    }


class Victim:
    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.host = f"{parts.hostname}:{parts.port}"
        self.conn = Connection(str(parts.hostname), int(parts.port or 80))
        self.auth = {"Authorization": f"Bearer {token}"}
        self.balance = encode_request("GET", "/api/v1/balance", self.host, self.auth)
        self.create = encode_request("POST", "/api/v1/trade/create", self.host, self.auth, VICTIM_ORDER)

    async def _timed(self, into: Latencies | None, kind: str, request: bytes) -> bytes | None:
        t0 = time.perf_counter_ns()
        try:
            status, body = await self.conn.request(request)
        except HttpError as exc:
            if into is not None:
                into.error(f"{kind}: {exc}")
            return None
        if into is not None:
            into.by_kind[kind].append(time.perf_counter_ns() - t0)
            if status != 200:
                into.error(f"{kind} {status} {body[:200]!r}")
        return body if status == 200 else None

    async def iteration(self, into: Latencies | None) -> None:
        await self._timed(into, "balance", self.balance)
        opened = await self._timed(into, "create", self.create)
        if into is not None:
            into.opens += 1
        if opened is None:
            return
        order_id = int(_OPENED.decode(opened)["orderId"])
        close = encode_request(
            "POST", "/api/v1/trade/close", self.host, self.auth, b'{"orderId":%d}' % order_id
        )
        await self._timed(into, "close", close)

    async def paced(self, rate_per_s: float, duration_s: float, measured: bool) -> Latencies:
        """Iterations every 1/rate s; after one that ran late, the next starts at once, but
        missed slots are dropped, not caught up (a burst would run into the user's own limit)."""
        stats = Latencies()
        interval = 1.0 / rate_per_s
        start = time.perf_counter()
        end = start + duration_s
        scheduled = start
        while scheduled < end:
            now = time.perf_counter()
            if scheduled > now:
                await asyncio.sleep(scheduled - now)
            await self.iteration(stats if measured else None)
            scheduled = max(scheduled + interval, time.perf_counter() - interval)
        return stats


# ---- the server side --------------------------------------------------------------------------

_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\} ([0-9.e+-]+)$")


async def _scrape(url: str) -> dict[str, float]:
    """{"opens": OpenPosition commands applied (accepted + rejected), "rate_limited": all kinds}."""
    import httpx

    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        text = (await client.get(f"{url}/metrics")).text
    out = {"opens": 0.0, "rate_limited": 0.0}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None:
            continue
        name, labels, value = m.groups()
        if name == "cashmarkets_commands_total" and 'type="OpenPosition"' in labels:
            out["opens"] += float(value)
        elif name == "cashmarkets_rate_limited_total":
            out["rate_limited"] += float(value)
    return out


def _journal_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.glob("journal.db*") if p.is_file())


async def _signup(url: str, who: str) -> str:
    import httpx

    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        email = f"{who}-{time.time_ns()}@example.com"
        r = await client.post(f"{url}/api/v1/signup", json={"email": email, "password": PASSWORD})
        if r.status_code != 201:
            raise RuntimeError(f"signup failed: {r.status_code} {r.text[:300]}")
        return str(r.json()["token"])


async def _ws_url(url: str) -> str:
    import httpx

    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        return str((await client.get(f"{url}/api/v1/info")).json()["websocket"]["url"])


async def _wait_for(pipe: Pipe, process: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while not pipe.poll(0):
        if not process.is_alive():
            raise RuntimeError(f"the flood process exited (code {process.exitcode})")
        if time.monotonic() > deadline:
            raise RuntimeError("the flood process did not answer in time")
        await asyncio.sleep(0.05)
    return pipe.recv()


def _per_s(count: float, elapsed_s: float) -> float:
    return round(count / elapsed_s, 1) if elapsed_s > 0 else 0.0


async def run(
    duration_s: float = 12.0,
    warmup_s: float = 2.0,
    sockets: int = 16,
    in_flight: int = 16,
    victim_rate: float = 10.0,
) -> dict[str, object]:
    if duration_s <= 0 or warmup_s < 0 or sockets < 1 or in_flight < 1 or victim_rate <= 0:
        raise ValueError("duration_s > 0, warmup_s >= 0, sockets >= 1, in_flight >= 1, victim_rate > 0")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    token_ttl_s = max(900, int(3 * (warmup_s + duration_s)) + 600)
    async with running_servers("embedded", token_ttl_s, LIMITS_ENV) as (urls, setup, servers):
        url = urls[0]
        serve: Server = servers[0]
        data_dir = serve.log_path.parent / "data"
        victim = Victim(url, await _signup(url, "victim"))
        flood_token = await _signup(url, "flood")
        ws_url = f"{await _ws_url(url)}?token={flood_token}&codec=binary"
        try:
            await victim.paced(victim_rate, max(warmup_s, 0.5), measured=False)
            log.info("idle phase", duration_s=duration_s)
            cpu_idle = [CpuSample(servers)]
            idle = await victim.paced(victim_rate, duration_s, measured=True)
            cpu_idle.append(CpuSample(servers))

            ctx = multiprocessing.get_context("spawn")
            ours, theirs = ctx.Pipe()
            flood = ctx.Process(target=_flood_main, args=(ws_url, sockets, in_flight, theirs), daemon=True)
            flood.start()
            try:
                assert await _wait_for(ours, flood, READY_TIMEOUT_S) == "ready"
                log.info("flood running", sockets=sockets, in_flight=in_flight, pid=flood.pid)
                await victim.paced(victim_rate, max(warmup_s, 0.2), measured=False)
                ours.send("mark")
                server_before = await _scrape(url)
                journal_before = _journal_bytes(data_dir)
                flood_cpu_before = _proc_cpu_s(flood.pid or 0)
                cpu_loaded = [CpuSample(servers)]
                loaded = await victim.paced(victim_rate, duration_s, measured=True)
                cpu_loaded.append(CpuSample(servers))
                flood_cpu_after = _proc_cpu_s(flood.pid or 0)
                server_after = await _scrape(url)
                journal_after = _journal_bytes(data_dir)
                ours.send("stop")
                flood_result = await _wait_for(ours, flood, 30)
            finally:
                flood.join(10)
                if flood.is_alive():
                    flood.kill()
                    flood.join(5)
        finally:
            await victim.conn.close()
        alive = {s.name: s.alive() for s in servers}

    elapsed = float(flood_result["elapsed_s"])
    counts: dict[str, int] = flood_result["counts"]
    replies = sum(counts.values())
    rejected = sum(n for k, n in counts.items() if k.startswith("rejected:"))
    rate_limited = sum(n for k, n in counts.items() if "rate_limited" in k)
    in_flight_refused = sum(n for k, n in counts.items() if k.startswith("error:4"))
    engine_opens = server_after["opens"] - server_before["opens"] - loaded.opens
    idle_report, loaded_report = idle.report(), loaded.report()
    p99_ratio = (
        round(loaded_report["p99_ms"] / idle_report["p99_ms"], 2)
        if idle_report["p99_ms"] and loaded_report["p99_ms"]
        else None
    )
    p50_ratio = (
        round(loaded_report["p50_ms"] / idle_report["p50_ms"], 2)
        if idle_report["p50_ms"] and loaded_report["p50_ms"]
        else None
    )
    flood_cpu = (
        round(100 * (flood_cpu_after - flood_cpu_before) / elapsed, 1)
        if flood_cpu_before is not None and flood_cpu_after is not None and elapsed > 0
        else None
    )
    return {
        "bench": "ws_flood",
        "mode": "embedded",
        "sockets": sockets,
        "in_flight_per_socket": in_flight,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "victim_iterations_per_s": victim_rate,
        "limits": {k.removeprefix("CASHMARKETS_").lower(): v for k, v in LIMITS_ENV.items()},
        "flood_engine_commands_per_s": _per_s(engine_opens, elapsed),
        "flood_replies_per_s": _per_s(replies, elapsed),
        "flood_opened_per_s": _per_s(counts.get("opened", 0), elapsed),
        "flood_engine_rejected_per_s": _per_s(rejected, elapsed),
        "flood_rate_limited_per_s": _per_s(rate_limited, elapsed),
        "flood_in_flight_refused_per_s": _per_s(in_flight_refused, elapsed),
        "flood_replies": dict(sorted(counts.items())),
        "flood_connections_closed": flood_result["closed"],
        "server_rate_limited_per_s": _per_s(
            server_after["rate_limited"] - server_before["rate_limited"], elapsed
        ),
        "journal_bytes_per_s": _per_s(journal_after - journal_before, elapsed),
        "victim_idle": idle_report,
        "victim_loaded": loaded_report,
        "victim_p50_ratio": p50_ratio,
        "victim_p99_ratio": p99_ratio,
        "goal_p99_within_2x": p99_ratio is not None and p99_ratio <= 2.0,
        "cpu_idle": _cpu_report(cpu_idle[0], cpu_idle[1]),
        "cpu_loaded": {**_cpu_report(cpu_loaded[0], cpu_loaded[1]), "flood_client_cpu_percent": flood_cpu},
        "server": {**setup, "pids": {s.name: s.pid for s in servers}, "alive_at_end": alive},
    }
