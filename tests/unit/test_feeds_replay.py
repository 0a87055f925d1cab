"""ReplayFeed: recorded Backpack messages from a JSONL file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from cashmarkets.core.products.leverage import DEFAULT_MARKETS, PriceTick
from cashmarkets.feeds import ReplayFeed

E0 = 1757143198737843


class Collect:
    def __init__(self) -> None:
        self.ticks: list[PriceTick] = []
        self.times: list[float] = []

    async def __call__(self, tick: PriceTick) -> None:
        self.ticks.append(tick)
        self.times.append(time.monotonic())


def line(feed_symbol: str, u: int, bid: str, ask: str, event_us: int) -> str:
    data: dict[str, Any] = {
        "e": "bookTicker",
        "E": event_us,
        "T": event_us - 5,
        "s": feed_symbol,
        "a": ask,
        "A": "1",
        "b": bid,
        "B": "2",
        "u": u,
    }
    return json.dumps({"stream": f"bookTicker.{feed_symbol}", "data": data})


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_speed_zero_delivers_every_line_in_order(tmp_path: Path) -> None:
    lines = []
    for i in range(1, 301):
        feed_symbol, bid = [("BTC_USDC_PERP", f"65000.{i % 100:02d}"), ("ETH_USDC_PERP", "3500.5")][i % 2]
        lines.append(line(feed_symbol, i, bid, "70000", E0 + i * 1_000_000))  # one second apart
    path = write(tmp_path / "rec.jsonl", lines)
    sink = Collect()
    feed = ReplayFeed(path, DEFAULT_MARKETS, sink, speed=0)
    started = time.monotonic()
    await feed.run()
    assert time.monotonic() - started < 2  # 300 recorded seconds, as fast as possible
    assert [t.update_id for t in sink.ticks] == list(range(1, 301))
    assert sink.ticks[0].symbol == "ETH" and sink.ticks[1].symbol == "BTC"
    assert sink.ticks[1].bid == 6500002 and sink.ticks[1].exchange_ts_us == E0 + 2_000_000
    assert feed.stats.forwarded == 300 and feed.lines == 300


async def test_bad_lines_replies_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = write(
        tmp_path / "rec.jsonl",
        [
            '{"id": 1, "result": null}',
            line("BTC_USDC_PERP", 1, "65000", "65001", E0),
            "",
            "{broken",
            line("BTC_USDC_PERP", 2, "65000.001", "65001", E0 + 1),  # too many decimals
            line("BTC_USDC_PERP", 1, "65000", "65001", E0 + 2),  # out of order
            line("SOL_USDC_PERP", 3, "150.1", "150.2", E0 + 3),
        ],
    )
    sink = Collect()
    feed = ReplayFeed(path, DEFAULT_MARKETS, sink, speed=0)
    await feed.run()
    assert [(t.symbol, t.update_id, t.bid) for t in sink.ticks] == [("BTC", 1, 6500000), ("SOL", 3, 1501000)]
    assert feed.stats.dropped_bad == 2
    assert feed.stats.dropped_out_of_order == 1
    assert feed.stats.ignored == 1


async def test_recorded_pace_scaled_by_speed(tmp_path: Path) -> None:
    # 0.0 s, 0.2 s, 0.4 s recorded; at speed 4: 0.05 s apart.
    path = write(
        tmp_path / "rec.jsonl",
        [line("BTC_USDC_PERP", u, "65000", "65001", E0 + (u - 1) * 200_000) for u in (1, 2, 3)],
    )
    sink = Collect()
    await ReplayFeed(path, DEFAULT_MARKETS, sink, speed=4).run()
    assert [t.update_id for t in sink.ticks] == [1, 2, 3]
    assert sink.times[1] - sink.times[0] >= 0.045
    assert 0.09 <= sink.times[2] - sink.times[0] < 0.3
