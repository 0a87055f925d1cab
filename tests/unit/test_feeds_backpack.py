"""Backpack message parsing and reconnect backoff (no network)."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cashmarkets.core.money import format_amount
from cashmarkets.core.products.leverage import DEFAULT_MARKETS, PriceTick
from cashmarkets.feeds import BackpackFeed, BadMessage, ServerReply, parse_message, subscribe_message

BY_STREAM = {f"bookTicker.{m.feed_symbol}": m for m in DEFAULT_MARKETS}
EXAMPLE = (
    '{"stream":"bookTicker.ETH_USDC_PERP","data":{"e":"bookTicker","E":1757143198737843,'
    '"T":1757143198736215,"s":"ETH_USDC_PERP","a":"4303.93","A":"6.9717","b":"4303.92",'
    '"B":"5.0264","u":2063435950}}'
)


async def nowhere(tick: PriceTick) -> None:
    pass


def message(**data: Any) -> str:
    base: dict[str, Any] = json.loads(EXAMPLE)
    base["data"].update(data)
    return json.dumps(base)


def test_parses_the_documented_example() -> None:
    tick = parse_message(EXAMPLE, BY_STREAM)
    assert tick == PriceTick(
        command_id="tick:ETH:2063435950",
        symbol="ETH",
        bid=430392,
        ask=430393,
        bid_qty=502640000,
        ask_qty=697170000,
        exchange_ts_us=1757143198737843,
        update_id=2063435950,
    )
    assert parse_message(EXAMPLE.encode(), BY_STREAM) == tick


def test_replies_and_other_messages() -> None:
    assert parse_message('{"id": 1, "result": null}', BY_STREAM) == ServerReply(id=1)
    reply = parse_message('{"id": 1, "error": {"code": 4005}}', BY_STREAM)
    assert reply == ServerReply(id=1, error={"code": 4005})
    assert parse_message('{"method": "PING"}', BY_STREAM) is None
    assert parse_message('{"stream": "trade.BTC_USDC_PERP", "data": 1}', BY_STREAM) is None
    assert parse_message(EXAMPLE, {}) is None  # not subscribed


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("nope", "bad_json"),
        (b"\xff", "bad_json"),
        ("7", "not_an_object"),
        ('{"stream": [], "data": {}}', "bad_stream"),
        ('{"stream": "bookTicker.ETH_USDC_PERP", "data": null}', "bad_data"),
        (message(u="1"), "bad_fields"),
        (message(E=None), "bad_fields"),
        (message(u=True), "bad_fields"),
        (message(u=-1), "bad_fields"),
        (message(u=2**63), "bad_fields"),
        (message(a=4303.93), "bad_fields"),
        (message(e="depth"), "bad_event"),
        (message(s="BTC_USDC_PERP"), "symbol_mismatch"),
        (message(b="4303.925"), "too_many_decimals"),
        (message(a="4303.9301"), "too_many_decimals"),
        (message(B="0.123456789"), "too_many_decimals"),
        (message(b="0"), "zero"),
        (message(b="-1"), "negative"),
        (message(b="1e3"), "bad_format"),
        (message(b=" 4303.92"), "bad_format"),
        (message(b="4303.94"), "crossed_book"),
        (message(A="9" * 20), "too_large"),
    ],
)
def test_bad_messages(raw: str | bytes, reason: str) -> None:
    with pytest.raises(BadMessage) as info:
        parse_message(raw, BY_STREAM)
    assert info.value.reason == reason


def book_message(market: Any, bid: str, ask: str, ask_qty: str) -> str:
    return json.dumps(
        {
            "stream": f"bookTicker.{market.feed_symbol}",
            "data": {
                "e": "bookTicker",
                "E": 1,
                "s": market.feed_symbol,
                "a": ask,
                "A": ask_qty,
                "b": bid,
                "B": "0",
                "u": 1,
            },
        }
    )


@settings(max_examples=300)
@given(
    market=st.sampled_from(DEFAULT_MARKETS),
    bid=st.integers(1, 10**12),
    spread=st.integers(0, 10**6),
    qty=st.integers(0, 10**15),
    extra_zeros=st.integers(0, 3),
    extra_digit=st.integers(1, 9),
)
def test_prices_parse_exactly_and_are_never_rounded(
    market: Any, bid: int, spread: int, qty: int, extra_zeros: int, extra_digit: int
) -> None:
    d = market.price_decimals
    bid_text = format_amount(bid, d)
    ask_text = format_amount(bid + spread, d)
    qty_text = format_amount(qty, 8)
    tick = parse_message(book_message(market, bid_text + "0" * extra_zeros, ask_text, qty_text), BY_STREAM)
    assert isinstance(tick, PriceTick)
    assert (tick.symbol, tick.bid, tick.ask) == (market.symbol, bid, bid + spread)
    assert (tick.ask_qty, tick.bid_qty) == (qty, 0)
    # One more nonzero digit than the market has: refused, never rounded.
    too_precise = f"{bid_text}{'0' * extra_zeros}{extra_digit}"
    with pytest.raises(BadMessage) as info:
        parse_message(book_message(market, too_precise, ask_text, qty_text), BY_STREAM)
    assert info.value.reason == "too_many_decimals"


def test_subscribe_message() -> None:
    assert json.loads(subscribe_message(DEFAULT_MARKETS)) == {
        "method": "SUBSCRIBE",
        "params": ["bookTicker.BTC_USDC_PERP", "bookTicker.ETH_USDC_PERP", "bookTicker.SOL_USDC_PERP"],
        "id": 1,
    }


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    feed = BackpackFeed(
        "ws://127.0.0.1:1",
        DEFAULT_MARKETS,
        nowhere,
        reconnect_min_s=0.2,
        reconnect_max_s=30.0,
        jitter=0.2,
        rng=random.Random(3),
    )
    for attempt in range(100):
        base = min(30.0, 0.2 * 2**attempt)
        delay = feed.backoff_delay(attempt)
        assert base * 0.8 <= delay <= base * 1.2
    one, two = (BackpackFeed("ws://x", DEFAULT_MARKETS, nowhere, rng=random.Random(3)) for _ in range(2))
    assert [one.backoff_delay(a) for a in range(8)] == [two.backoff_delay(a) for a in range(8)]
    no_jitter = BackpackFeed(
        "ws://x", DEFAULT_MARKETS, nowhere, jitter=0, reconnect_min_s=0.5, reconnect_max_s=3
    )
    assert [no_jitter.backoff_delay(a) for a in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_constructor_checks() -> None:
    with pytest.raises(ValueError):
        BackpackFeed("http://example.com", DEFAULT_MARKETS, nowhere)
    with pytest.raises(ValueError):
        BackpackFeed("ws://x", (), nowhere)
    with pytest.raises(ValueError):
        BackpackFeed("ws://x", DEFAULT_MARKETS, nowhere, reconnect_min_s=2, reconnect_max_s=1)
    with pytest.raises(ValueError):
        BackpackFeed("ws://x", DEFAULT_MARKETS, nowhere, jitter=1.5)
    with pytest.raises(TypeError):
        BackpackFeed("ws://x", DEFAULT_MARKETS)


async def test_stop_before_run_starts_makes_run_return() -> None:
    feed = BackpackFeed("ws://127.0.0.1:1", DEFAULT_MARKETS, nowhere, proxy=None)
    task = asyncio.create_task(feed.run())
    await feed.stop()
    await asyncio.wait_for(task, 1)
    assert feed.stats.connects == 0 and feed.stats.disconnects == 0
