"""Spot scenarios: each order type's documented edge, self-trade prevention, amend priority, every
rejection code (with nothing held), fees to the unit, rollback of a failing command, snapshots."""

from __future__ import annotations

from typing import Any

import pytest

from cashmarkets.core import codes
from cashmarkets.core.ledger import FEES, Ledger
from cashmarkets.core.products.spot import (
    ESCROW,
    CancelOrder,
    OrderPlaced,
    PlaceOrder,
    SetMarketStatus,
    SpotConfig,
    SpotMarket,
    SpotOrderUpdated,
    SpotTrade,
)
from cashmarkets.core.products.spot.product import SpotProduct
from cashmarkets.core.reconcile import reconcile
from cashmarkets.core.results import Accepted, Rejected

from .engine_helpers import ledger_bytes, stamp_apply
from .spot_helpers import (
    FUNDS,
    LOT,
    MARKET,
    UNIT,
    amend,
    apply,
    available,
    balance,
    book_of,
    cancel,
    cancel_all,
    place,
    placed,
    spot,
    spot_engine,
)


def state_of(engine: Any) -> tuple[bytes, bytes]:
    return ledger_bytes(engine), spot(engine).snapshot_state()


def rejected(engine: Any, code: str, owner: str, side: str, price: int = 0, qty: int = 0, **kw: Any) -> None:
    """Placing is rejected with `code` and changes nothing at all."""
    before = state_of(engine)
    out = place(engine, owner, side, price, qty, **kw)
    assert isinstance(out, Rejected) and out.code == code, out
    assert state_of(engine) == before


# ---- holds and fills --------------------------------------------------------------------------------


def test_a_resting_buy_holds_quote_and_a_sell_holds_base() -> None:
    engine = spot_engine()
    placed(engine, "alice", "BUY", 10, 2)
    placed(engine, "bob", "SELL", 12, 3)
    assert available(engine, "alice", "USDC") == FUNDS["USDC"] - 2 * 10 * UNIT
    assert balance(engine, "alice", "USDC") == FUNDS["USDC"]  # held, not spent
    assert available(engine, "bob", "BTC") == FUNDS["BTC"] - 3 * LOT
    assert spot(engine).locked("alice") == {"USDC": 2 * 10 * UNIT}
    assert book_of(engine) == [("BUY", 10, 1, 2), ("SELL", 12, 2, 3)]


def test_a_trade_executes_at_the_makers_price_with_fees_to_the_unit() -> None:
    engine = spot_engine()
    placed(engine, "bob", "SELL", 9, 3)
    out = placed(engine, "alice", "BUY", 10, 2)
    assert [(t.price_ticks, t.qty_lots, t.taker_side) for t in out.trades] == [(9, 2, "BUY")]
    assert out.order.status == "FILLED" and out.order.executed_quote == 2 * 9 * UNIT
    base, quote = 2 * LOT, 2 * 9 * UNIT
    taker_fee = base * MARKET.taker_fee_bps // 10_000
    maker_fee = quote * MARKET.maker_fee_bps // 10_000
    assert taker_fee > 0 and maker_fee > 0
    assert out.trades[0].buyer_fee == taker_fee and out.trades[0].seller_fee == maker_fee
    # The buyer paid the maker's price: the hold at its own limit (10) was released down to it.
    assert balance(engine, "alice", "USDC") == FUNDS["USDC"] - quote
    assert available(engine, "alice", "USDC") == FUNDS["USDC"] - quote
    assert balance(engine, "alice", "BTC") == FUNDS["BTC"] + base - taker_fee
    assert balance(engine, "bob", "USDC") == FUNDS["USDC"] + quote - maker_fee
    assert balance(engine, "bob", "BTC") == FUNDS["BTC"] - base  # one lot still held on the book
    assert available(engine, "bob", "BTC") == FUNDS["BTC"] - 3 * LOT
    assert balance(engine, FEES, "BTC") == taker_fee and balance(engine, FEES, "USDC") == maker_fee
    assert balance(engine, ESCROW, "USDC") == 0 and balance(engine, ESCROW, "BTC") == 0
    assert book_of(engine) == [("SELL", 9, 1, 1)]
    assert reconcile(engine).ok
    spot(engine).check_invariants()


