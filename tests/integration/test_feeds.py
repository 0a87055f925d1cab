"""BackpackFeed against a local WebSocket server that speaks Backpack's protocol.

The server is `tests.fakes.backpack.FakeBackpack`. The client is the real feed code; nothing is
mocked.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from cashmarkets.core.products.leverage import DEFAULT_MARKETS, MarketConfig, PriceTick
from cashmarkets.feeds import BackpackFeed, ReplayFeed, record
from tests.fakes.backpack import BTC_STREAM, E0, ETH_STREAM, SOL_STREAM, FakeBackpack, book, wait_until
from tests.support.ports import free_port

BTC, ETH, SOL = DEFAULT_MARKETS


class Collect:
    """A TickSink that keeps what it gets, with the monotonic time it got it."""

    def __init__(self) -> None:
        self.ticks: list[PriceTick] = []
        self.times: list[float] = []

    async def __call__(self, tick: PriceTick) -> None:
        self.ticks.append(tick)
        self.times.append(time.monotonic())

    def ids(self, symbol: str | None = None) -> list[int]:
        return [t.update_id for t in self.ticks if symbol is None or t.symbol == symbol]


@pytest.fixture
async def server() -> AsyncIterator[FakeBackpack]:
    fake = FakeBackpack()
    await fake.start()
    yield fake
    await fake.close()


def make_feed(
    url: str,
    sink: Collect,
    markets: tuple[MarketConfig, ...] = DEFAULT_MARKETS,
    **kwargs: Any,
) -> BackpackFeed:
    options: dict[str, Any] = {
        "coalesce_ms": 0,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.4,
        "jitter": 0.2,
        "rng": random.Random(1),
        "proxy": None,
    }
    options.update(kwargs)
    return BackpackFeed(url, markets, sink, **options)


@asynccontextmanager
async def running(feed: BackpackFeed) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(feed.run())
    try:
        yield task
    finally:
        await feed.stop()
        await asyncio.wait_for(task, 3)


# ---- parsing ---------------------------------------------------------------------------------


async def test_subscribes_and_parses_ticks_into_integers(server: FakeBackpack) -> None:
    sink = Collect()
    feed = make_feed(server.url, sink)
    async with running(feed):
        await server.wait_subscribed()
        assert server.requests[0] == {
            "method": "SUBSCRIBE",
            "params": [BTC_STREAM, ETH_STREAM, SOL_STREAM],
            "id": 1,
        }
        # The example from Backpack's documentation, verbatim.
        await server.send_raw(
            '{"stream":"bookTicker.ETH_USDC_PERP","data":{"e":"bookTicker","E":1757143198737843,'
            '"T":1757143198736215,"s":"ETH_USDC_PERP","a":"4303.93","A":"6.9717","b":"4303.92",'
            '"B":"5.0264","u":2063435950}}'
        )
        await server.publish(BTC_STREAM, book(BTC_STREAM, 7, bid="65432.1", ask="65432.2"))
        await server.publish(SOL_STREAM, book(SOL_STREAM, 9, bid="150.1234", ask="150.13"))
        await wait_until(lambda: len(sink.ticks) == 3)
    eth, btc, sol = sink.ticks
    assert eth == PriceTick(
        command_id="tick:ETH:2063435950",
        symbol="ETH",
        bid=430392,
        ask=430393,
        bid_qty=502640000,
        ask_qty=697170000,
        exchange_ts_us=1757143198737843,
        update_id=2063435950,
    )
    assert (btc.symbol, btc.bid, btc.ask) == ("BTC", 6543210, 6543220)
    assert (btc.bid_qty, btc.ask_qty) == (150000000, 25000000)
    assert (btc.command_id, btc.update_id, btc.exchange_ts_us) == ("tick:BTC:7", 7, E0 + 7)
    assert (sol.symbol, sol.bid, sol.ask) == ("SOL", 1501234, 1501300)  # SOL has 4 price decimals
    assert feed.stats.received == 3 and feed.stats.forwarded == 3
    assert feed.stats.ignored == 1  # the subscription reply
    assert feed.stats.dropped_bad == 0


async def test_unsubscribed_streams_are_not_delivered(server: FakeBackpack) -> None:
    sink = Collect()
    feed = make_feed(server.url, sink, markets=(BTC,))
    async with running(feed):
        await server.wait_subscribed()
        assert server.subscriptions == [[BTC_STREAM]]
        await server.publish(ETH_STREAM, book(ETH_STREAM, 1, bid="3500", ask="3501"))  # server filters
        # A server that sends a stream nobody asked for: the client filters too.
        await server.send_raw(json.dumps({"stream": ETH_STREAM, "data": book(ETH_STREAM, 2)}))
        await server.send_raw(json.dumps({"stream": "depth.BTC_USDC_PERP", "data": {"e": "depth"}}))
        await server.publish(BTC_STREAM, book(BTC_STREAM, 3))
        await wait_until(lambda: len(sink.ticks) == 1)
        await asyncio.sleep(0.05)
    assert [(t.symbol, t.update_id) for t in sink.ticks] == [("BTC", 3)]
    assert feed.stats.ignored == 3  # the reply, ETH, depth
    assert feed.stats.dropped_bad == 0


async def test_malformed_messages_are_counted_and_skipped(server: FakeBackpack) -> None:
    sink = Collect()
    feed = make_feed(server.url, sink)
    bad: list[str | bytes] = [
        "not json",
        "ping",
        b"\xff\xfe\x00binary",
        "[1, 2]",
        '{"stream": "bookTicker.BTC_USDC_PERP", "data": "x"}',
        '{"stream": 5, "data": {}}',
        json.dumps({"stream": BTC_STREAM, "data": {"e": "bookTicker", "u": 5}}),  # fields missing
        json.dumps({"stream": BTC_STREAM, "data": book(BTC_STREAM, 5, u="5")}),  # u as a string
        json.dumps({"stream": BTC_STREAM, "data": book(BTC_STREAM, 5, E=1.5)}),  # E as a float
        json.dumps({"stream": BTC_STREAM, "data": book(BTC_STREAM, 5, bid="abc")}),
        json.dumps({"stream": BTC_STREAM, "data": book(BTC_STREAM, 5, bid="-1")}),
        json.dumps({"stream": BTC_STREAM, "data": book(BTC_STREAM, 5, bid="0")}),
        json.dumps({"stream": BTC_STREAM, "data": book(BTC_STREAM, 5, bid="65433", ask="65432")}),
        json.dumps({"stream": BTC_STREAM, "data": book(BTC_STREAM, 5, ask_qty="1.000000001")}),
        json.dumps({"stream": BTC_STREAM, "data": book(BTC_STREAM, 5, s="ETH_USDC_PERP")}),
        json.dumps({"stream": BTC_STREAM, "data": book(BTC_STREAM, 5, e="trade")}),
        json.dumps({"stream": BTC_STREAM, "data": book(BTC_STREAM, 5, u=0)}),
        json.dumps({"stream": BTC_STREAM, "data": book(BTC_STREAM, 5, u=2**64)}),
    ]
    async with running(feed):
        await server.wait_subscribed()
        for message in bad:
            await server.send_raw(message)
        await server.send_raw('{"method": "PING"}')  # not Backpack's protocol: ignored, not answered
        await server.publish(BTC_STREAM, book(BTC_STREAM, 6, bid="65000", ask="65000.5"))
        await wait_until(lambda: len(sink.ticks) == 1)
    assert [(t.update_id, t.bid, t.ask) for t in sink.ticks] == [(6, 6500000, 6500050)]
    assert feed.stats.dropped_bad == len(bad)
    assert feed.stats.ignored == 2  # the subscription reply and the PING
    assert feed.stats.connects == 1  # nothing above cost the connection
    assert len(server.requests) == 1  # and nothing was answered


async def test_price_with_too_many_decimals_is_dropped_not_rounded(server: FakeBackpack) -> None:
    sink = Collect()
    feed = make_feed(server.url, sink)
    async with running(feed):
        await server.wait_subscribed()
        await server.publish(BTC_STREAM, book(BTC_STREAM, 1, bid="65432.123", ask="65432.2"))
        await server.publish(BTC_STREAM, book(BTC_STREAM, 2, bid="65432.1", ask="65432.201"))
        await server.publish(SOL_STREAM, book(SOL_STREAM, 3, bid="150.12345", ask="150.2"))
        await server.publish(BTC_STREAM, book(BTC_STREAM, 4, bid="65432.120", ask="65432.2000"))  # exact
        await server.publish(SOL_STREAM, book(SOL_STREAM, 5, bid="150.1234", ask="150.2"))
        await wait_until(lambda: len(sink.ticks) == 2)
        await asyncio.sleep(0.02)
    assert [(t.symbol, t.update_id, t.bid, t.ask) for t in sink.ticks] == [
        ("BTC", 4, 6543212, 6543220),
        ("SOL", 5, 1501234, 1502000),
    ]
    assert feed.stats.dropped_bad == 3


async def test_server_error_reply_is_ignored(server: FakeBackpack) -> None:
    server.reply = lambda msg: {"id": msg["id"], "error": {"code": 4005, "message": "Invalid stream"}}
    sink = Collect()
    feed = make_feed(server.url, sink, markets=(BTC,))
    async with running(feed):
        await server.wait_subscribed()
        await server.publish(BTC_STREAM, book(BTC_STREAM, 1))
        await wait_until(lambda: len(sink.ticks) == 1)
    assert feed.stats.ignored == 1 and feed.stats.dropped_bad == 0


# ---- keep-alive and reconnects ----------------------------------------------------------------


async def test_server_pings_are_answered(server: FakeBackpack) -> None:
    sink = Collect()
    feed = make_feed(server.url, sink, markets=(BTC,))
    async with running(feed):
        await server.wait_subscribed()
        assert await server.ping_all() == 1
        assert await server.ping_all() == 1
        await server.publish(BTC_STREAM, book(BTC_STREAM, 1))
        await wait_until(lambda: len(sink.ticks) == 1)
    assert feed.stats.connects == 1


async def test_reconnects_with_backoff_and_resubscribes_after_abrupt_disconnect(
    server: FakeBackpack,
) -> None:
    sink = Collect()
    feed = make_feed(
        server.url, sink, markets=(BTC, ETH), reconnect_min_s=0.1, reconnect_max_s=0.3, jitter=0.2
    )
    async with running(feed):
        await server.wait_subscribed(1)
        await server.publish(BTC_STREAM, book(BTC_STREAM, 1))
        await wait_until(lambda: len(sink.ticks) == 1)

        gaps = []
        for n in (2, 3, 4):
            dropped_at = time.monotonic()
            server.drop()
            await server.wait_subscribed(n)
            gaps.append(server.connected_at[-1] - dropped_at)
            await server.publish(BTC_STREAM, book(BTC_STREAM, n))
            await server.publish(ETH_STREAM, book(ETH_STREAM, n, bid="3500", ask="3500.01"))
            await wait_until(partial(lambda ids: sink.ids("ETH") == ids, list(range(2, n + 1))))
    # Exponential backoff with jitter 0.2: 0.1 s, 0.2 s, then capped at 0.3 s (each +-20 %).
    for gap, base in zip(gaps, (0.1, 0.2, 0.3), strict=True):
        assert base * 0.8 <= gap <= base * 1.2 + 0.25, gaps
    assert server.subscriptions == [[BTC_STREAM, ETH_STREAM]] * 4
    assert sink.ids("BTC") == [1, 2, 3, 4]
    assert feed.stats.connects == 4 and feed.stats.disconnects == 3
    assert feed.stats.dropped_bad == 0


async def test_backoff_starts_over_after_a_healthy_connection(server: FakeBackpack) -> None:
    sink = Collect()
    feed = make_feed(
        server.url, sink, markets=(BTC,), reconnect_min_s=0.05, reconnect_max_s=1.0, healthy_after_s=0.2
    )
    async with running(feed):
        await server.wait_subscribed(1)
        server.drop()
        await server.wait_subscribed(2)
        server.drop()
        await server.wait_subscribed(3)
        assert 0.08 <= feed.last_delay_s <= 0.12  # second attempt: 0.1 s +-20 %
        await asyncio.sleep(0.25)  # healthy
        server.drop()
        await server.wait_subscribed(4)
        assert 0.04 <= feed.last_delay_s <= 0.06  # back to 0.05 s +-20 %


async def test_keeps_retrying_while_the_server_is_down() -> None:
    port = free_port()  # nobody listens on it (yet); outside the range client sockets take
    sink = Collect()
    feed = make_feed(f"ws://127.0.0.1:{port}", sink, markets=(BTC,), reconnect_max_s=0.1)
    fake = FakeBackpack()
    async with running(feed):
        await wait_until(lambda: feed.stats.disconnects >= 3)
        await fake.start(port)
        try:
            await fake.wait_subscribed()
            await fake.publish(BTC_STREAM, book(BTC_STREAM, 1))
            await wait_until(lambda: len(sink.ticks) == 1)
        finally:
            await feed.stop()
            await fake.close()
    assert feed.stats.connects == 1


async def test_idle_connection_is_reopened(server: FakeBackpack) -> None:
    sink = Collect()
    feed = make_feed(server.url, sink, markets=(BTC,), idle_timeout_s=0.2)
    async with running(feed):
        await server.wait_subscribed(1)
        started = time.monotonic()
        await server.wait_subscribed(2)  # no tick for 0.2 s: the feed reconnects by itself
        assert time.monotonic() - started >= 0.15
        await server.publish(BTC_STREAM, book(BTC_STREAM, 1))
        await wait_until(lambda: len(sink.ticks) == 1)


async def test_stop_returns_and_delivers_the_pending_tick(server: FakeBackpack) -> None:
    sink = Collect()
    feed = make_feed(server.url, sink, markets=(BTC,), coalesce_ms=5_000)
    task = asyncio.create_task(feed.run())
    await server.wait_subscribed()
    await server.publish(BTC_STREAM, book(BTC_STREAM, 1))
    await wait_until(lambda: sink.ids() == [1])  # the first tick of a quiet symbol goes out at once
    await server.publish(BTC_STREAM, book(BTC_STREAM, 2))
    await server.publish(BTC_STREAM, book(BTC_STREAM, 3))
    await wait_until(lambda: feed.stats.received == 3)
    await asyncio.sleep(0.02)
    assert sink.ids() == [1]  # 3 waits for the interval, 2 was replaced by it
    await feed.stop()
    await asyncio.wait_for(task, 2)
    assert sink.ids() == [1, 3]
    assert not feed.connected.is_set()


# ---- ordering, coalescing, staleness -----------------------------------------------------------


async def test_out_of_order_updates_are_dropped(server: FakeBackpack) -> None:
    sink = Collect()
    feed = make_feed(server.url, sink, markets=(BTC, ETH))
    async with running(feed):
        await server.wait_subscribed()
        for u in (10, 11, 9, 11, 12):
            await server.publish(BTC_STREAM, book(BTC_STREAM, u))
        await server.publish(ETH_STREAM, book(ETH_STREAM, 5, bid="3500", ask="3501"))  # own sequence
        await wait_until(lambda: len(sink.ticks) == 4)
        await asyncio.sleep(0.02)
    assert sink.ids("BTC") == [10, 11, 12]
    assert sink.ids("ETH") == [5]
    assert feed.stats.dropped_out_of_order == 2


async def test_coalescing_delivers_at_most_one_tick_per_interval_and_the_last_of_a_burst(
    server: FakeBackpack,
) -> None:
    interval = 0.1
    sink = Collect()
    feed = make_feed(server.url, sink, markets=(BTC, ETH), coalesce_ms=int(interval * 1000))
    async with running(feed):
        await server.wait_subscribed()
        for u in range(1, 51):
            await server.publish(BTC_STREAM, book(BTC_STREAM, u, bid=f"65000.{u:02d}", ask="65001"))
            if u % 10 == 0:
                await server.publish(ETH_STREAM, book(ETH_STREAM, u, bid="3500", ask="3501"))
            if u == 25:
                await asyncio.sleep(0.15)
        await wait_until(lambda: feed.stats.received == 55)
        await wait_until(lambda: sink.ids("BTC")[-1:] == [50] and sink.ids("ETH")[-1:] == [50])
        await asyncio.sleep(interval + 0.05)  # nothing else arrives
    for symbol in ("BTC", "ETH"):
        times = [t for t, tick in zip(sink.times, sink.ticks, strict=True) if tick.symbol == symbol]
        assert all(b - a >= interval * 0.9 for a, b in itertools.pairwise(times)), symbol
    btc = [t for t in sink.ticks if t.symbol == "BTC"]
    # The newest tick wins: the first one out is whatever was newest when the flush ran.
    assert btc[0].update_id <= 25 and btc[-1].update_id == 50 and btc[-1].bid == 6500050
    assert any(t.update_id == 25 for t in btc)  # the last value before the pause
    assert len(btc) <= 6  # 50 updates in ~0.2 s
    assert feed.stats.forwarded == len(sink.ticks)
    assert feed.stats.coalesced == 55 - len(sink.ticks)
    assert sink.ids("BTC") == sorted(sink.ids("BTC"))


async def test_stale_detection_flags_a_symbol_without_updates(server: FakeBackpack) -> None:
    sink = Collect()
    feed = make_feed(server.url, sink, stale_after_s=0.15)
    async with running(feed):
        await server.wait_subscribed()
        for u in range(1, 8):
            await server.publish(BTC_STREAM, book(BTC_STREAM, u))
            if u == 1:
                await server.publish(ETH_STREAM, book(ETH_STREAM, u, bid="3500", ask="3501"))
            await asyncio.sleep(0.05)
        assert feed.stale.stale_symbols() == ["ETH", "SOL"]
        assert not feed.stale.is_stale("BTC")
        await asyncio.sleep(0.2)
        assert feed.stale.stale_symbols() == ["BTC", "ETH", "SOL"]


# ---- record and replay ---------------------------------------------------------------------------


async def test_record_then_replay(server: FakeBackpack, tmp_path: Path) -> None:
    path = tmp_path / "rec" / "backpack.jsonl"

    async def publish() -> None:
        await server.wait_subscribed()
        for u in range(1, 6):
            await server.publish(BTC_STREAM, book(BTC_STREAM, u, bid=f"6500{u}", ask=f"6500{u}.5"))
        await server.publish(ETH_STREAM, book(ETH_STREAM, 6, bid="3500", ask="3501"))

    publisher = asyncio.create_task(publish())
    written = await record(server.url, path, 0.3, (BTC, ETH), proxy=None)
    await publisher
    assert written == 6
    assert len(path.read_text().splitlines()) == 6  # the reply is not recorded

    sink = Collect()
    await ReplayFeed(path, (BTC, ETH), sink, speed=0).run()
    assert [(t.symbol, t.update_id) for t in sink.ticks] == [("BTC", u) for u in range(1, 6)] + [("ETH", 6)]
    assert sink.ticks[0].bid == 6500100 and sink.ticks[0].ask == 6500150
