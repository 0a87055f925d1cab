"""The spot engine against the simple reference matcher: random command sequences (every order
type, cancels, amends, self-trade prevention, several users) must give the same trades, statuses
and book; after every command the engine's invariants hold, and every user's balances equal what
the reference's trades and the configured fees say."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cashmarkets.core.products.spot import OrderPlaced
from cashmarkets.core.results import Rejected

from .spot_helpers import FUNDS, LOT, MARKET, UNIT, amend, balance, book_of, cancel, place, spot, spot_engine
from .spot_reference import RefBook, RefTrade

USERS = ("alice", "bob", "carol")
STPS = ("EXPIRE_MAKER", "EXPIRE_TAKER", "EXPIRE_BOTH")

place_op = st.tuples(
    st.just("place"),
    st.sampled_from(USERS),
    st.sampled_from(("BUY", "SELL")),
    st.sampled_from(("GTC", "GTC", "GTC", "IOC", "FOK", "MARKET", "MARKET_QUOTE", "LIMIT_MAKER")),
    st.integers(1, 12),  # price ticks
    st.integers(1, 6),  # lots
    st.sampled_from(STPS),
)
cancel_op = st.tuples(st.just("cancel"), st.sampled_from(USERS), st.integers(0, 40))
amend_op = st.tuples(
    st.just("amend"), st.sampled_from(USERS), st.integers(0, 40), st.integers(0, 12), st.integers(0, 8)
)
ops = st.lists(
    st.one_of(place_op, place_op, place_op, cancel_op, amend_op, amend_op), min_size=1, max_size=120
)


def _expected_balances(trades: list[tuple[RefTrade, str, str]]) -> dict[tuple[str, str], int]:
    """Balances the reference's trades imply: buyer +base -fee, -quote; seller -base, +quote -fee."""
    out = {(u, a): FUNDS[a] for u in USERS for a in ("BTC", "USDC")}
    for trade, taker, maker in trades:
        base = trade.qty * LOT
        quote = trade.qty * trade.price * UNIT
        buyer, seller = (taker, maker) if trade.taker_side == "BUY" else (maker, taker)
        buyer_bps = MARKET.taker_fee_bps if buyer is taker else MARKET.maker_fee_bps
        seller_bps = MARKET.taker_fee_bps if seller is taker else MARKET.maker_fee_bps
        out[(buyer, "BTC")] += base - base * buyer_bps // 10_000
        out[(buyer, "USDC")] -= quote
        out[(seller, "BTC")] -= base
        out[(seller, "USDC")] += quote - quote * seller_bps // 10_000
    return out


def _pick(ref: RefBook, user: str, pick: int) -> int:
    """Mostly one of the user's open orders; now and then any id (someone else's, or closed)."""
    mine = sorted(o.id for o in ref.resting if o.owner == user)
    return mine[pick % len(mine)] if mine and pick % 5 else pick


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_engine_matches_the_reference(commands: list[tuple[Any, ...]]) -> None:
    run_against_reference(commands)


@pytest.mark.parametrize("seed", range(40))
def test_long_random_sequences_match_the_reference(seed: int) -> None:
    """Hypothesis favours short sequences; these reach deep books and long queues."""
    rng = random.Random(seed)
    commands: list[tuple[Any, ...]] = []
    for _ in range(250):
        user = rng.choice(USERS)
        roll = rng.random()
        if roll < 0.6:
            kind = rng.choice(("GTC", "GTC", "GTC", "IOC", "FOK", "MARKET", "MARKET_QUOTE", "LIMIT_MAKER"))
            side = rng.choice(("BUY", "SELL"))
            commands.append(
                ("place", user, side, kind, rng.randint(1, 12), rng.randint(1, 6), rng.choice(STPS))
            )
        elif roll < 0.75:
            commands.append(("cancel", user, rng.randint(0, 60)))
        else:
            commands.append(("amend", user, rng.randint(0, 60), rng.randint(0, 12), rng.randint(0, 8)))
    run_against_reference(commands)


def run_against_reference(commands: list[tuple[Any, ...]]) -> None:
    engine = spot_engine(USERS)
    ref = RefBook(unit=UNIT)
    owners: dict[int, str] = {}
    all_trades: list[tuple[RefTrade, str, str]] = []
    for op in commands:
        if op[0] == "place":
            _, user, side, kind, price, qty, stp = op
            kw: dict[str, Any] = {"stp": stp}
            ref_args = (user, side, "LIMIT", kind, price, qty, 0, stp)
            if kind in ("GTC", "IOC", "FOK"):
                kw |= {"order_type": "LIMIT", "tif": kind}
            elif kind == "LIMIT_MAKER":
                kw |= {"order_type": "LIMIT_MAKER"}
                ref_args = (user, side, "LIMIT_MAKER", "GTC", price, qty, 0, stp)
            elif kind == "MARKET":
                kw |= {"order_type": "MARKET"}
                price = price if price % 3 == 0 else 0  # now and then a protection price
                ref_args = (user, side, "MARKET", "IOC", price, qty, 0, stp)
            else:
                kw |= {"order_type": "MARKET", "quote_qty": qty * price * UNIT}
                ref_args = (user, side, "MARKET", "IOC", 0, 0, qty * price * UNIT, stp)
                price, qty = 0, 0
            got = place(engine, user, side, price, qty, **kw)
            outcome, ref_order, ref_trades = ref.place(*ref_args)
            if outcome != "ok":
                assert isinstance(got, Rejected) and got.code == outcome, (op, got)
                continue
            assert isinstance(got, OrderPlaced), (op, got)
            assert ref_order is not None
            owners[ref_order.id] = user
            assert got.order.order_id == ref_order.id
            assert (got.order.status, got.order.executed_lots) == (ref_order.status, ref_order.executed), (
                op,
                got.order,
                ref_order,
            )
            trades = got.trades
        elif op[0] == "cancel":
            _, user, pick = op
            order_id = _pick(ref, user, pick)
            got_view = cancel(engine, user, order_id)
            ref_cancelled = ref.cancel(user, order_id)
            if ref_cancelled is None:
                assert isinstance(got_view, Rejected) and got_view.code == "order_not_found"
            else:
                assert not isinstance(got_view, Rejected) and got_view.status == "CANCELED"
            trades = []
            ref_trades = []
        else:
            _, user, pick, price, qty = op
            order_id = _pick(ref, user, pick)
            got = amend(engine, user, order_id, price, qty)
            outcome, ref_trades = ref.amend(user, order_id, price, qty)
            if outcome != "ok":
                assert isinstance(got, Rejected) and got.code == outcome, (op, got)
                continue
            assert isinstance(got, OrderPlaced), (op, got)
            trades = got.trades
        assert [
            (t.price_ticks, t.qty_lots, t.taker_order_id, t.maker_order_id, t.taker_side) for t in trades
        ] == [(t.price, t.qty, t.taker_id, t.maker_id, t.taker_side) for t in ref_trades], op
        all_trades.extend((t, owners[t.taker_id], owners[t.maker_id]) for t in ref_trades)
        assert book_of(engine) == ref.book(), (op, book_of(engine), ref.book())
        spot(engine).check_invariants()
        engine.ledger.check_invariants()
    expected = _expected_balances(all_trades)
    for (user, asset), amount in expected.items():
        assert balance(engine, user, asset) == amount, (user, asset)
