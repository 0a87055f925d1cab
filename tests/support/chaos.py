"""The chaos harness (issue 16): distributed mode on a private Redis and a private PostgreSQL,
every process of it (two APIs, engine, projector, poller, gateway, chartgame), prices from a fake
Backpack server, and the clients and watchers that measure what a fault does.

- `ChaosStack` starts, kills (SIGKILL) and restarts single processes, and knows which are alive.
- `Trader` is a careful HTTP client: every request has an Idempotency-Key and is retried with it
  (on 5xx, a key still in use, or a lost connection, then through the other API process, as a
  load balancer would) until a definitive answer; it keeps what it was told.
- `ReadyWatch` samples GET /ready on both APIs; `Subscriber` follows a price stream through the
  gateway (seqs, notices, disconnects); `PriceWalk` publishes quotes on the fake exchange.
- `verify_trader` compares what a client was told with the store, trade by trade and balance by
  balance.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.e2e.crash_trading import all_trades, realized_by_hand
from tests.e2e.flows import CENT, USDC
from tests.e2e.processes import Proc, free_port, wait_ready
from tests.fakes.backpack import BTC_STREAM, ETH_STREAM, SOL_STREAM, ThreadedBackpack
from tests.support.private_pg import PrivatePostgres
from tests.support.private_redis import PrivateRedis

CLIENTS = 8
DEPOSIT_USDC = 10_000  # each trader's (and the probe's) admin deposit
PASSWORD = "correct horse battery"
RETRY_FOR_S = 60.0  # a request without a definitive answer for this long fails its client
RETRY_PAUSE_S = 0.1  # between retries of one request (a Retry-After up to 1 s is honoured)
RETRY_AFTER_MAX_S = 1.0
READY_POLL_S = 0.25
HTTP_TIMEOUT_S = 5.0
START_TIMEOUT_S = 90.0
PRICE_PERIOD_S = 0.1
GAME = "btc-30s"

# The servers under test: no rate limit in the way of 8 clients on one IP; short command timeouts
# and idempotency leases so requests caught by a fault come back quickly and are retried; a short
# singleton lease so a killed projector's successor takes over quickly.
CHAOS_ENV = {
    "CASHMARKETS_RATE_LIMIT_IP_PER_S": "100000",
    "CASHMARKETS_RATE_LIMIT_IP_BURST": "100000",
    "CASHMARKETS_RATE_LIMIT_USER_PER_S": "100000",
    "CASHMARKETS_RATE_LIMIT_USER_BURST": "100000",
    "CASHMARKETS_COMMAND_TIMEOUT_S": "2",
    "CASHMARKETS_IDEMPOTENCY_LEASE_S": "3",
    "CASHMARKETS_SNAPSHOT_INTERVAL_S": "1",
    "CASHMARKETS_LEASE_TTL_S": "3",
    "CASHMARKETS_PRICE_SOURCE": "backpack",
    "CASHMARKETS_PRICE_INTERVAL_MS": "100",
    "CASHMARKETS_JWT_SECRET": "chaos-secret-" + "x" * 40,
    "CASHMARKETS_APIKEY_MASTER_KEY": "ab" * 32,
    "CASHMARKETS_BEACON_KEY": "cd" * 32,
    "CASHMARKETS_REDIS_STREAM": "cashmarkets:chaos",
}

PROCESSES = ("engine", "projector", "poller", "chartgame", "gateway", "api0", "api1")


def cli(env: dict[str, str], *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cashmarkets.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


class ChaosStack:
    """The processes of distributed mode over a private Redis and PostgreSQL. A process is killed
    with SIGKILL and started again with the same arguments; nothing else is restarted."""

    def __init__(self, tmp: Path, redis: PrivateRedis, pg: PrivatePostgres, backpack_url: str) -> None:
        self.tmp = tmp
        self.redis = redis
        self.pg = pg
        self.api_ports = [free_port(), free_port()]
        self.ws_port = free_port()
        self.env = {
            **CHAOS_ENV,
            "CASHMARKETS_DATABASE_URL": pg.create_database("cm"),
            "CASHMARKETS_REDIS_URL": redis.url(),
            "CASHMARKETS_BACKPACK_URL": backpack_url,
        }
        self.procs: dict[str, Proc] = {}
        self.retired: list[Proc] = []

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.api_ports]

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/ws"

    def _args(self, name: str) -> list[str]:
        if name.startswith("api"):
            return ["api", "--port", str(self.api_ports[int(name[3:])])]
        return [name]

    def _env(self, name: str) -> dict[str, str]:
        # Each process its own data directory (the scheduler keeps its seed chains' secrets there).
        env = {**self.env, "CASHMARKETS_DATA_DIR": str(self.tmp / "data" / name)}
        if name == "gateway":
            env["CASHMARKETS_WS_PORT"] = str(self.ws_port)
        return env

    def start(self, name: str) -> None:
        count = sum(1 for p in self.retired if p.log_path.name.startswith(f"{name}."))
        self.procs[name] = Proc(self._args(name), self._env(name), self.tmp / f"{name}.{count}.log")

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.stop(sig=signal.SIGKILL)
        self.retired.append(proc)

    def exited(self) -> list[str]:
        return [name for name, proc in self.procs.items() if not proc.alive()]

    def restart_exited(self) -> list[str]:
        """Start again what exited on its own (a failed fault), so the faults after it still run."""
        names = self.exited()
        for name in names:
            self.procs[name].stop()
            self.retired.append(self.procs.pop(name))
            self.start(name)
        return names

    def boot(self) -> None:
        migrated = cli(self._env("migrate"), "migrate")
        assert migrated.returncode == 0, migrated.stderr
        for name in PROCESSES:
            self.start(name)
        for i, url in enumerate(self.urls):
            wait_ready(self.procs[f"api{i}"], url, START_TIMEOUT_S)
        self.wait_output("gateway", "gateway running")
        self.wait_output("chartgame", "chart scheduler running")

    def wait_output(self, name: str, text: str, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.procs[name].log_path.read_text(errors="replace"):
            assert self.procs[name].alive(), f"{name} exited:\n{self.procs[name].output()}"
            assert time.monotonic() < deadline, f"{name}: no {text!r}:\n{self.procs[name].output()}"
            time.sleep(0.1)

    def stop_all(self) -> None:
        for proc in [*self.procs.values(), *self.retired]:
            with contextlib.suppress(Exception):
                proc.stop(timeout_s=10)

    def logs(self, name: str) -> str:
        return self.procs[name].output() if name in self.procs else ""


class PriceWalk(threading.Thread):
    """Book tickers for BTC, ETH and SOL on the fake exchange every PRICE_PERIOD_S: a small walk
    (a few basis points), so leverage up to 5x never comes near a liquidation."""

    START = {
        BTC_STREAM: (Decimal("65000.00"), 2),
        ETH_STREAM: (Decimal("2500.00"), 2),
        SOL_STREAM: (Decimal("150.0000"), 4),
    }

    def __init__(self, backpack: ThreadedBackpack) -> None:
        super().__init__(name="price-walk", daemon=True)
        self.backpack = backpack
        self.stopped = threading.Event()

    def run(self) -> None:
        rng = random.Random(16)
        mids = {s: price for s, (price, _) in self.START.items()}
        while not self.stopped.wait(PRICE_PERIOD_S):
            for stream, (start, places) in self.START.items():
                step = start * Decimal(rng.randint(-3, 3)) / Decimal(100_000)
                mids[stream] = min(max(mids[stream] + step, start * Decimal("0.99")), start * Decimal("1.01"))
                tick = Decimal(1).scaleb(-places)
                bid = mids[stream].quantize(tick)
                with contextlib.suppress(Exception):  # the fake's loop busy: the next tick comes
                    self.backpack.quote(stream, str(bid), str(bid + tick))

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)


@dataclass
class Failure:
    """A client-visible error: an HTTP status with the body's `code`, or a lost connection."""

    t: float
    path: str
    kind: str  # e.g. "503 dependency_unavailable", "504", "connection"