def test_a_sweep_takes_levels_best_first_and_oldest_first() -> None:
    engine = spot_engine()
    a = placed(engine, "bob", "SELL", 10, 1).order.order_id
    b = placed(engine, "carol", "SELL", 9, 1).order.order_id
    c = placed(engine, "dave", "SELL", 9, 1).order.order_id
    d = placed(engine, "bob", "SELL", 11, 1).order.order_id
    out = placed(engine, "alice", "BUY", 10, 5)
    assert [(t.maker_order_id, t.price_ticks) for t in out.trades] == [(b, 9), (c, 9), (a, 10)]
    assert out.order.status == "PARTIALLY_FILLED"
    assert book_of(engine) == [("BUY", 10, out.order.order_id, 2), ("SELL", 11, d, 1)]
    # The rest holds exactly what it needs at its own price.
    spot(engine).check_invariants()


def test_ioc_fills_what_it_can_and_expires_the_rest() -> None:
    engine = spot_engine()
    placed(engine, "bob", "SELL", 10, 2)
    out = placed(engine, "alice", "BUY", 10, 5, tif="IOC")
    assert (out.order.status, out.order.executed_lots, out.order.remaining_lots) == ("EXPIRED", 2, 0)
    assert book_of(engine) == []
    assert available(engine, "alice", "USDC") == balance(engine, "alice", "USDC")  # nothing held


def test_fok_that_cannot_fill_leaves_no_trace() -> None:
    engine = spot_engine()
    placed(engine, "bob", "SELL", 10, 2)
    before_ledger, _ = state_of(engine)
    book_before = book_of(engine)
    result, events = apply(
        engine,
        PlaceOrder(
            command_id="fok",
            owner="alice",
            market=MARKET.symbol,
            side="BUY",
            tif="FOK",
            price_ticks=10,
            qty_lots=3,
        ),
    )
    assert isinstance(result, Accepted) and isinstance(result.data, OrderPlaced)
    assert result.data.order.status == "EXPIRED" and result.data.trades == []
    assert ledger_bytes(engine) == before_ledger and book_of(engine) == book_before
    assert [type(e) for e in events] == [SpotOrderUpdated]


def test_fok_that_can_fill_fills_completely() -> None:
    engine = spot_engine()
    placed(engine, "bob", "SELL", 9, 2)
    placed(engine, "carol", "SELL", 10, 2)
    out = placed(engine, "alice", "BUY", 10, 3, tif="FOK")
    assert out.order.status == "FILLED" and [t.qty_lots for t in out.trades] == [2, 1]


def test_post_only_that_would_take_is_rejected_with_nothing_held() -> None:
    engine = spot_engine()
    placed(engine, "bob", "SELL", 10, 2)
    rejected(engine, codes.WOULD_TAKE, "alice", "BUY", 10, 1, order_type="LIMIT_MAKER")
    out = placed(engine, "alice", "BUY", 9, 1, order_type="LIMIT_MAKER")
    assert out.order.status == "NEW" and out.trades == []


def test_market_order_on_an_empty_book_expires_and_holds_nothing() -> None:
    engine = spot_engine()
    before = ledger_bytes(engine)
    out = placed(engine, "alice", "BUY", qty=3, order_type="MARKET")
    assert out.order.status == "EXPIRED" and out.trades == []
    assert ledger_bytes(engine) == before


def test_market_order_holds_exactly_its_cost_and_respects_the_protection_price() -> None:
    engine = spot_engine()
    placed(engine, "bob", "SELL", 9, 1)
    placed(engine, "bob", "SELL", 12, 5)
    out = placed(engine, "alice", "BUY", 10, 4, order_type="MARKET")  # protection: no trade above 10
    assert [(t.price_ticks, t.qty_lots) for t in out.trades] == [(9, 1)]
    assert out.order.status == "EXPIRED"
    assert balance(engine, "alice", "USDC") == FUNDS["USDC"] - 9 * UNIT
    assert available(engine, "alice", "USDC") == balance(engine, "alice", "USDC")


