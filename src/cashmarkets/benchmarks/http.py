"""End-to-end HTTP requests/s and latency against the real server processes, on loopback.

The bench starts the servers itself, as subprocesses of this one, and stops them (by the pids it
started) when done, on errors too:

- embedded: one `cashmarkets serve` (SQLite journal and store in a temporary directory);
- distributed: a fresh PostgreSQL database `cm_bench_<hex>` and Redis stream
  `cashmarkets:bench:<hex>` (both removed at the end), `cashmarkets migrate`, then one `engine`,
  one `projector` and two `api` processes; the client spreads its connections over both APIs.

Rate limits are raised out of the way (the bench measures the request path, not the limiter).
The client runs here: it signs up `users` users, then `connections` asyncio workers, each with a
keep-alive HTTP/1.1 connection (httpx), pick a random user per request and alternate
`POST /api/v1/faucet` (a durable engine command) and `GET /api/v1/balance` (a read), 50/50.
The first `warmup_s` seconds are not measured; then requests that start within `duration_s` are.
Every measured request counts, errors included: a non-2xx answer or a transport exception is an
error (no retries), and its latency is in the percentiles like any other.

CPU: utime+stime of every server process with its children (serve's projector) and of this client
process over the measured window,
in percent of one core (like `ps`/`top`), plus the whole host's busy share, from /proc (Linux).
Client and servers share the host's cores: read the figures with `host_cpus` in mind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import structlog

from cashmarkets.store import scratchdb

log = structlog.get_logger("cashmarkets.bench.http")

HOST = "127.0.0.1"
REDIS_URL = "redis://127.0.0.1:6379/0"
PASSWORD = "correct horse battery"
FAUCET_BODY = {"asset": "USDC", "amount": "1"}
HUGE = "10000000"
RATE_LIMIT_ENV = {
    "CASHMARKETS_RATE_LIMIT_IP_BURST": HUGE,
    "CASHMARKETS_RATE_LIMIT_IP_PER_S": HUGE,
    "CASHMARKETS_RATE_LIMIT_USER_BURST": HUGE,
    "CASHMARKETS_RATE_LIMIT_USER_PER_S": HUGE,
    "CASHMARKETS_FAUCET_DAILY_MAX": "USDC=1000000000,BTC=1000000,ETH=1000000,SOL=1000000",
}
READY_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
SIGNUP_CONCURRENCY = 8
KINDS = ("faucet", "balance")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the server gets SIGTERM if this process dies without stopping it (e.g. SIGKILL)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Server:
    """One `python -m cashmarkets.cli …` subprocess; its output goes to a file in the bench's
    temporary directory (its tail is printed on stderr when the bench fails)."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        log_dir: Path,
        *,
        metrics_port: int | None = None,
    ) -> None:
        self.name = name
        self.metrics_port = metrics_port  # where its /metrics is served, if anywhere
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        if metrics_port is not None:
            env = {**env, "CASHMARKETS_METRICS_PORT": str(metrics_port)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cashmarkets.cli", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> int:
        """SIGTERM this pid, wait, then SIGKILL it if it has not exited."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("server did not stop; killing", server=self.name, pid=self.pid)
            sys.stderr.write(f"---- {self.name} (pid {self.pid}) output tail ----\n{self.tail()}\n")
            self.proc.kill()
            code = self.proc.wait(timeout=10)
        self._log.close()
        return code


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without any CASHMARKETS_* setting (the bench decides them all), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASHMARKETS_")}
    return {**env, **extra}


async def _wait_ready(server: Server, url: str) -> None:
    import httpx

    deadline = time.monotonic() + READY_TIMEOUT_S
    async with httpx.AsyncClient(timeout=2, trust_env=False) as client:
        while time.monotonic() < deadline:
            if not server.alive():
                raise RuntimeError(f"{server.name} exited early (code {server.proc.returncode})")
            try:
                if (await client.get(f"{url}/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{server.name} at {url} not ready within {READY_TIMEOUT_S} s")


# ---- PostgreSQL and Redis for distributed mode ------------------------------------------------


async def _delete_stream(stream: str) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await client.delete(stream)
    finally:
        await client.aclose()


# ---- CPU accounting (Linux /proc) -------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu_s(pid: int) -> float | None:
    """utime+stime (+ waited-for children's, e.g. snapshot forks) of `pid`, in seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    # After "pid (comm)": state is fields[0]; utime, stime, cutime, cstime are fields 11..14.
    return sum(int(f) for f in fields[11:15]) / _CLK_TCK


def _host_cpu() -> tuple[int, int] | None:
    """(busy, total) jiffies over all CPUs, from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


def _children(pid: int) -> list[int]:
    """Live child processes of `pid` (serve's projector), from /proc (Linux)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _tree_cpu_s(pid: int) -> float | None:
    """CPU seconds of `pid` and of its live children (their own children are not counted)."""
    own = _proc_cpu_s(pid)
    if own is None:
        return None
    return own + sum(c for c in (_proc_cpu_s(child) for child in _children(pid)) if c is not None)


class CpuSample:
    def __init__(self, servers: list[Server]) -> None:
        self.wall = time.perf_counter()
        self.servers = {s.name: _tree_cpu_s(s.pid) for s in servers}
        times = os.times()
        self.client = times.user + times.system
        self.host = _host_cpu()


def _cpu_report(start: CpuSample, end: CpuSample) -> dict[str, object]:
    wall = end.wall - start.wall
    servers: dict[str, float | None] = {}
    for name, before in start.servers.items():
        after = end.servers.get(name)
        servers[name] = None if before is None or after is None else round(100 * (after - before) / wall, 1)
    host_busy = None
    if start.host and end.host and end.host[1] > start.host[1]:
        host_busy = round(100 * (end.host[0] - start.host[0]) / (end.host[1] - start.host[1]), 1)
    return {
        "server_cpu_percent": servers,
        "client_cpu_percent": round(100 * (end.client - start.client) / wall, 1),
        "host_cpu_busy_percent": host_busy,
        "host_cpus": os.cpu_count(),
    }


# ---- starting the servers ---------------------------------------------------------------------


async def _start_embedded(
    tmp: Path, servers: list[Server], token_ttl_s: int, extra_env: dict[str, str] | None = None
) -> tuple[list[str], dict[str, object]]:
    port = free_port()
    env = _child_env(
        {
            **RATE_LIMIT_ENV,
            "CASHMARKETS_ACCESS_TOKEN_TTL_S": str(token_ttl_s),
            "CASHMARKETS_HOST": HOST,
            "CASHMARKETS_WS_PORT": "0",
            **(extra_env or {}),
        }
    )
    data_dir = tmp / "data"
    server = Server("serve", ["serve", "--data-dir", str(data_dir), "--port", str(port)], env, tmp)
    servers.append(server)
    url = f"http://{HOST}:{port}"
    await _wait_ready(server, url)
    setup = {
        "processes": {"serve": 1},
        "ports": 1,
        "host": HOST,
        "log": "sqlite journal",
        "store": "sqlite",
    }
    return [url], setup


async def run_migrate(env: dict[str, str]) -> None:
    """`cashmarkets migrate` with `env`, as a subprocess; an error if it fails."""
    migrate = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cashmarkets.cli", "migrate"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if migrate.returncode != 0:
        raise RuntimeError(f"cashmarkets migrate failed ({migrate.returncode}):\n{migrate.stderr[-3000:]}")


async def _start_distributed(
    tmp: Path,
    servers: list[Server],
    database: str,
    stream: str,
    token_ttl_s: int,
    extra_env: dict[str, str] | None = None,
    *,
    poller: bool = False,
) -> tuple[list[str], dict[str, object]]:
    database_url = await scratchdb.create_database(database)
    env = _child_env(
        {
            **RATE_LIMIT_ENV,
            "CASHMARKETS_DATABASE_URL": database_url,
            "CASHMARKETS_REDIS_URL": REDIS_URL,
            "CASHMARKETS_REDIS_STREAM": stream,
            "CASHMARKETS_JWT_SECRET": "bench-secret-" + uuid.uuid4().hex + uuid.uuid4().hex,
            "CASHMARKETS_APIKEY_MASTER_KEY": uuid.uuid4().hex + uuid.uuid4().hex,
            "CASHMARKETS_FAUCET": "true",
            "CASHMARKETS_DATA_DIR": str(tmp / "engine"),
            "CASHMARKETS_ACCESS_TOKEN_TTL_S": str(token_ttl_s),
            "CASHMARKETS_HOST": HOST,
            **(extra_env or {}),
        }
    )
    await run_migrate(env)
    servers.append(Server("engine", ["engine"], env, tmp))
    servers.append(Server("projector", ["projector"], env, tmp))
    if poller:
        servers.append(Server("poller", ["poller"], env, tmp))
    ports = [free_port(), free_port()]
    apis = [Server(f"api{i}", ["api", "--port", str(port)], env, tmp) for i, port in enumerate(ports)]
    servers.extend(apis)
    urls = [f"http://{HOST}:{port}" for port in ports]
    for api, url in zip(apis, urls, strict=True):
        await _wait_ready(api, url)
    setup = {
        "processes": {"engine": 1, "projector": 1, **({"poller": 1} if poller else {}), "api": 2},
        "ports": 2,
        "host": HOST,
        "log": "redis stream",
        "store": "postgresql",
    }
    return urls, setup


@contextlib.asynccontextmanager
async def running_servers(
    mode: str, token_ttl_s: int, extra_env: dict[str, str] | None = None, *, poller: bool = False
) -> AsyncIterator[tuple[list[str], dict[str, object], list[Server]]]:
    """Start the servers of `mode` (see the module docstring), yield (urls, setup, servers), stop
    them by the pids started here and remove the scratch database and stream, on errors too."""
    hexid = uuid.uuid4().hex
    database = f"cm_bench_{hexid}"
    stream = f"cashmarkets:bench:{hexid}"
    servers: list[Server] = []
    database_created = False
    with tempfile.TemporaryDirectory(prefix="cm-bench-http-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            if mode == "embedded":
                urls, setup = await _start_embedded(tmp, servers, token_ttl_s, extra_env)
            else:
                database_created = True  # from here on, try to drop it (IF EXISTS)
                urls, setup = await _start_distributed(
                    tmp, servers, database, stream, token_ttl_s, extra_env, poller=poller
                )
            log.info("servers ready", mode=mode, urls=urls, pids=[s.pid for s in servers])
            yield urls, setup, servers
        except BaseException:
            for server in servers:
                sys.stderr.write(f"---- {server.name} (pid {server.pid}) output tail ----\n{server.tail()}\n")
            raise
        finally:
            # APIs first, then the projector and the engine: the reverse of starting order.
            for server in reversed(servers):
                code = server.stop()
                log.info("server stopped", server=server.name, pid=server.pid, code=code)
            if mode == "distributed":
                try:
                    await _delete_stream(stream)
                except Exception as exc:
                    log.warning("could not delete the Redis stream", stream=stream, error=repr(exc))
                if database_created:
                    try:
                        await scratchdb.drop_database(database)
                    except Exception as exc:
                        log.warning("could not drop the database", database=database, error=repr(exc))


# ---- the load ---------------------------------------------------------------------------------


class KindStats:
    def __init__(self) -> None:
        self.latencies_ns: list[int] = []
        self.status_counts: dict[str, int] = {}
        self.errors = 0

    def add(self, latency_ns: int, status: str, ok: bool) -> None:
        self.latencies_ns.append(latency_ns)
        self.status_counts[status] = self.status_counts.get(status, 0) + 1
        if not ok:
            self.errors += 1

    def merge(self, other: KindStats) -> None:
        self.latencies_ns.extend(other.latencies_ns)
        for status, n in other.status_counts.items():
            self.status_counts[status] = self.status_counts.get(status, 0) + n
        self.errors += other.errors

    def report(self, elapsed_s: float) -> dict[str, object]:
        lat = sorted(self.latencies_ns)
        n = len(lat)

        def ms(ns: int) -> float:
            return round(ns / 1e6, 3)

        return {
            "requests": n,
            "requests_per_s": round(n / elapsed_s, 1) if elapsed_s > 0 else 0.0,
            "p50_ms": ms(lat[n // 2]) if n else None,
            "p99_ms": ms(lat[min(n - 1, int(n * 0.99))]) if n else None,
            "max_ms": ms(lat[-1]) if n else None,
            "errors": self.errors,
            "status_counts": dict(sorted(self.status_counts.items())),
        }


async def _signup(clients: list[Any], users: int) -> list[str]:
    """`users` new accounts (spread over the servers); their bearer tokens. Any failure is fatal."""
    tag = uuid.uuid4().hex[:12]
    gate = asyncio.Semaphore(SIGNUP_CONCURRENCY)

    async def one(i: int) -> str:
        async with gate:
            r = await clients[i % len(clients)].post(
                "/api/v1/signup", json={"email": f"bench-{tag}-{i}@example.com", "password": PASSWORD}
            )
        if r.status_code != 201:
            raise RuntimeError(f"signup {i} failed: {r.status_code} {r.text[:500]}")
        return str(r.json()["token"])

    return list(await asyncio.gather(*(one(i) for i in range(users))))


async def _load(
    urls: list[str],
    servers: list[Server],
    users: int,
    connections: int,
    duration_s: float,
    warmup_s: float,
    seed: int,
) -> dict[str, object]:
    import httpx

    # One pool per server, sized to the workers that use it: each worker keeps one connection.
    per_url = [len(range(i, connections, len(urls))) for i in range(len(urls))]
    clients = [
        httpx.AsyncClient(
            base_url=url,
            http1=True,
            http2=False,
            trust_env=False,
            timeout=REQUEST_TIMEOUT_S,
            limits=httpx.Limits(max_connections=max(n, 1), max_keepalive_connections=max(n, 1)),
        )
        for url, n in zip(urls, per_url, strict=True)
    ]
    try:
        log.info("signing up", users=users)
        headers = [{"Authorization": f"Bearer {t}"} for t in await _signup(clients, users)]
        log.info("load", connections=connections, warmup_s=warmup_s, duration_s=duration_s)
        clock = time.perf_counter_ns
        start_ns = clock()
        measure_ns = start_ns + int(warmup_s * 1e9)
        end_ns = measure_ns + int(duration_s * 1e9)
        samples: list[CpuSample] = []

        async def sample_at_measure_start() -> None:
            await asyncio.sleep(max(0.0, (measure_ns - clock()) / 1e9))
            samples.append(CpuSample(servers))

        async def worker(i: int) -> dict[str, KindStats]:
            client = clients[i % len(clients)]
            rng = random.Random(seed * 1_000_003 + i)
            stats = {kind: KindStats() for kind in KINDS}
            turn = i % 2  # half the workers start with each kind: a 50/50 mix from the first request
            while True:
                t0 = clock()
                if t0 >= end_ns:
                    return stats
                kind = KINDS[turn]
                turn ^= 1
                h = headers[rng.randrange(len(headers))]
                try:
                    if kind == "faucet":
                        r = await client.post("/api/v1/faucet", json=FAUCET_BODY, headers=h)
                    else:
                        r = await client.get("/api/v1/balance", headers=h)
                    status, ok = str(r.status_code), 200 <= r.status_code < 300
                except httpx.HTTPError as exc:  # counted as an error, never retried
                    status, ok = type(exc).__name__, False
                t1 = clock()
                if t0 >= measure_ns:
                    stats[kind].add(t1 - t0, status, ok)

        sampler = asyncio.create_task(sample_at_measure_start())
        results = await asyncio.gather(*(worker(i) for i in range(connections)))
        await sampler
        samples.append(CpuSample(servers))
        elapsed_s = (clock() - measure_ns) / 1e9  # until the last measured request finished
    finally:
        for client in clients:
            await client.aclose()

    by_kind = {kind: KindStats() for kind in KINDS}
    for stats in results:
        for kind in KINDS:
            by_kind[kind].merge(stats[kind])
    total = KindStats()
    for kind in KINDS:
        total.merge(by_kind[kind])
    return {
        **total.report(elapsed_s),
        "elapsed_s": round(elapsed_s, 3),
        **{kind: by_kind[kind].report(elapsed_s) for kind in KINDS},
        **_cpu_report(samples[0], samples[1]),
    }


async def run(
    mode: str = "embedded",
    duration_s: float = 10.0,
    connections: int = 32,
    users: int = 50,
    warmup_s: float = 1.0,
    seed: int = 1,
) -> dict[str, object]:
    if mode not in ("embedded", "distributed"):
        raise ValueError("mode must be embedded or distributed")
    if connections < 1 or users < 1 or duration_s <= 0 or warmup_s < 0:
        raise ValueError("connections and users must be >= 1, duration_s > 0, warmup_s >= 0")
    import logging

    # httpx logs every request at INFO: that would be the bench measuring its own logging.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)

    token_ttl_s = max(900, int(warmup_s + duration_s) + 600)
    async with running_servers(mode, token_ttl_s) as (urls, setup, servers):
        figures = await _load(urls, servers, users, connections, duration_s, warmup_s, seed)
        alive = {s.name: s.alive() for s in servers}
    return {
        "bench": "http",
        "mode": mode,
        "client": "httpx",
        "connections": connections,
        "users": users,
        "warmup_s": warmup_s,
        "duration_s": duration_s,
        "mix": {"faucet": 0.5, "balance": 0.5},
        "server": {**setup, "pids": {s.name: s.pid for s in servers}, "alive_at_end": alive},
        **figures,
    }
