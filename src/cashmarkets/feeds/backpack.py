"""Backpack Exchange best bid/ask over WebSocket: `bookTicker.<feed symbol>` -> `PriceTick`.

Protocol (https://docs.backpack.exchange/#tag/Streams), public streams need no authentication:

    -> {"method": "SUBSCRIBE", "params": ["bookTicker.BTC_USDC_PERP", ...], "id": 1}
    <- {"id": 1, "result": null}                      (a reply; an error reply has "error")
    <- {"stream": "bookTicker.BTC_USDC_PERP",
        "data": {"e": "bookTicker", "E": 1757143198737843, "T": 1757143198736215,
                 "s": "BTC_USDC_PERP", "a": "4303.93", "A": "6.9717", "b": "4303.92",
                 "B": "5.0264", "u": 2063435950}}

E (event time) and T (engine time) are microseconds; a/A are the best ask and its quantity,
b/B the best bid and its quantity, u the update id (increasing per symbol).

Keep-alive: Backpack sends a WebSocket Ping frame every 60 s and closes the connection if no Pong
comes back within 120 s; it has no application-level ping message. The `websockets` library
answers Ping frames by itself and also sends its own Pings (`ping_interval_s`), closing the
connection when the server stops answering (`ping_timeout_s`). A text message such as
``{"method": "PING"}`` or ``ping`` is not part of Backpack's protocol and is not answered (it is
counted as a malformed or ignored message). On shutdown Backpack sends a Close frame; the feed
reconnects like after any other disconnect.

Parsing is strict: prices become integers in the market's price units via `parse_amount`
(a price with more decimals than the market has is dropped and logged, never rounded), quantities
integers with 8 decimals; ints must be JSON ints. A message that fails is counted in
`stats.dropped_bad`, logged (rate-limited), and skipped; the connection stays up.

Reconnects: exponential backoff from `reconnect_min_s` doubling up to `reconnect_max_s`, each
delay scaled by a random factor in [1 - jitter, 1 + jitter]; the backoff starts over once a
connection has stayed up for `healthy_after_s`. Every connection subscribes again. A connection
that delivers no tick for `idle_timeout_s` is closed and reopened (a subscription that silently
went nowhere, a half-open TCP connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec
import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidURI, WebSocketException
from websockets.uri import parse_uri

from cashmarkets.core.money import AmountError, parse_amount
from cashmarkets.core.products.leverage import DEFAULT_MARKETS, MarketConfig, PriceTick
from cashmarkets.feeds.ticks import (
    Coalescer,
    FeedStats,
    StaleWatch,
    TickSink,
    should_log,
    tick_command_id,
)

__all__ = [
    "BACKPACK_WS_URL",
    "QTY_DECIMALS",
    "BackpackFeed",
    "BadMessage",
    "ServerReply",
    "parse_message",
    "stream_name",
    "subscribe_message",
]

log = structlog.get_logger("cashmarkets.feeds.backpack")

BACKPACK_WS_URL: Final = "wss://ws.backpack.exchange"
QTY_DECIMALS: Final = 8
STREAM_PREFIX: Final = "bookTicker."
# Every integer of a PriceTick must fit the signed 64-bit integers of the command log.
INT_MAX: Final = 2**63 - 1


class BadMessage(ValueError):
    """A message that cannot be used. `reason` is stable snake_case, `detail` for humans."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ServerReply:
    """A reply to one of our requests (`{"id": 1, "result": null}` or with `"error"`)."""

    id: object
    error: object = None


class _BookTicker(msgspec.Struct, forbid_unknown_fields=False):
    e: str
    E: int
    s: str
    a: str
    A: str
    b: str
    B: str
    u: int
    T: int = 0


def stream_name(market: MarketConfig) -> str:
    return f"{STREAM_PREFIX}{market.feed_symbol}"


def subscribe_message(markets: Iterable[MarketConfig], request_id: int = 1) -> str:
    params = [stream_name(m) for m in markets]
    return msgspec.json.encode({"method": "SUBSCRIBE", "params": params, "id": request_id}).decode()


def _decimal(value: str, decimals: int, what: str, *, allow_zero: bool) -> int:
    try:
        amount = parse_amount(value, decimals, allow_zero=allow_zero, max_integer_digits=19)
    except AmountError as exc:
        raise BadMessage(exc.code, f"{what} {value!r}: {exc.detail}") from None
    if amount > INT_MAX:
        raise BadMessage("too_large", f"{what} {value!r}")
    return amount