@dataclass
class Trader:
    """Opens and closes leverage trades until stopped; every answer it acted on is kept."""

    index: int
    urls: list[str]
    token: str
    stop: threading.Event
    opened: list[dict[str, Any]] = field(default_factory=list)
    closed: dict[int, dict[str, Any]] = field(default_factory=dict)
    gone: set[int] = field(default_factory=set)  # closed by a trigger before our close
    refused: list[dict[str, Any]] = field(default_factory=list)  # definitive 4xx to an open
    failures: list[Failure] = field(default_factory=list)
    acks: list[float] = field(default_factory=list)
    error: BaseException | None = None
    _api: int = 0

    def run(self) -> None:
        try:
            rng = random.Random(self.index)
            with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
                i = 0
                while not self.stop.is_set():
                    trade = self.open(client, self.order(rng), f"t{self.index}-{i}")
                    if trade is not None:
                        self.close(client, trade, f"t{self.index}-{i}")
                    i += 1
        except BaseException as exc:  # reported by the test, with the trader's index
            self.error = exc

    def order(self, rng: random.Random) -> dict[str, Any]:
        return {
            "asset": rng.choice(("BTC", "ETH", "SOL")),
            "type": rng.choice(("long", "short")),
            "margin": rng.randint(100, 5_000),
            "leverage": rng.randint(1, 5),
        }

    def open(
        self, client: httpx.Client, body: dict[str, Any], key: str, retry_s: float = RETRY_FOR_S
    ) -> dict[str, Any] | None:
        """The acknowledged trade, or None after a definitive refusal (e.g. a stale price)."""
        response = self.post(client, "/api/v1/trade/create", body, f"{key}-open", retry_s)
        if response.status_code != 200:
            assert 400 <= response.status_code < 500, response.text
            self.refused.append({"key": key, "status": response.status_code, "body": response.json()})
            time.sleep(RETRY_PAUSE_S)
            return None
        trade: dict[str, Any] = response.json()
        self.opened.append(trade)
        self.acks.append(time.monotonic())
        return trade

    def close(self, client: httpx.Client, trade: dict[str, Any], key: str) -> None:
        """Until closed: a definitive refusal (a stale price, say) is tried again with a new key."""
        body = {"orderId": trade["orderId"]}
        deadline = time.monotonic() + RETRY_FOR_S
        for attempt in itertools.count():
            response = self.post(client, "/api/v1/trade/close", body, f"{key}-close-{attempt}")
            if response.status_code == 200:
                self.closed[trade["orderId"]] = response.json()
                self.acks.append(time.monotonic())
                return
            if response.status_code == 404:
                self.gone.add(trade["orderId"])
                return
            assert time.monotonic() < deadline, f"close {key}: {response.status_code} {response.text}"
            time.sleep(RETRY_PAUSE_S * 5)

    def post(
        self, client: httpx.Client, path: str, body: dict[str, Any], key: str, retry_s: float = RETRY_FOR_S
    ) -> httpx.Response:
        return self.send(client, "POST", path, key, retry_s, json=body)

    def send(
        self, client: httpx.Client, method: str, path: str, key: str, retry_s: float, **request: Any
    ) -> httpx.Response:
        """Until a definitive answer, with the same key; a lost connection moves to the other API."""
        headers = {"Authorization": f"Bearer {self.token}", "Idempotency-Key": key}
        deadline = time.monotonic() + retry_s
        while True:
            pause = RETRY_PAUSE_S
            try:
                response = client.request(method, self.urls[self._api] + path, headers=headers, **request)
                code = _code(response)
                if response.status_code < 500 and code != "idempotency_key_in_use":
                    if response.status_code >= 400:
                        self.failures.append(
                            Failure(time.monotonic(), path, f"{response.status_code} {code}")
                        )
                    return response
                self.failures.append(
                    Failure(time.monotonic(), path, f"{response.status_code} {code}".strip())
                )
                with contextlib.suppress(ValueError):
                    pause = min(RETRY_AFTER_MAX_S, max(pause, float(response.headers.get("retry-after", 0))))
            except httpx.TransportError as exc:
                self.failures.append(Failure(time.monotonic(), path, f"connection {type(exc).__name__}"))
                self._api = (self._api + 1) % len(self.urls)
            assert time.monotonic() < deadline, f"{method} {path} {key}: no definitive answer in {retry_s} s"
            time.sleep(pause)