def test_market_order_by_quote_amount_never_spends_more_than_the_amount() -> None:
    engine = spot_engine()
    placed(engine, "bob", "SELL", 9, 1)
    placed(engine, "bob", "SELL", 10, 5)
    budget = 35 * UNIT  # 9 + 10 + 10 = 29 fits, a third lot at 10 (39) does not
    out = placed(engine, "alice", "BUY", order_type="MARKET", quote_qty=budget)
    assert [(t.price_ticks, t.qty_lots) for t in out.trades] == [(9, 1), (10, 2)]
    assert out.order.status == "FILLED" and out.order.qty_lots == 3
    assert out.order.executed_quote == 29 * UNIT <= budget
    assert balance(engine, "alice", "USDC") == FUNDS["USDC"] - 29 * UNIT
    sell = placed(engine, "carol", "SELL", order_type="MARKET", quote_qty=10 * UNIT)
    assert sell.order.status == "EXPIRED" and sell.trades == []  # no bids


# ---- self-trade prevention ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "taker_status", "own_left", "traded"),
    [
        ("EXPIRE_MAKER", "PARTIALLY_FILLED", False, [2]),
        ("EXPIRE_TAKER", "EXPIRED_IN_MATCH", True, []),
        ("EXPIRE_BOTH", "EXPIRED_IN_MATCH", False, []),
    ],
)
def test_self_trade_prevention(mode: str, taker_status: str, own_left: bool, traded: list[int]) -> None:
    engine = spot_engine()
    own = placed(engine, "alice", "SELL", 9, 1).order.order_id
    other = placed(engine, "bob", "SELL", 10, 2).order.order_id
    out = placed(engine, "alice", "BUY", 10, 3, stp=mode)
    assert out.order.status == taker_status
    assert [t.qty_lots for t in out.trades] == traded
    assert (own in spot(engine).orders) is own_left
    assert (other in spot(engine).orders) is (mode != "EXPIRE_MAKER")
    spot(engine).check_invariants()


def test_an_expired_maker_is_reported_and_released() -> None:
    engine = spot_engine()
    own = placed(engine, "alice", "SELL", 9, 1).order.order_id
    result, events = apply(
        engine,
        PlaceOrder(
            command_id="stp", owner="alice", market=MARKET.symbol, side="BUY", price_ticks=9, qty_lots=1
        ),
    )
    assert isinstance(result, Accepted)
    reports = [e for e in events if isinstance(e, SpotOrderUpdated)]
    assert next((r.order.order_id, r.order.status, r.exec_type) for r in reports) == (
        own,
        "EXPIRED_IN_MATCH",
        "EXPIRED",
    )
    assert available(engine, "alice", "BTC") == FUNDS["BTC"]


# ---- amend ----------------------------------------------------------------------------------------


def test_amend_quantity_down_keeps_priority() -> None:
    engine = spot_engine()
    first = placed(engine, "alice", "BUY", 10, 5).order.order_id
    second = placed(engine, "bob", "BUY", 10, 5).order.order_id
    out = amend(engine, "alice", first, qty=2)
    assert isinstance(out, OrderPlaced) and out.order.remaining_lots == 2
    assert book_of(engine) == [("BUY", 10, first, 2), ("BUY", 10, second, 5)]
    assert available(engine, "alice", "USDC") == FUNDS["USDC"] - 2 * 10 * UNIT


@pytest.mark.parametrize(("price", "qty"), [(11, 0), (10, 6)])
def test_amend_price_or_quantity_up_loses_priority(price: int, qty: int) -> None:
    engine = spot_engine()
    first = placed(engine, "alice", "BUY", 10, 5).order.order_id
    second = placed(engine, "bob", "BUY", 10, 5).order.order_id
    out = amend(engine, "alice", first, price=price, qty=qty)
    assert isinstance(out, OrderPlaced)
    if price == 10:
        assert book_of(engine) == [("BUY", 10, second, 5), ("BUY", 10, first, 6)]
    else:
        assert book_of(engine) == [("BUY", 11, first, 5), ("BUY", 10, second, 5)]
    spot(engine).check_invariants()


