"""Replay recorded Backpack messages, and record them.

The file is JSON lines, one WebSocket message per line as Backpack sent it
(``{"stream": "bookTicker.BTC_USDC_PERP", "data": {...}}``). Lines are parsed exactly like live
messages (`backpack.parse_message`): bad lines are counted (`stats.dropped_bad`) and skipped,
replies and other streams are ignored, blank lines too.

Pace: a tick is sent when the time since the first tick, scaled by `speed`, reaches the gap
between their event times `E` (``speed=2`` is twice as fast; ``speed=0`` as fast as possible).
A line whose `E` goes backwards is sent at once. Out-of-order update ids are dropped like live.

`record(url, path, seconds)` connects to a Backpack-compatible WebSocket, subscribes to the
markets' book tickers and writes every stream message it receives for `seconds` to `path`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import msgspec
import structlog
from websockets.asyncio.client import connect

from cashmarkets.core.products.leverage import DEFAULT_MARKETS, MarketConfig, PriceTick
from cashmarkets.feeds.backpack import BadMessage, parse_message, stream_name, subscribe_message
from cashmarkets.feeds.ticks import Coalescer, FeedStats, StaleWatch, TickSink, should_log

__all__ = ["ReplayFeed", "record"]

log = structlog.get_logger("cashmarkets.feeds.replay")


class ReplayFeed:
    """Ticks from a recorded JSONL file of Backpack messages, at the recorded pace / `speed`.

    `run()` returns at the end of the file (or on `stop()`); `coalesce_ms` (default 0: every tick)
    coalesces like the live feed.
    """

    def __init__(
        self,
        path: Path,
        markets: Iterable[MarketConfig],
        sink: TickSink,
        speed: float = 1.0,
        *,
        coalesce_ms: int = 0,
        stale_after_s: float = 10.0,
    ) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self.path = Path(path)
        self.markets = tuple(markets)
        if not self.markets:
            raise ValueError("no markets")
        self.markets_by_stream = {stream_name(m): m for m in self.markets}
        self.speed = speed
        self.stats = FeedStats()
        self.coalescer = Coalescer(sink, coalesce_ms, stats=self.stats)
        self.stale = StaleWatch(stale_after_s, [m.symbol for m in self.markets])
        self.lines = 0
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        self.coalescer.reopen()
        self.stale.restart()
        first_us: int | None = None
        started = 0.0
        flush = False
        try:
            with self.path.open("rb") as f:
                for line_no, line in enumerate(f, start=1):
                    if self._stopping.is_set():
                        break
                    self.lines = line_no
                    if not line.strip():
                        continue
                    tick = self._parse(line, line_no)
                    if tick is None:
                        continue
                    if self.speed and tick.exchange_ts_us:
                        if first_us is None:
                            first_us, started = tick.exchange_ts_us, time.monotonic()
                        due = started + (tick.exchange_ts_us - first_us) / 1e6 / self.speed
                        delay = due - time.monotonic()
                        if delay > 0 and await self._stopped_within(delay):
                            break
                    elif line_no % 256 == 0:
                        await asyncio.sleep(0)  # as fast as possible, but let others run
                    self.stats.received += 1
                    self.stale.touch(tick.symbol)
                    await self.coalescer(tick)
            flush = True
        finally:
            self._stopping.clear()
            await self.coalescer.aclose(flush=flush)

    async def stop(self) -> None:
        self._stopping.set()

    async def _stopped_within(self, delay: float) -> bool:
        try:
            async with asyncio.timeout(delay):
                await self._stopping.wait()
        except TimeoutError:
            return False
        return True

    def _parse(self, line: bytes, line_no: int) -> PriceTick | None:
        try:
            parsed = parse_message(line, self.markets_by_stream)
        except BadMessage as exc:
            self.stats.dropped_bad += 1
            if should_log(self.stats.dropped_bad):
                log.warning(
                    "replay_bad_line",
                    path=str(self.path),
                    line=line_no,
                    reason=exc.reason,
                    detail=exc.detail[:200],
                )
            return None
        if isinstance(parsed, PriceTick):
            return parsed
        self.stats.ignored += 1
        return None


async def record(
    url: str,
    path: Path,
    seconds: float,
    markets: Iterable[MarketConfig] = DEFAULT_MARKETS,
    *,
    proxy: str | Literal[True] | None = True,
) -> int:
    """Write the stream messages of `markets`' book tickers for `seconds` to `path` (JSONL,
    appended). Returns the number of lines written. One connection, no reconnect."""
    markets = tuple(markets)
    streams = {stream_name(m) for m in markets}
    written = 0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        async with connect(url, proxy=proxy, open_timeout=10, close_timeout=2) as ws:
            await ws.send(subscribe_message(markets))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    async for raw in ws:
                        data = raw.encode() if isinstance(raw, str) else raw
                        try:
                            msg = msgspec.json.decode(data)
                        except msgspec.DecodeError:
                            continue
                        if not isinstance(msg, dict) or msg.get("stream") not in streams:
                            continue
                        line = data.strip()
                        if b"\n" in line or b"\r" in line:  # one message per line
                            line = msgspec.json.encode(msg)
                        f.write(line + b"\n")
                        written += 1
    return written