SPOT_MARKET = "BTC_USDC"
SPOT_ORDER = {"market": SPOT_MARKET, "side": "BUY", "price": "10000.00", "quantity": "0.001"}


@dataclass
class SpotTrader(Trader):
    """Places a resting spot buy (nobody sells: it never fills) and cancels it, until stopped;
    `opened` holds the acknowledged orders, `closed` the acknowledged cancels."""

    def run(self) -> None:
        try:
            with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
                for i in itertools.count():
                    if self.stop.is_set():
                        return
                    placed = self.post(client, "/api/v1/spot/orders", SPOT_ORDER, f"s{self.index}-{i}-place")
                    assert placed.status_code == 200, placed.text
                    order = placed.json()["order"]
                    self.opened.append(order)
                    self.acks.append(time.monotonic())
                    path = f"/api/v1/spot/orders/{order['orderId']}"
                    params = {"market": SPOT_MARKET}
                    canceled = self.send(
                        client, "DELETE", path, f"s{self.index}-{i}-cancel", RETRY_FOR_S, params=params
                    )
                    assert canceled.status_code == 200, canceled.text
                    self.closed[order["orderId"]] = canceled.json()
                    self.acks.append(time.monotonic())
        except BaseException as exc:  # reported by the test, with the client's index
            self.error = exc