def test_amend_to_a_crossing_price_matches_then_rests() -> None:
    engine = spot_engine()
    placed(engine, "bob", "SELL", 12, 2)
    order_id = placed(engine, "alice", "BUY", 10, 5).order.order_id
    out = amend(engine, "alice", order_id, price=12)
    assert isinstance(out, OrderPlaced)
    assert [(t.price_ticks, t.qty_lots) for t in out.trades] == [(12, 2)]
    assert book_of(engine) == [("BUY", 12, order_id, 3)]
    assert out.order.status == "PARTIALLY_FILLED"
    spot(engine).check_invariants()


def test_amend_rejections() -> None:
    engine = spot_engine()
    order_id = placed(engine, "alice", "BUY", 10, 5).order.order_id
    placed(engine, "bob", "SELL", 12, 2)
    maker = placed(engine, "alice", "BUY", 9, 1, order_type="LIMIT_MAKER").order.order_id
    before = state_of(engine)
    for args, code in [
        (("bob", order_id, 11, 0), codes.ORDER_NOT_FOUND),
        (("alice", 999, 11, 0), codes.ORDER_NOT_FOUND),
        (("alice", order_id, MARKET.max_price_ticks + 1, 0), codes.BAD_PRICE),
        (("alice", order_id, 0, MARKET.max_qty_lots + 1), codes.BAD_QUANTITY),
        (("alice", maker, 12, 0), codes.WOULD_TAKE),
    ]:
        out = amend(engine, *args)
        assert isinstance(out, Rejected) and out.code == code, (args, out)
    poor = spot_engine(funds={"USDC": 10 * UNIT})
    poor_order = placed(poor, "alice", "BUY", 10, 1).order.order_id
    out = amend(poor, "alice", poor_order, price=11)
    assert isinstance(out, Rejected) and out.code == codes.INSUFFICIENT_FUNDS
    assert state_of(engine) == before


# ---- validation -----------------------------------------------------------------------------------


def test_every_placement_rejection_holds_nothing() -> None:
    engine = spot_engine()
    placed(engine, "alice", "BUY", 10, 1, client_order_id="dup-1")
    rejected(engine, codes.UNKNOWN_MARKET, "alice", "BUY", 10, 1, market="NOPE")
    rejected(engine, codes.BAD_OWNER, "@house", "BUY", 10, 1)
    rejected(engine, codes.BAD_SIDE, "alice", "HOLD", 10, 1)
    rejected(engine, codes.BAD_ORDER_TYPE, "alice", "BUY", 10, 1, order_type="STOP")
    rejected(engine, codes.BAD_TIME_IN_FORCE, "alice", "BUY", 10, 1, tif="GTD")
    rejected(engine, codes.BAD_STP_MODE, "alice", "BUY", 10, 1, stp="NONE")
    rejected(engine, codes.BAD_CLIENT_ORDER_ID, "alice", "BUY", 10, 1, client_order_id="has space")
    rejected(engine, codes.BAD_CLIENT_ORDER_ID, "alice", "BUY", 10, 1, client_order_id="x" * 37)
    rejected(engine, codes.DUPLICATE_CLIENT_ORDER_ID, "alice", "BUY", 10, 1, client_order_id="dup-1")
    rejected(engine, codes.BAD_PRICE, "alice", "BUY", 0, 1)
    rejected(engine, codes.BAD_PRICE, "alice", "BUY", MARKET.max_price_ticks + 1, 1)
    rejected(engine, codes.BAD_QUANTITY, "alice", "BUY", 10, 0)
    rejected(engine, codes.BAD_QUANTITY, "alice", "BUY", 10, MARKET.max_qty_lots + 1)
    rejected(engine, codes.BAD_QUANTITY, "alice", "BUY", 10, 1, quote_qty=5)
    rejected(engine, codes.BAD_QUANTITY, "alice", "BUY", 0, 1, order_type="MARKET", quote_qty=5)
    rejected(engine, codes.BAD_QUANTITY, "alice", "BUY", order_type="MARKET")
    rejected(engine, codes.INSUFFICIENT_FUNDS, "nobody", "BUY", 10, 1)
    # The same client order id is free again once its order is closed.
    assert not isinstance(cancel(engine, "alice", client_order_id="dup-1"), Rejected)
    placed(engine, "alice", "BUY", 10, 1, client_order_id="dup-1")


