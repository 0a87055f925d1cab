"""Coalescer, StaleWatch and command ids of the price feeds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cashmarkets.core.products.leverage import PriceTick
from cashmarkets.feeds import Coalescer, StaleWatch, tick_command_id


def tick(symbol: str, update_id: int, bid: int = 100) -> PriceTick:
    return PriceTick(
        command_id=tick_command_id(symbol, update_id),
        symbol=symbol,
        bid=bid,
        ask=bid + 1,
        update_id=update_id,
    )


class Collect:
    def __init__(self) -> None:
        self.ticks: list[PriceTick] = []
        self.times: list[float] = []

    async def __call__(self, t: PriceTick) -> None:
        self.ticks.append(t)
        self.times.append(time.monotonic())

    def ids(self, symbol: str | None = None) -> list[int]:
        return [t.update_id for t in self.ticks if symbol is None or t.symbol == symbol]


async def wait_until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.002)


def test_command_ids_are_deterministic() -> None:
    assert tick_command_id("BTC", 2063435950) == "tick:BTC:2063435950"
    assert tick_command_id("ETH", 42, "synthetic:7") == "tick:synthetic:7:ETH:42"


# ---- Coalescer --------------------------------------------------------------------------------


async def test_burst_delivers_the_first_and_the_last_value() -> None:
    sink = Collect()
    c = Coalescer(sink, 50)
    # The interval runs from when the coalescer sent the first tick, which is after this moment;
    # the sink's own receipt time of that tick can lag on a busy machine, so it is no reference.
    before_first_s = time.monotonic()
    await c(tick("BTC", 1))
    await wait_until(lambda: sink.ids() == [1])  # a quiet symbol goes out at once
    for u in range(2, 21):
        await c(tick("BTC", u, bid=100 + u))
    assert sink.ids() == [1]
    await wait_until(lambda: len(sink.ticks) == 2)
    assert sink.ids() == [1, 20] and sink.ticks[-1].bid == 120
    assert sink.times[1] - before_first_s >= 0.05
    assert (c.forwarded, c.coalesced, c.dropped_out_of_order, c.pending) == (2, 18, 0, 0)
    await asyncio.sleep(0.08)
    assert sink.ids() == [1, 20]  # nothing more
    await c.aclose()


async def test_symbols_are_coalesced_independently() -> None:
    sink = Collect()
    c = Coalescer(sink, 40)
    for u in range(1, 11):
        await c(tick("BTC", u))
        await c(tick("ETH", 100 + u))
    await wait_until(lambda: sink.ids("BTC")[-1:] == [10] and sink.ids("ETH")[-1:] == [110])
    assert len(sink.ids("BTC")) <= 2 and len(sink.ids("ETH")) <= 2
    await c.aclose()


async def test_steady_stream_is_rate_limited_and_the_last_value_arrives() -> None:
    interval = 0.04
    sink = Collect()
    c = Coalescer(sink, int(interval * 1000))
    started = time.monotonic()
    u = 0
    while time.monotonic() - started < 0.3:
        u += 1
        await c(tick("BTC", u))
        await asyncio.sleep(0.003)
    elapsed = time.monotonic() - started
    await wait_until(lambda: sink.ids()[-1] == u)
    gaps = [b - a for a, b in zip(sink.times, sink.times[1:], strict=False)]
    assert min(gaps) >= interval * 0.9
    assert len(sink.ticks) <= elapsed / interval + 2
    assert len(sink.ticks) >= 4
    assert sink.ids() == sorted(sink.ids())
    assert c.forwarded + c.coalesced == u
    await c.aclose()


async def test_out_of_order_updates_are_dropped() -> None:
    sink = Collect()
    c = Coalescer(sink, 0)
    for symbol, u in [("BTC", 5), ("BTC", 3), ("BTC", 5), ("ETH", 1), ("BTC", 6), ("ETH", 1), ("ETH", 2)]:
        await c(tick(symbol, u))
    assert [(t.symbol, t.update_id) for t in sink.ticks] == [("BTC", 5), ("ETH", 1), ("BTC", 6), ("ETH", 2)]
    assert c.dropped_out_of_order == 3


async def test_out_of_order_is_judged_against_the_pending_tick_too() -> None:
    sink = Collect()
    c = Coalescer(sink, 1_000)
    await c(tick("BTC", 1))
    await wait_until(lambda: sink.ids() == [1])
    await c(tick("BTC", 10))  # pending
    await c(tick("BTC", 9))  # older than the pending one
    assert c.dropped_out_of_order == 1
    await c.aclose()
    assert sink.ids() == [1, 10]


async def test_update_id_zero_is_never_dropped() -> None:
    sink = Collect()
    c = Coalescer(sink, 0)
    for _ in range(3):
        await c(tick("BTC", 0))
    assert sink.ids() == [0, 0, 0] and c.dropped_out_of_order == 0


async def test_sink_errors_are_counted_and_the_feed_goes_on() -> None:
    got: list[int] = []

    async def flaky(t: PriceTick) -> None:
        if t.update_id % 2:
            raise RuntimeError("sink down")
        got.append(t.update_id)

    c = Coalescer(flaky, 0)
    for u in range(1, 5):
        await c(tick("BTC", u))
    assert got == [2, 4] and c.stats.sink_errors == 2

    c2 = Coalescer(flaky, 10)
    await c2(tick("BTC", 1))
    await wait_until(lambda: c2.stats.sink_errors == 1)
    await c2(tick("BTC", 2))
    await wait_until(lambda: 2 in got[2:])
    await c2.aclose()


async def test_aclose_flushes_pending_or_drops_it() -> None:
    sink = Collect()
    c = Coalescer(sink, 10_000)
    await c(tick("BTC", 1))
    await wait_until(lambda: sink.ids() == [1])
    await c(tick("BTC", 2))
    await c(tick("ETH", 1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    started = time.monotonic()
    await c.aclose()
    assert time.monotonic() - started < 0.5  # does not wait for the interval
    assert sorted((t.symbol, t.update_id) for t in sink.ticks) == [("BTC", 1), ("BTC", 2), ("ETH", 1)]
    with pytest.raises(RuntimeError):
        await c(tick("BTC", 3))

    sink2 = Collect()
    c2 = Coalescer(sink2, 10_000)
    await c2(tick("BTC", 1))
    await wait_until(lambda: sink2.ids() == [1])
    await c2(tick("BTC", 2))
    await c2.aclose(flush=False)
    assert sink2.ids() == [1]


def test_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError):
        Coalescer(Collect(), -1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["BTC", "ETH"]), st.integers(0, 20)), max_size=40))
def test_pass_through_forwards_exactly_the_increasing_updates(events: list[tuple[str, int]]) -> None:
    sink = Collect()
    c = Coalescer(sink, 0)

    async def feed() -> None:
        for symbol, u in events:
            await c(tick(symbol, u))

    asyncio.run(feed())
    expected: list[tuple[str, int]] = []
    last: dict[str, int] = {}
    for symbol, u in events:
        if u == 0 or u > last.get(symbol, 0):
            expected.append((symbol, u))
            if u:
                last[symbol] = u
    assert [(t.symbol, t.update_id) for t in sink.ticks] == expected
    assert c.forwarded + c.dropped_out_of_order == len(events)


# ---- StaleWatch -------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_stale_watch_flags_symbols_without_updates() -> None:
    clock = FakeClock()
    watch = StaleWatch(10.0, ["BTC", "ETH", "SOL"], clock=clock)
    assert watch.stale_symbols() == []  # just started
    clock.now += 5
    watch.touch("BTC")
    clock.now += 6  # BTC 6 s old, ETH and SOL never updated, watch 11 s old
    assert watch.stale_symbols() == ["ETH", "SOL"]
    assert watch.age("BTC") == 6 and watch.last_update("BTC") == 1005 and watch.last_update("ETH") is None
    watch.touch("ETH")
    watch.touch("DOGE")  # an unexpected symbol joins on its first update
    clock.now += 10.5
    assert watch.stale_symbols() == ["BTC", "ETH", "SOL", "DOGE"]
    watch.touch("SOL")
    assert watch.stale_symbols() == ["BTC", "ETH", "DOGE"] and not watch.is_stale("SOL")
    watch.restart()
    assert watch.stale_symbols() == []
    with pytest.raises(ValueError):
        StaleWatch(0)
