"""What every price feed shares: the sink it hands ticks to, coalescing, ordering, staleness.

    TickSink     async callable taking a `PriceTick` (the runtime submits it as a command)
    FeedStats    counters of one feed (plain attributes, for metrics)
    Coalescer    a TickSink in front of another: drops out-of-order updates and lets at most one
                 tick per symbol per `interval_ms` through (the newest one wins, the last value of
                 a burst is always delivered)
    StaleWatch   the last time (monotonic clock, adapter side) each symbol had an update

Command ids are deterministic, so a repeated tick (a reconnect, a replay) is a repeat to the
engine's idempotency check, not a new command: `tick_command_id(symbol, update_id)` gives
``tick:BTC:2063435950`` for exchange updates; a source without exchange update ids passes a
`source` naming itself and its own counter (``tick:synthetic:7:BTC:42``).

This is an adapter: it reads the monotonic clock and runs tasks; the core does neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Protocol

import structlog

from cashmarkets.core.products.leverage import PriceTick

__all__ = [
    "Coalescer",
    "FeedStats",
    "StaleWatch",
    "TickSink",
    "tick_command_id",
]

log = structlog.get_logger("cashmarkets.feeds")

# Log the first few occurrences of a repeating problem, then one in this many.
_LOG_FIRST: Final = 10
_LOG_EVERY: Final = 1000


def should_log(count: int) -> bool:
    """Rate limit for a repeating warning: the first ten, then every thousandth."""
    return count <= _LOG_FIRST or count % _LOG_EVERY == 0


class TickSink(Protocol):
    """Receives parsed ticks. A feed awaits it, so a slow sink slows the feed down (a Coalescer in
    between absorbs that: it keeps only the newest pending tick per symbol)."""

    async def __call__(self, tick: PriceTick) -> None: ...


def tick_command_id(symbol: str, update_id: int, source: str = "") -> str:
    """``tick:<symbol>:<update id>``, or ``tick:<source>:<symbol>:<n>`` for a source with its own
    counter. Deterministic: the same update always gets the same id."""
    if source:
        return f"tick:{source}:{symbol}:{update_id}"
    return f"tick:{symbol}:{update_id}"


@dataclass(slots=True)
class FeedStats:
    """Counters of one feed. Plain ints, only ever incremented; read them for metrics."""

    received: int = 0  # ticks parsed successfully (before ordering and coalescing)
    forwarded: int = 0  # ticks handed to the sink
    coalesced: int = 0  # pending ticks replaced by a newer one before they were forwarded
    dropped_out_of_order: int = 0  # update id <= the last accepted one of the symbol
    dropped_bad: int = 0  # malformed messages, bad fields, too many decimals, crossed books
    ignored: int = 0  # well-formed messages that are not ticks: acks, other streams
    sink_errors: int = 0  # the sink raised; the tick is lost (the next one replaces it anyway)
    connects: int = 0  # successful connections (the first one included)
    disconnects: int = 0  # connections lost or failed attempts


class Coalescer:
    """A TickSink that forwards to `sink` at most one tick per symbol per `interval_ms`.

    - Ordering: a tick whose update id is <= the last accepted one of its symbol (forwarded or
      pending) is dropped and counted; update id 0 means "none" and is never dropped.
    - Coalescing: the first tick of a quiet symbol goes out at once; ticks within the interval
      replace the pending one (newest wins) and it goes out when the interval has passed, so the
      last value of a burst always arrives, at most `interval_ms` late.
    - `interval_ms=0` forwards every accepted tick at once, from the caller's task.
    - Otherwise one flush task (started on the first tick) calls the sink, so the sink is never
      called concurrently and the feed never waits for it.
    - A sink that raises is logged and counted (`sink_errors`); the flush task keeps going.

    `aclose()` flushes what is pending and stops the flush task; `aclose(flush=False)` drops it.
    """

    def __init__(
        self,
        sink: TickSink,
        interval_ms: int = 100,
        *,
        stats: FeedStats | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_ms < 0:
            raise ValueError(f"interval_ms must be >= 0, got {interval_ms}")
        self.sink = sink
        self.interval_s = interval_ms / 1000
        self.stats = stats if stats is not None else FeedStats()
        self._clock = clock
        self._pending: dict[str, PriceTick] = {}
        self._last_sent: dict[str, float] = {}
        self._last_update_id: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # Counters, as attributes of the coalescer too.
    @property
    def forwarded(self) -> int:
        return self.stats.forwarded

    @property
    def coalesced(self) -> int:
        return self.stats.coalesced

    @property
    def dropped_out_of_order(self) -> int:
        return self.stats.dropped_out_of_order

    @property
    def dropped_bad(self) -> int:
        return self.stats.dropped_bad

    @property
    def pending(self) -> int:
        """Ticks waiting for their symbol's interval to pass."""
        return len(self._pending)

    async def __call__(self, tick: PriceTick) -> None:
        if self._closing:
            raise RuntimeError("the coalescer is closed")
        if not self._accept(tick):
            return
        if self.interval_s == 0:
            await self._forward(tick)
            return
        if tick.symbol in self._pending:
            self.stats.coalesced += 1
        self._pending[tick.symbol] = tick
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush_loop(), name="coalescer-flush")

    def _accept(self, tick: PriceTick) -> bool:
        if tick.update_id:
            last = self._last_update_id.get(tick.symbol, 0)
            if tick.update_id <= last:
                self.stats.dropped_out_of_order += 1
                if should_log(self.stats.dropped_out_of_order):
                    log.warning(
                        "feed_tick_out_of_order",
                        symbol=tick.symbol,
                        update_id=tick.update_id,
                        last_update_id=last,
                        dropped=self.stats.dropped_out_of_order,
                    )
                return False
            self._last_update_id[tick.symbol] = tick.update_id
        return True

    async def _forward(self, tick: PriceTick) -> None:
        self.stats.forwarded += 1
        try:
            await self.sink(tick)
        except Exception:
            self.stats.sink_errors += 1
            if should_log(self.stats.sink_errors):
                log.exception("feed_sink_error", symbol=tick.symbol, command_id=tick.command_id)

    async def _flush_loop(self) -> None:
        while True:
            self._wake.clear()
            now = self._clock()
            due = [
                symbol
                for symbol in self._pending
                if self._closing or now >= self._last_sent.get(symbol, -math.inf) + self.interval_s
            ]
            for symbol in due:
                tick = self._pending.pop(symbol)
                self._last_sent[symbol] = now
                await self._forward(tick)
            if self._closing and not self._pending:
                return
            if due:
                continue  # new ticks may have come in while the sink ran
            if not self._pending:
                await self._wake.wait()
                continue
            delay = min(self._last_sent[s] for s in self._pending) + self.interval_s - self._clock()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()

    async def aclose(self, *, flush: bool = True) -> None:
        """Stop the flush task; forward what is pending first unless `flush` is False."""
        self._closing = True
        task, self._task = self._task, None
        if task is None or task.done():
            if flush:
                for symbol in list(self._pending):
                    await self._forward(self._pending.pop(symbol))
            self._pending.clear()
            return
        if flush:
            self._wake.set()
            await task
        else:
            dropped = len(self._pending)
            self._pending.clear()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if dropped:
                log.info("feed_pending_ticks_dropped", count=dropped)

    def reopen(self) -> None:
        """Accept ticks again after `aclose()` (a feed that is run again)."""
        self._closing = False