def test_min_notional_and_order_limits() -> None:
    config = SpotConfig(
        markets=(MARKET.__class__(**{**_fields(MARKET), "min_notional": 50 * UNIT}),), orders_per_owner_max=2
    )
    from cashmarkets.core.engine import Engine

    engine = Engine(products=[SpotProduct.factory(config)])
    from cashmarkets.core.commands import Deposit

    stamp_apply(engine, Deposit(command_id="f", owner="alice", asset="USDC", amount=10**12))
    rejected(engine, codes.BELOW_MIN_NOTIONAL, "alice", "BUY", 10, 4)
    rejected(engine, codes.BELOW_MIN_NOTIONAL, "alice", "BUY", order_type="MARKET", quote_qty=49 * UNIT)
    placed(engine, "alice", "BUY", 10, 5)
    placed(engine, "alice", "BUY", 10, 5)
    rejected(engine, codes.TOO_MANY_ORDERS, "alice", "BUY", 10, 5)
    # IOC never rests, so the limit does not apply to it.
    assert placed(engine, "alice", "BUY", 10, 5, tif="IOC").order.status == "EXPIRED"


def _fields(struct: Any) -> dict[str, Any]:
    return {f: getattr(struct, f) for f in struct.__struct_fields__}


# ---- cancel, halt ---------------------------------------------------------------------------------


def test_cancel_releases_the_hold_and_someone_elses_order_is_not_found() -> None:
    engine = spot_engine()
    order_id = placed(engine, "alice", "BUY", 10, 2, client_order_id="mine").order.order_id
    out = cancel(engine, "bob", order_id)
    assert isinstance(out, Rejected) and out.code == codes.ORDER_NOT_FOUND
    out = cancel(engine, "alice", client_order_id="mine")
    assert not isinstance(out, Rejected) and out.status == "CANCELED" and out.order_id == order_id
    assert available(engine, "alice", "USDC") == FUNDS["USDC"]
    again = cancel(engine, "alice", order_id)
    assert isinstance(again, Rejected) and again.code == codes.ORDER_NOT_FOUND
    assert book_of(engine) == []


def test_cancel_all_cancels_only_the_owners_orders_in_the_market() -> None:
    engine = spot_engine()
    ids = [placed(engine, "alice", "BUY", p, 1).order.order_id for p in (8, 9, 10)]
    other = placed(engine, "bob", "BUY", 10, 1).order.order_id
    out = cancel_all(engine, "alice")
    assert [v.order_id for v in out.orders] == ids and {v.status for v in out.orders} == {"CANCELED"}
    assert [row[2] for row in book_of(engine)] == [other]
    assert cancel_all(engine, "alice").orders == []


def test_a_halted_market_refuses_orders_but_allows_cancels() -> None:
    engine = spot_engine()
    order_id = placed(engine, "alice", "BUY", 10, 2).order.order_id
    result, events = apply(engine, SetMarketStatus(command_id="halt", market=MARKET.symbol, status="HALTED"))
    assert isinstance(result, Accepted) and len(events) == 1
    rejected(engine, codes.MARKET_HALTED, "bob", "SELL", 10, 1)
    assert isinstance(amend(engine, "alice", order_id, price=9), Rejected)
    assert not isinstance(cancel(engine, "alice", order_id), Rejected)
    result, _ = apply(engine, SetMarketStatus(command_id="bad", market=MARKET.symbol, status="PAUSED"))
    assert isinstance(result, Rejected) and result.code == codes.BAD_MARKET_STATUS
    apply(engine, SetMarketStatus(command_id="resume", market=MARKET.symbol, status="TRADING"))
    placed(engine, "bob", "SELL", 10, 1)


# ---- events ---------------------------------------------------------------------------------------