def parse_message(
    raw: str | bytes, markets_by_stream: Mapping[str, MarketConfig]
) -> PriceTick | ServerReply | None:
    """One WebSocket message -> a PriceTick, a ServerReply, or None for anything else well formed
    (a stream we did not ask for, an unknown message). Raises BadMessage.

    `markets_by_stream` maps stream names (``bookTicker.BTC_USDC_PERP``) to markets.
    """
    try:
        msg: Any = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadMessage("bad_json", str(exc)) from None
    if not isinstance(msg, dict):
        raise BadMessage("not_an_object", type(msg).__name__)
    stream = msg.get("stream")
    if stream is None:
        if "id" in msg and ("result" in msg or "error" in msg):
            return ServerReply(id=msg["id"], error=msg.get("error"))
        return None
    if not isinstance(stream, str):
        raise BadMessage("bad_stream", repr(stream)[:80])
    market = markets_by_stream.get(stream)
    if market is None:
        return None
    data = msg.get("data")
    if not isinstance(data, dict):
        raise BadMessage("bad_data", f"{stream}: data is {type(data).__name__}")
    try:
        book = msgspec.convert(data, _BookTicker, strict=True)
    except msgspec.ValidationError as exc:
        raise BadMessage("bad_fields", f"{stream}: {exc}") from None
    if book.e != "bookTicker":
        raise BadMessage("bad_event", f"{stream}: event {book.e!r}")
    if book.s != market.feed_symbol:
        raise BadMessage("symbol_mismatch", f"{stream}: symbol {book.s!r}")
    if not (0 < book.u <= INT_MAX and 0 <= book.E <= INT_MAX and 0 <= book.T <= INT_MAX):
        raise BadMessage("bad_fields", f"{stream}: update id {book.u}, times {book.E}/{book.T}")
    bid = _decimal(book.b, market.price_decimals, "bid", allow_zero=False)
    ask = _decimal(book.a, market.price_decimals, "ask", allow_zero=False)
    if bid > ask:
        raise BadMessage("crossed_book", f"{stream}: bid {book.b} > ask {book.a}")
    return PriceTick(
        command_id=tick_command_id(market.symbol, book.u),
        symbol=market.symbol,
        bid=bid,
        ask=ask,
        bid_qty=_decimal(book.B, QTY_DECIMALS, "bid quantity", allow_zero=True),
        ask_qty=_decimal(book.A, QTY_DECIMALS, "ask quantity", allow_zero=True),
        exchange_ts_us=book.E,
        update_id=book.u,
    )


