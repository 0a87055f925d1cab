"""Trades over HTTP: `POST /api/v1/trade/create` then `POST /api/v1/trade/close` round trips
against the real server processes (see `benchmarks.http` for how they are started), with the
synthetic price feed running at `ticks_per_s` ticks per second per symbol.

Two phases, each after the same warm-up:

- max: `connections` keep-alive connections, each running trades back to back (closed loop):
  the most trades/s the servers complete;
- paced: trades started on a fixed schedule at `paced_fraction` of the max rate (open loop:
  latency counts from the scheduled start, so a stall is not hidden by the client waiting).

A trade counts when both answers are 200 with the fields expected; anything else is an error.
The client is `benchmarks.rawhttp` (pre-encoded requests), in this process; the servers are
subprocesses. Latency is per HTTP request (create and close) and per trade (both).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from urllib.parse import urlsplit

import msgspec
import structlog

from cashmarkets.benchmarks.http import PASSWORD, CpuSample, _cpu_report, running_servers
from cashmarkets.benchmarks.rawhttp import Connection, HttpError, encode_request

log = structlog.get_logger("cashmarkets.bench.trading")

ASSETS = ("BTC", "ETH", "SOL")
SIGNUP_CONCURRENCY = 8


class _Opened(msgspec.Struct):
    orderId: int


class _Closed(msgspec.Struct):
    orderId: int
    pnl: int


_decode_opened = msgspec.json.Decoder(_Opened).decode
_decode_closed = msgspec.json.Decoder(_Closed).decode


def _percentiles(values_ns: list[int]) -> dict[str, float | None]:
    lat = sorted(values_ns)
    n = len(lat)

    def ms(i: int) -> float | None:
        return round(lat[i] / 1e6, 3) if n else None

    return {
        "p50_ms": ms(n // 2),
        "p90_ms": ms(min(n - 1, int(n * 0.9))),
        "p99_ms": ms(min(n - 1, int(n * 0.99))),
        "max_ms": ms(n - 1),
    }


class Phase:
    """Counters and latencies of one phase (only trades started in the measured window)."""

    def __init__(self) -> None:
        self.request_ns: list[int] = []
        self.trade_ns: list[int] = []
        self.errors = 0
        self.error_samples: list[str] = []

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what[:300])

    def report(self, elapsed_s: float) -> dict[str, object]:
        trades = len(self.trade_ns)
        return {
            "trades": trades,
            "trades_per_s": round(trades / elapsed_s, 1) if elapsed_s > 0 else 0.0,
            "requests_per_s": round(len(self.request_ns) / elapsed_s, 1) if elapsed_s > 0 else 0.0,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "request": _percentiles(self.request_ns),
            "trade": _percentiles(self.trade_ns),
        }


class Trader:
    """One connection and one user: runs one trade at a time."""

    def __init__(self, url: str, token: str, seed: int) -> None:
        parts = urlsplit(url)
        self.host = f"{parts.hostname}:{parts.port}"
        self.conn = Connection(str(parts.hostname), int(parts.port or 80))
        self.auth = {"Authorization": f"Bearer {token}"}
        rng = random.Random(seed)
        # A few pre-encoded opens per trader (different assets and sides); closes are encoded per trade.
        self.opens = [
            encode_request(
                "POST",
                "/api/v1/trade/create",
                self.host,
                self.auth,
                json.dumps(
                    {
                        "asset": rng.choice(ASSETS),
                        "type": rng.choice(("long", "short")),
                        "margin": 100,
                        "leverage": rng.randint(1, 10),
                    }
                ).encode(),
            )
            for _ in range(8)
        ]
        self.n = seed

    async def trade(self, phase: Phase | None, started_ns: int) -> None:
        """create + close; records into `phase` when given (None: warm-up)."""
        clock = time.perf_counter_ns
        self.n += 1
        t0 = clock()
        try:
            status, body = await self.conn.request(self.opens[self.n % len(self.opens)])
            t1 = clock()
            if status != 200:
                if phase is not None:
                    phase.error(f"create {status} {body[:200]!r}")
                return
            order_id = _decode_opened(body).orderId
            close = encode_request(
                "POST", "/api/v1/trade/close", self.host, self.auth, b'{"orderId":%d}' % order_id
            )
            status, body = await self.conn.request(close)
            t2 = clock()
            if status != 200:
                if phase is not None:
                    phase.error(f"close {status} {body[:200]!r}")
                return
            _decode_closed(body)
        except (HttpError, msgspec.DecodeError) as exc:
            if phase is not None:
                phase.error(f"{type(exc).__name__}: {exc}")
            return
        if phase is not None:
            phase.request_ns.append(t1 - t0)
            phase.request_ns.append(t2 - t1)
            phase.trade_ns.append(t2 - started_ns)


async def _signup(urls: list[str], n: int) -> list[str]:
    import httpx

    tag = uuid.uuid4().hex[:12]
    gate = asyncio.Semaphore(SIGNUP_CONCURRENCY)
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:

        async def one(i: int) -> str:
            async with gate:
                r = await client.post(
                    f"{urls[i % len(urls)]}/api/v1/signup",
                    json={"email": f"trader-{tag}-{i}@example.com", "password": PASSWORD},
                )
            if r.status_code != 201:
                raise RuntimeError(f"signup {i} failed: {r.status_code} {r.text[:300]}")
            return str(r.json()["token"])

        return list(await asyncio.gather(*(one(i) for i in range(n))))


async def _max_phase(traders: list[Trader], warmup_s: float, duration_s: float) -> tuple[Phase, float]:
    clock = time.perf_counter_ns
    phase = Phase()
    measure_ns = clock() + int(warmup_s * 1e9)
    end_ns = measure_ns + int(duration_s * 1e9)

    async def loop(trader: Trader) -> None:
        while (now := clock()) < end_ns:
            await trader.trade(phase if now >= measure_ns else None, now)

    await asyncio.gather(*(loop(t) for t in traders))
    return phase, (clock() - measure_ns) / 1e9


async def _paced_phase(
    traders: list[Trader], rate_per_s: float, warmup_s: float, duration_s: float
) -> tuple[Phase, float]:
    """Start trades every 1/rate s on whichever connection is free; a trade that finds none
    waits for one, and its latency includes that wait (measured from its scheduled start)."""
    clock = time.perf_counter_ns
    phase = Phase()
    idle: asyncio.Queue[Trader] = asyncio.Queue()
    for trader in traders:
        idle.put_nowait(trader)
    interval_ns = int(1e9 / rate_per_s)
    start_ns = clock()
    measure_ns = start_ns + int(warmup_s * 1e9)
    end_ns = measure_ns + int(duration_s * 1e9)
    tasks: set[asyncio.Task[None]] = set()

    async def run_one(scheduled_ns: int) -> None:
        trader = await idle.get()
        try:
            await trader.trade(phase if scheduled_ns >= measure_ns else None, scheduled_ns)
        finally:
            idle.put_nowait(trader)

    scheduled_ns = start_ns
    while scheduled_ns < end_ns:
        delay_ns = scheduled_ns - clock()
        if delay_ns > 0:
            await asyncio.sleep(delay_ns / 1e9)
        task = asyncio.create_task(run_one(scheduled_ns))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        scheduled_ns += interval_ns
    if tasks:
        await asyncio.gather(*tasks)
    return phase, duration_s


async def run(
    mode: str = "embedded",
    duration_s: float = 10.0,
    connections: int = 32,
    warmup_s: float = 2.0,
    paced_fraction: float = 0.5,
    ticks_per_s: float = 10.0,
) -> dict[str, object]:
    if mode not in ("embedded", "distributed"):
        raise ValueError("mode must be embedded or distributed")
    if connections < 1 or duration_s <= 0 or warmup_s < 0 or not 0 < paced_fraction <= 1 or ticks_per_s <= 0:
        raise ValueError(
            "connections >= 1, duration_s > 0, warmup_s >= 0, 0 < paced_fraction <= 1, ticks > 0"
        )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    feed_env = {
        "CASHMARKETS_PRICE_SOURCE": "synthetic",
        "CASHMARKETS_PRICE_INTERVAL_MS": str(max(1, round(1000 / ticks_per_s))),
    }
    token_ttl_s = max(900, int(3 * (warmup_s + duration_s)) + 600)
    async with running_servers(mode, token_ttl_s, feed_env, poller=True) as (urls, setup, servers):
        tokens = await _signup(urls, connections)
        traders = [Trader(urls[i % len(urls)], token, i) for i, token in enumerate(tokens)]
        try:
            cpu_max = [CpuSample(servers)]
            log.info("max phase", connections=connections, duration_s=duration_s)
            maxed, max_elapsed_s = await _max_phase(traders, warmup_s, duration_s)
            cpu_max.append(CpuSample(servers))
            max_rate = len(maxed.trade_ns) / max_elapsed_s if max_elapsed_s > 0 else 0.0
            paced_rate = max(1.0, max_rate * paced_fraction)
            log.info("paced phase", trades_per_s=round(paced_rate, 1), duration_s=duration_s)
            cpu_paced = [CpuSample(servers)]
            paced, paced_elapsed_s = await _paced_phase(traders, paced_rate, warmup_s, duration_s)
            cpu_paced.append(CpuSample(servers))
        finally:
            for trader in traders:
                await trader.conn.close()
        alive = {s.name: s.alive() for s in servers}
    return {
        "bench": "leverage_http",
        "mode": mode,
        "client": "rawhttp (asyncio, keep-alive, in the bench process)",
        "connections": connections,
        "ticks_per_s_per_symbol": ticks_per_s,
        "warmup_s": warmup_s,
        "duration_s": duration_s,
        "trades_per_s": round(max_rate, 1),
        "commands_per_s": round(2 * max_rate, 1),
        "max": {**maxed.report(max_elapsed_s), **_cpu_report(cpu_max[0], cpu_max[1])},
        "paced": {
            "target_trades_per_s": round(paced_rate, 1),
            **paced.report(paced_elapsed_s),
            **_cpu_report(cpu_paced[0], cpu_paced[1]),
        },
        "server": {**setup, "pids": {s.name: s.pid for s in servers}, "alive_at_end": alive},
    }
