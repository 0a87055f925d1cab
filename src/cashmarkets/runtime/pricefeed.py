"""The price source: ticks become PriceTick commands in the same log as the users' instructions,
so every instruction executes at the latest price before it.

Embedded mode (`serve`) runs the feed in process and submits through the runtime; distributed
mode runs it as its own process (`cashmarkets poller`) appending straight to the Redis log.
Either way `FeedCollector` exposes the feed's counters and per-symbol staleness as metrics.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from cashmarkets.core.engine import EngineCodec
from cashmarkets.core.products.leverage import DEFAULT_MARKETS, MarketConfig, PriceTick
from cashmarkets.feeds import BackpackFeed, ReplayFeed, SyntheticFeed, TickSink
from cashmarkets.feeds.ticks import should_log
from cashmarkets.ops.settings import Settings
from cashmarkets.runtime.runner import Overloaded, Runtime, RuntimeFailed

log = structlog.get_logger("cashmarkets.pricefeed")

SOURCES = ("synthetic", "backpack", "replay", "none")


def runtime_sink(runtime: Runtime) -> TickSink:
    """Embedded mode: submit each tick through the runtime (same group commit as user commands)."""

    async def sink(tick: PriceTick) -> None:
        try:
            await runtime.submit(tick)
        except (Overloaded, RuntimeFailed) as exc:
            log.warning("price tick not logged", symbol=tick.symbol, error=repr(exc))

    return sink


class LogSink:
    """Distributed mode: append each tick to the command log with no reply channel (the poller
    does not wait for the engine). A failed append loses that tick only: the next one supersedes
    it, and the engine refuses trading on a price that stays old."""

    def __init__(self, command_log: Any, codec: EngineCodec) -> None:
        self.log = command_log
        self.encode = codec.encoder.encode
        self.appended = 0
        self.failed = 0

    async def __call__(self, tick: PriceTick) -> None:
        tick.ts_ns = 0  # the engine takes the time from the stream entry id (decision 022)
        try:
            await self.log.append([self.encode(tick)])
        except Exception as exc:  # Redis down: keep polling, the feed must outlive an outage
            self.failed += 1
            if should_log(self.failed):
                log.warning("price tick not logged", symbol=tick.symbol, error=repr(exc), failed=self.failed)
            return
        self.appended += 1


def build_feed(
    settings: Settings, sink: TickSink, markets: tuple[MarketConfig, ...] = DEFAULT_MARKETS
) -> Any | None:
    """The configured feed (`CASHMARKETS_PRICE_SOURCE`: synthetic, backpack, replay or none), for
    `markets`: the leverage rules in force where the caller has them (decision 023)."""
    source = settings.price_source
    if source == "none":
        return None
    if source == "synthetic":
        # Update ids from the clock: a restarted synthetic feed keeps increasing them, as the
        # engine requires, without reading the engine's state. Its "exchange" times start now.
        now_us = time.time_ns() // 1_000
        return SyntheticFeed(
            markets,
            sink,
            seed=settings.price_seed,
            interval_ms=settings.price_interval_ms,
            first_update_id=now_us,
            start_ts_us=now_us,
        )
    if source == "backpack":
        return BackpackFeed(
            settings.backpack_url,
            markets,
            sink,
            coalesce_ms=settings.price_interval_ms,
            stale_after_s=settings.price_stale_after_s,
        )
    if source == "replay":
        if not settings.price_replay_file:
            raise SystemExit("CASHMARKETS_PRICE_SOURCE=replay needs CASHMARKETS_PRICE_REPLAY_FILE")
        path = Path(settings.price_replay_file)
        if not path.is_file():
            raise SystemExit(f"no replay file at {path}")
        return ReplayFeed(
            path,
            markets,
            sink,
            speed=settings.price_replay_speed,
            coalesce_ms=settings.price_interval_ms,
            stale_after_s=settings.price_stale_after_s,
        )
    raise SystemExit(f"CASHMARKETS_PRICE_SOURCE must be one of {', '.join(SOURCES)}, not {source!r}")


class FeedCollector(Collector):
    """Prometheus view of one feed, read at scrape time (no bookkeeping on the tick path):

    cashmarkets_feed_ticks_total{outcome}      received / forwarded / coalesced / dropped_* / sink_errors
    cashmarkets_feed_connections_total{event}  connects / disconnects (live feeds)
    cashmarkets_price_age_seconds{symbol}      since the symbol's last update from the source
    cashmarkets_price_stale{symbol}            1 while that age is over the stale limit
    """

    _OUTCOMES = ("received", "forwarded", "coalesced", "dropped_out_of_order", "dropped_bad", "sink_errors")

    def __init__(self, feed: Any) -> None:
        self.feed = feed

    def collect(self) -> Iterator[Any]:
        stats = self.feed.stats
        ticks = CounterMetricFamily(
            "cashmarkets_feed_ticks", "Price feed ticks by outcome", labels=["outcome"]
        )
        for outcome in self._OUTCOMES:
            ticks.add_metric([outcome], getattr(stats, outcome))
        yield ticks
        conns = CounterMetricFamily(
            "cashmarkets_feed_connections", "Price feed connection events", labels=["event"]
        )
        conns.add_metric(["connect"], stats.connects)
        conns.add_metric(["disconnect"], stats.disconnects)
        yield conns
        stale = getattr(self.feed, "stale", None)
        if stale is None:  # the synthetic walk is never stale
            return
        age = GaugeMetricFamily(
            "cashmarkets_price_age_seconds", "Seconds since the last price update", labels=["symbol"]
        )
        flag = GaugeMetricFamily(
            "cashmarkets_price_stale", "1 while the symbol's price is older than the limit", labels=["symbol"]
        )
        for market in self.feed.markets:
            age.add_metric([market.symbol], stale.age(market.symbol))
            flag.add_metric([market.symbol], 1.0 if stale.is_stale(market.symbol) else 0.0)
        yield age
        yield flag


def watch_feed(feed: Any) -> FeedCollector:
    """Register the feed's collector in this process's registry (once per process)."""
    from cashmarkets.ops.metrics import REGISTRY

    collector = FeedCollector(feed)
    REGISTRY.register(collector)
    return collector


def unwatch_feed(collector: FeedCollector) -> None:
    from cashmarkets.ops.metrics import REGISTRY

    REGISTRY.unregister(collector)