def test_trade_events_carry_the_makers_state() -> None:
    engine = spot_engine()
    maker = placed(engine, "bob", "SELL", 10, 3).order.order_id
    result, events = apply(
        engine,
        PlaceOrder(
            command_id="t", owner="alice", market=MARKET.symbol, side="BUY", price_ticks=10, qty_lots=1
        ),
    )
    trades = [e for e in events if isinstance(e, SpotTrade)]
    assert [(t.maker_order_id, t.maker_remaining_lots, t.maker_status, t.trade_id) for t in trades] == [
        (maker, 2, "PARTIALLY_FILLED", 1)
    ]
    reports = [e for e in events if isinstance(e, SpotOrderUpdated)]
    assert [(r.exec_type, r.order.status) for r in reports] == [("TRADE", "FILLED")]
    assert spot(engine).books[MARKET.symbol].update_id == result.seq


# ---- rollback and snapshots -----------------------------------------------------------------------


@pytest.mark.parametrize("fail_at", range(1, 9))
def test_a_command_that_raises_midway_changes_nothing(fail_at: int, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = spot_engine()
    for price in (9, 10, 11):
        placed(engine, "bob", "SELL", price, 2)
    placed(engine, "alice", "SELL", 10, 1)  # met with EXPIRE_MAKER: expired mid-match
    resting = placed(engine, "carol", "BUY", 8, 3).order.order_id
    before = state_of(engine)
    calls = {"n": 0}
    real_move, real_resolve = Ledger.move, Ledger.resolve_part

    def count() -> None:
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise RuntimeError("injected")

    def move(*args: Any, **kw: Any) -> Any:
        count()
        return real_move(*args, **kw)

    def resolve_part(*args: Any, **kw: Any) -> Any:
        count()
        return real_resolve(*args, **kw)

    monkeypatch.setattr(Ledger, "move", move)
    monkeypatch.setattr(Ledger, "resolve_part", resolve_part)
    commands = [
        PlaceOrder(
            command_id="big", owner="alice", market=MARKET.symbol, side="BUY", price_ticks=11, qty_lots=7
        ),
        CancelOrder(command_id="cx", owner="carol", market=MARKET.symbol, order_id=resting),
    ]
    for cmd in commands:
        calls["n"] = 0
        result, events = stamp_apply(engine, cmd)
        if calls["n"] >= fail_at:
            assert isinstance(result, Rejected) and result.code == codes.INTERNAL_ERROR
            assert events == []
            assert state_of(engine) == before
            spot(engine).check_invariants()
            engine.ledger.check_invariants()
        else:
            before = state_of(engine)


def test_snapshot_restore_continues_identically() -> None:
    engine = spot_engine()
    for i, (owner, side, price) in enumerate(
        [
            ("bob", "SELL", 11),
            ("carol", "SELL", 10),
            ("bob", "SELL", 10),
            ("dave", "BUY", 8),
            ("alice", "BUY", 9),
        ]
    ):
        placed(engine, owner, side, price, 2 + i, client_order_id=f"o{i}")
    twin = spot_engine(users=())
    twin.restore(engine.snapshot())
    assert twin.state_hash() == engine.state_hash()
    assert book_of(twin) == book_of(engine)
    outs = []
    for e in (engine, twin):
        out = placed(e, "alice", "BUY", 11, 6)
        outs.append([(t.maker_order_id, t.qty_lots, t.price_ticks) for t in out.trades])
        cancel(e, "dave", client_order_id="o3")
    # Price-time order survived the snapshot: order 2 (10, first at its price), then 3, then 1.
    assert outs[0] == outs[1] == [(2, 3, 10), (3, 3, 10)]
    assert state_of(twin) == state_of(engine)  # (the command ids differ, so whole hashes do too)
    spot(twin).check_invariants()


def test_a_market_whose_largest_sell_hold_overflows_int64_is_refused() -> None:
    # A sell holds qty_lots * lot_size of the base: like the quote side, it must fit in int64.
    fits = dict(
        symbol="BIG_USDC",
        base="BIG",
        quote="USDC",
        base_decimals=18,
        quote_decimals=6,
        tick_size=1,
        lot_size=10**18,
        max_price_ticks=1,
        min_notional=1,
        maker_fee_bps=0,
        taker_fee_bps=0,
    )
    assert SpotMarket(**fits, max_qty_lots=4).max_qty_lots == 4  # 4 * 10**18 < 2**62
    with pytest.raises(ValueError, match="lot_size overflows"):
        SpotMarket(**fits, max_qty_lots=5)  # 5 * 10**18 >= 2**62