def spot_orders(client: httpx.Client, h: dict[str, str]) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"market": SPOT_MARKET, "limit": "100", **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/spot/orders", params=params, headers=h).json()
        history.extend(page["orders"])
        if not (cursor := page.get("nextCursor")):
            return history


def verify_spot(client: httpx.Client, trader: Trader) -> int:
    """Every acknowledged order exists once and is canceled as told; nothing else exists; the
    balance is the deposit, nothing held. Returns the balance (USDC minor units)."""
    h = {"Authorization": f"Bearer {trader.token}"}
    deadline = time.monotonic() + 30
    history = spot_orders(client, h)
    while any(o["status"] != "CANCELED" for o in history) and time.monotonic() < deadline:
        time.sleep(0.2)  # the projection catching up
        history = spot_orders(client, h)
    by_id = {o["orderId"]: o for o in history}
    acked = [o["orderId"] for o in trader.opened]
    assert sorted(by_id) == sorted(acked) and len(history) == len(acked), ("spot", sorted(by_id), acked)
    for order_id, stored in by_id.items():
        told = trader.closed.get(order_id)
        assert told is not None and stored["status"] == told["status"] == "CANCELED", (stored, told)
        assert stored["executedQty"] == told["executedQty"] and Decimal(stored["executedQty"]) == 0, stored
    balances = client.get("/api/v1/balance", headers=h).json()["balances"]
    usdc = next(b for b in balances if b["asset"] == "USDC")
    expected = DEPOSIT_USDC * USDC
    assert int(Decimal(usdc["balance"]).scaleb(6)) == expected and Decimal(usdc["held"]) == 0, usdc
    return expected


def _code(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("code", "")) if isinstance(body, dict) else ""


def sign_up(url: str, email: str) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=30) as client:
        r = client.post("/api/v1/signup", json={"email": email, "password": PASSWORD})
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body


def fund_users(stack: ChaosStack, user_ids: list[str]) -> None:
    """Money enters distributed mode through admin deposits: make an admin, credit each user."""
    sign_up(stack.urls[0], "chaos-admin@example.com")
    made = cli(stack.env, "users", "set-role", "chaos-admin@example.com", "admin")
    assert made.returncode == 0, made.stderr
    with httpx.Client(base_url=stack.urls[0], timeout=30) as client:
        signin = client.post(
            "/api/v1/signin", json={"email": "chaos-admin@example.com", "password": PASSWORD}
        )
        assert signin.status_code == 200, signin.text
        client.cookies.clear()
        admin = {"Authorization": f"Bearer {signin.json()['token']}"}
        for user_id in user_ids:
            r = client.post(
                "/api/v1/admin/deposits",
                json={"userId": user_id, "asset": "USDC", "amount": str(DEPOSIT_USDC)},
                headers={**admin, "Idempotency-Key": f"deposit-{user_id}"},
            )
            assert r.status_code == 200, r.text