class BackpackFeed:
    """Best bid/ask of `markets` from Backpack, handed to `sink` as PriceTick.

    `run()` connects, subscribes and reconnects until `stop()` (returns after forwarding what
    the coalescer still holds) or until cancelled (pending ticks are dropped).

    Counters: `stats` (a FeedStats). Staleness: `stale` (a StaleWatch over our symbols, touched by
    every valid tick, before ordering and coalescing). `connected` is set while a subscribed
    connection is up.
    """

    def __init__(
        self,
        url: str = BACKPACK_WS_URL,
        markets: Iterable[MarketConfig] = DEFAULT_MARKETS,
        sink: TickSink | None = None,
        *,
        reconnect_min_s: float = 0.2,
        reconnect_max_s: float = 30.0,
        jitter: float = 0.2,
        stale_after_s: float = 10.0,
        coalesce_ms: int = 100,
        rng: random.Random | None = None,
        healthy_after_s: float = 30.0,
        idle_timeout_s: float | None = 60.0,
        ping_interval_s: float | None = 20.0,
        ping_timeout_s: float | None = 20.0,
        open_timeout_s: float = 10.0,
        proxy: str | Literal[True] | None = True,
    ) -> None:
        if sink is None:
            raise TypeError("BackpackFeed needs a sink")
        try:
            parse_uri(url)
        except InvalidURI as exc:
            raise ValueError(f"not a WebSocket URL: {url!r}") from exc
        if not 0 < reconnect_min_s <= reconnect_max_s:
            raise ValueError("need 0 < reconnect_min_s <= reconnect_max_s")
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        self.url = url
        self.markets = tuple(markets)
        if not self.markets:
            raise ValueError("no markets")
        self.markets_by_stream = {stream_name(m): m for m in self.markets}
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.jitter = jitter
        self.healthy_after_s = healthy_after_s
        self.idle_timeout_s = idle_timeout_s
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.open_timeout_s = open_timeout_s
        self.proxy = proxy
        self.rng = rng if rng is not None else random.Random()
        self.stats = FeedStats()
        self.coalescer = Coalescer(sink, coalesce_ms, stats=self.stats)
        self.stale = StaleWatch(stale_after_s, [m.symbol for m in self.markets])
        self.connected = asyncio.Event()
        self.last_delay_s = 0.0  # the latest backoff delay waited
        self._stopping = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._running = False

    # ---- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        if self._running:
            raise RuntimeError("BackpackFeed.run() is already running")
        self._running = True
        self.coalescer.reopen()
        self.stale.restart()
        flush = False
        try:
            await self._loop()
            flush = True
        finally:
            self._running = False
            self._stopping.clear()  # a later run() starts afresh; a stop() before run() counts
            self.connected.clear()
            await self.coalescer.aclose(flush=flush)

    async def stop(self) -> None:
        """Ask `run()` to return: closes the connection, stops reconnecting. Called before `run()`
        has started (a task just created), it makes that run return at once."""
        self._stopping.set()
        ws = self._ws
        if ws is not None:
            await ws.close()

    def backoff_delay(self, attempt: int) -> float:
        """Delay before reconnect attempt `attempt` (0-based), jitter included."""
        doubling: int = 2 ** min(max(attempt, 0), 62)  # annotated: int ** int is typed Any
        base = min(self.reconnect_max_s, self.reconnect_min_s * doubling)
        factor = 1 + self.jitter * (2 * self.rng.random() - 1)
        return base * factor

    # ---- connection loop --------------------------------------------------------------------

    async def _loop(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            opened_at: float | None = None
            try:
                async with connect(
                    self.url,
                    open_timeout=self.open_timeout_s,
                    ping_interval=self.ping_interval_s,
                    ping_timeout=self.ping_timeout_s,
                    close_timeout=2,
                    proxy=self.proxy,
                    max_size=1 << 20,
                ) as ws:
                    opened_at = time.monotonic()
                    self._ws = ws
                    await ws.send(subscribe_message(self.markets))
                    self.stats.connects += 1
                    self.connected.set()
                    log.info(
                        "feed_connected",
                        url=self.url,
                        streams=len(self.markets),
                        connects=self.stats.connects,
                    )
                    await self._receive(ws)
            except (OSError, TimeoutError, WebSocketException) as exc:
                if not self._stopping.is_set():
                    log.warning("feed_disconnected", url=self.url, error=repr(exc))
            finally:
                self._ws = None
                self.connected.clear()
            if self._stopping.is_set():
                break
            self.stats.disconnects += 1
            if opened_at is not None and time.monotonic() - opened_at >= self.healthy_after_s:
                attempt = 0
            delay = self.backoff_delay(attempt)
            attempt += 1
            self.last_delay_s = delay
            log.info("feed_reconnecting", url=self.url, delay_s=round(delay, 3), attempt=attempt)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    async def _receive(self, ws: ClientConnection) -> None:
        last_tick = time.monotonic()
        while not self._stopping.is_set():
            timeout = None
            if self.idle_timeout_s is not None:
                timeout = max(0.0, last_tick + self.idle_timeout_s - time.monotonic())
            try:
                async with asyncio.timeout(timeout):
                    raw = await ws.recv()
            except TimeoutError:
                log.warning("feed_idle", url=self.url, idle_s=self.idle_timeout_s)
                await ws.close(code=1001, reason="idle")
                return
            if await self.handle(raw):
                last_tick = time.monotonic()

    async def handle(self, raw: str | bytes) -> bool:
        """Process one message; True if it was a tick (accepted or dropped as out of order)."""
        try:
            parsed = parse_message(raw, self.markets_by_stream)
        except BadMessage as exc:
            self.stats.dropped_bad += 1
            if should_log(self.stats.dropped_bad):
                log.warning(
                    "feed_bad_message",
                    reason=exc.reason,
                    detail=exc.detail[:200],
                    dropped=self.stats.dropped_bad,
                )
            return False
        if isinstance(parsed, PriceTick):
            self.stats.received += 1
            self.stale.touch(parsed.symbol)
            await self.coalescer(parsed)
            return True
        self.stats.ignored += 1
        if isinstance(parsed, ServerReply) and parsed.error is not None:
            log.error("feed_server_error", url=self.url, id=parsed.id, error=repr(parsed.error)[:300])
        return False