class StaleWatch:
    """The last update time of each symbol, on the monotonic clock of this process.

    A symbol is stale when its last update (or, if it never had one, the start of the watch) is
    more than `stale_after_s` ago. `symbols` are the ones expected; others join on their first
    update.
    """

    def __init__(
        self,
        stale_after_s: float,
        symbols: Iterable[str] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if stale_after_s <= 0:
            raise ValueError(f"stale_after_s must be > 0, got {stale_after_s}")
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._symbols: list[str] = list(dict.fromkeys(symbols))
        self._since = clock()
        self._last: dict[str, float] = {}

    def restart(self) -> None:
        """Start the watch again (a feed that starts running): forget all update times."""
        self._since = self._clock()
        self._last.clear()

    def touch(self, symbol: str) -> None:
        if symbol not in self._last and symbol not in self._symbols:
            self._symbols.append(symbol)
        self._last[symbol] = self._clock()

    def last_update(self, symbol: str) -> float | None:
        """Monotonic time of the symbol's last update, None if it never had one."""
        return self._last.get(symbol)

    def age(self, symbol: str) -> float:
        """Seconds since the symbol's last update (or since the watch started)."""
        return self._clock() - self._last.get(symbol, self._since)

    def is_stale(self, symbol: str) -> bool:
        return self.age(symbol) > self.stale_after_s

    def stale_symbols(self) -> list[str]:
        """The stale symbols, in the order they were given (then first seen)."""
        return [symbol for symbol in self._symbols if self.is_stale(symbol)]