class ReadyWatch(threading.Thread):
    """GET /ready on every API every READY_POLL_S: (time, api index, state), the state being
    "ready", "not_ready" (503 with ready false), "down" (no answer) or "http_<status>"."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__(name="ready-watch", daemon=True)
        self.urls = urls
        self.samples: list[tuple[float, int, str]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=2) as client:
            while not self.stopped.wait(READY_POLL_S):
                for i, url in enumerate(self.urls):
                    self.samples.append((time.monotonic(), i, _ready_state(client, url)))

    def states(self, api: int, since: float, until: float) -> Counter[str]:
        return Counter(s for t, i, s in list(self.samples) if i == api and since <= t <= until)

    def first(self, api: int, state: str, since: float, until: float) -> float | None:
        """Seconds from `since` to the first `state` sample of `api` before `until`, or None."""
        found = [t for t, i, s in list(self.samples) if i == api and s == state and since <= t <= until]
        return round(found[0] - since, 1) if found else None

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)


def _ready_state(client: httpx.Client, url: str) -> str:
    try:
        r = client.get(f"{url}/ready")
    except httpx.TransportError:
        return "down"
    if r.status_code == 200:
        return "ready"
    if r.status_code == 503 and _json(r).get("ready") is False:
        return "not_ready"
    return f"http_{r.status_code}"


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


CHART_STREAMS = (f"candles.{GAME}", f"round.{GAME}")


class Subscriber(threading.Thread):
    """A WebSocket client of the gateway on the BTC price stream and the chart game's streams:
    every (time, seq) of a price, the time of every chart message, every message that is none of
    those nor a reply (notices), every lost connection (it reconnects and subscribes again)."""

    def __init__(self, url: str) -> None:
        super().__init__(name="ws-subscriber", daemon=True)
        self.url = url
        self.ticks: list[tuple[float, int]] = []
        self.chart: list[float] = []
        self.notices: list[tuple[float, dict[str, Any]]] = []
        self.disconnects: list[float] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        while not self.stopped.is_set():
            try:
                async with connect(self.url, open_timeout=2, close_timeout=1) as ws:
                    streams = [BTC_STREAM, *CHART_STREAMS]
                    await ws.send(json.dumps({"method": "SUBSCRIBE", "params": streams, "id": 1}))
                    while not self.stopped.is_set():
                        with contextlib.suppress(TimeoutError):
                            self._record(json.loads(await asyncio.wait_for(ws.recv(), 1.0)))
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError):
                self.disconnects.append(time.monotonic())
                await asyncio.sleep(0.3)

    def _record(self, message: dict[str, Any]) -> None:
        now = time.monotonic()
        if message.get("stream") == BTC_STREAM and "data" in message:
            self.ticks.append((now, int(message["seq"])))
        elif message.get("stream") in CHART_STREAMS and "data" in message:
            self.chart.append(now)
        elif "id" not in message:  # e.g. {"stream", "event": "interrupted" | "resumed", "seq"}
            self.notices.append((now, message))

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)


def expected_balance(history: list[dict[str, Any]]) -> int:
    """The deposit plus every closed trade's result, by hand from its prices (USDC minor units)."""
    return DEPOSIT_USDC * USDC + sum(realized_by_hand(t) for t in history)


def verify_trader(client: httpx.Client, trader: Trader) -> int:
    """What the trader was told against the store; returns its balance (USDC minor units)."""
    h = {"Authorization": f"Bearer {trader.token}"}
    acked = {t["orderId"]: t for t in trader.opened}
    assert len(acked) == len(trader.opened), f"trader {trader.index}: one order acknowledged twice"
    deadline = time.monotonic() + 30
    history = all_trades(client, h)
    while len(history) < len(acked) and time.monotonic() < deadline:
        time.sleep(0.2)
        history = all_trades(client, h)
    by_id = {t["orderId"]: t for t in history}
    # Exactly once: the trades that exist are the acknowledged ones, no more, no fewer.
    assert sorted(by_id) == sorted(acked) and len(history) == len(by_id), (
        trader.index,
        sorted(by_id),
        sorted(acked),
    )
    assert client.get("/api/v1/trades/open", headers=h).json()["trades"] == [], trader.index
    for order_id, opened in acked.items():
        stored = by_id[order_id]
        for name in ("asset", "type", "margin", "leverage", "openPrice", "liquidationPrice"):
            assert stored[name] == opened[name], (order_id, name, stored, opened)
        if order_id in trader.closed:
            told = trader.closed[order_id]
            got = (stored["closeReason"], stored["closePrice"], stored["pnl"])
            assert got == ("user", told["closePrice"], told["pnl"]), (order_id, stored, told)
        else:
            assert order_id in trader.gone and stored["closeReason"] != "user", stored
    expected = expected_balance(history)
    balances = client.get("/api/v1/balance", headers=h).json()["balances"]
    usdc = next(b for b in balances if b["asset"] == "USDC")
    assert int(Decimal(usdc["balance"]).scaleb(6)) == expected, (trader.index, usdc, expected)
    assert client.get("/api/v1/balance/usd", headers=h).json() == {"balance": expected // CENT}
    return expected
