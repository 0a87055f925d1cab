"""The C hot paths (`core/_native.c`) against the pure-Python ones they replace.

Two engines, one with `native` on and one with it off, take the same random command streams
(every order type, client order ids good and bad, cancels and amends by id and by client id,
cancel-all, halts, unfunded users and users without accounts, repeated command ids, snapshot and
restore midway): every result and every event must encode to the same bytes, and the states
must hash the same. Separately, every command is first applied and rolled back, which must leave
the state exactly as it was: the C path journals each change the way the Python one does, and
that journal is what undoes a command that fails halfway.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cashmarkets.core import native
from cashmarkets.core.commands import Command, Deposit
from cashmarkets.core.engine import Engine, EngineConfig
from cashmarkets.core.products.spot import (
    AmendOrder,
    CancelAllOrders,
    CancelOrder,
    PlaceOrder,
    SetMarketStatus,
    SpotConfig,
    SpotProduct,
)

from .spot_helpers import MARKET

SOURCE = Path(__file__).resolve().parents[2] / "src" / "cashmarkets" / "core" / "_native.c"
USERS = ("alice", "bob", "carol", "poor", "newbie")
COIDS = ("a1", "a2", "x.y:z/1_-", "bad id!", "c" * 40, "")


def test_the_extension_is_built_from_this_source() -> None:
    """`make test` builds it; a build from another version of the source is refused."""
    assert native.available(), "run `make native` (needs a C compiler and the Python headers)"
    assert native.module is not None
    assert hashlib.sha256(SOURCE.read_bytes()).hexdigest() == native.module.SOURCE_SHA256


def test_the_default_engine_runs_native_and_the_flag_turns_it_off() -> None:
    on, off = _engine(True), _engine(False)
    assert on.native and not off.native
    assert isinstance(on.products["spot"], SpotProduct)
    assert on.products["spot"].fast is not None and off.products["spot"].fast is None


def _engine(native_on: bool) -> Engine:
    engine = Engine(
        EngineConfig(native=native_on),
        products=[SpotProduct.factory(SpotConfig(markets=(MARKET,), orders_per_owner_max=12))],
    )
    funds = {"alice": 10**15, "bob": 10**15, "carol": 10**15, "poor": 30_000_000}
    for i, (user, amount) in enumerate(funds.items()):
        for asset in ("USDC", "BTC"):
            _stamped_apply(
                engine, Deposit(command_id=f"fund-{i}-{asset}", owner=user, asset=asset, amount=amount)
            )
    # newbie has quote only: a buy needs its base account opened on the way
    _stamped_apply(engine, Deposit(command_id="fund-newbie", owner="newbie", asset="USDC", amount=10**12))
    return engine


def _stamped_apply(engine: Engine, cmd: Command) -> tuple[Any, list[Any]]:
    cmd.seq, cmd.ts_ns = engine.seq + 1, engine.ts_ns + 1_000_000_000
    return engine.apply(cmd)


def _random_command(rng: random.Random, n: int, spot: SpotProduct) -> Command:
    user = rng.choice(USERS)
    market = MARKET.symbol if rng.random() > 0.02 else "NOPE_USDC"
    cid = f"c{n}"
    roll = rng.random()
    mine = sorted(spot.by_owner.get((user, MARKET.symbol), {}))
    # mostly one of the user's open orders; now and then any id (someone else's, closed, unknown)
    order_id = rng.choice(mine) if mine and rng.random() < 0.85 else rng.randint(0, spot.next_order_id + 2)
    coid = rng.choice(COIDS)
    if roll < 0.5:
        kind = rng.choice(("GTC",) * 6 + ("IOC", "FOK", "MARKET", "MARKET_QUOTE", "LIMIT_MAKER"))
        side = rng.choice(("BUY", "SELL"))
        # buyers mostly low and sellers mostly high, so a book builds up; now and then they cross
        price = rng.randint(1, 8) if side == "BUY" else rng.randint(6, 14)
        kw: dict[str, Any] = {
            "side": side if rng.random() < 0.98 else "HOLD",
            "stp": rng.choice(("EXPIRE_MAKER", "EXPIRE_TAKER", "EXPIRE_BOTH"))
            if rng.random() < 0.98
            else "NOPE",
            "client_order_id": coid if rng.random() < 0.3 else "",
            "price_ticks": price if rng.random() < 0.97 else 0,
            "qty_lots": rng.randint(0, 8),
        }
        if kind == "MARKET_QUOTE":
            kw |= {"order_type": "MARKET", "quote_qty": kw["qty_lots"] * 3_000_000, "qty_lots": 0}
        elif kind == "MARKET":
            kw |= {"order_type": "MARKET", "price_ticks": kw["price_ticks"] if rng.random() < 0.3 else 0}
        elif kind == "LIMIT_MAKER":
            kw |= {"order_type": "LIMIT_MAKER"}
        else:
            kw |= {"order_type": "LIMIT", "tif": kind}
        return PlaceOrder(command_id=cid, owner=user, market=market, **kw)
    if roll < 0.6:
        if rng.random() < 0.2:
            return CancelOrder(command_id=cid, owner=user, market=market, client_order_id=coid)
        return CancelOrder(command_id=cid, owner=user, market=market, order_id=order_id)
    if roll < 0.92:
        by_coid = rng.random() < 0.15
        return AmendOrder(
            command_id=cid,
            owner=user,
            market=market,
            order_id=0 if by_coid else order_id,
            client_order_id=coid if by_coid else "",
            price_ticks=rng.randint(0, 14),
            qty_lots=rng.choice((0, 0, rng.randint(0, 9))),
        )
    if roll < 0.93:
        return CancelAllOrders(command_id=cid, owner=user, market=market)
    if roll < 0.97:
        return SetMarketStatus(
            command_id=cid, market=market, status="HALTED" if rng.random() < 0.2 else "TRADING"
        )
    return Deposit(
        command_id=cid, owner="poor", asset=rng.choice(("USDC", "BTC")), amount=rng.randint(1, 10**7)
    )


def _state(engine: Engine) -> bytes:
    return engine.codec.encode([engine.ledger.state(), engine.products["spot"].snapshot_state()])


def _apply_and_roll_back(engine: Engine, cmd: Command) -> None:
    """What Engine.apply does around a handler that raises, after the handler has run to the end."""
    before = _state(engine)
    handler = engine._handlers.get(type(cmd))
    if handler is None:
        return
    engine.ledger._journal.clear()
    engine.ledger.events = []
    engine._undo.clear()
    handler(cmd)
    engine._rollback()
    assert _state(engine) == before, cmd


def run_both(seed: int, commands: int, restore_at: int = -1) -> None:
    rng = random.Random(seed)
    on, off = _engine(True), _engine(False)
    seen: list[str] = []
    for n in range(commands):
        cmd = _random_command(rng, n, on.products["spot"])
        if seen and rng.random() < 0.03:
            cmd.command_id = rng.choice(seen)  # a retry: answered from the dedup table
        seen.append(cmd.command_id)
        twin = on.codec.command_decoder.decode(on.codec.encode(cmd))
        cmd.seq = twin.seq = on.seq + 1
        cmd.ts_ns = twin.ts_ns = on.ts_ns + rng.choice((1, 1_000_000, 61_000_000_000))
        if rng.random() < 0.2:
            for engine, c in ((on, cmd), (off, twin)):
                _apply_and_roll_back(engine, c)
        got_on, events_on = on.apply(cmd)
        got_off, events_off = off.apply(twin)
        assert on.codec.encode(got_on) == off.codec.encode(got_off), (cmd, got_on, got_off)
        assert [on.codec.encode(e) for e in events_on] == [off.codec.encode(e) for e in events_off], cmd
        if n == restore_at:
            snap_on, snap_off = on.snapshot(), off.snapshot()
            assert snap_on == snap_off
            on, off = _engine(True), _engine(False)
            on.restore(snap_on)
            off.restore(snap_off)
            assert on.native and on.state_hash() == off.state_hash()
    assert on.state_hash() == off.state_hash()
    for engine in (on, off):
        engine.products["spot"].check_invariants()
        engine.ledger.check_invariants()
    assert on.internal_errors == off.internal_errors == 0


@pytest.mark.parametrize("seed", range(12))
def test_native_and_python_give_the_same_results_events_and_state(seed: int) -> None:
    run_both(seed, 700, restore_at=350 if seed % 2 else -1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.integers(1, 150))
def test_native_and_python_agree_on_short_streams(seed: int, commands: int) -> None:
    run_both(seed, commands)


def test_the_no_events_switch_drops_only_spot_events() -> None:
    engine = _engine(True)
    fast = engine.products["spot"].fast
    first = PlaceOrder(
        command_id="p", owner="alice", market=MARKET.symbol, side="BUY", price_ticks=5, qty_lots=1
    )
    _stamped_apply(engine, first)  # opens alice's and the market's accounts (the Python path)
    fast.emit = False
    result, events = _stamped_apply(
        engine,
        PlaceOrder(
            command_id="q", owner="alice", market=MARKET.symbol, side="BUY", price_ticks=5, qty_lots=1
        ),
    )
    assert result.data.order.status == "NEW"
    assert [type(e).__name__ for e in events] == ["Transfer"]  # the hold, not the execution report
    fast.emit = True
    result, events = _stamped_apply(
        engine,
        PlaceOrder(
            command_id="r", owner="alice", market=MARKET.symbol, side="BUY", price_ticks=5, qty_lots=1
        ),
    )
    assert [type(e).__name__ for e in events] == ["Transfer", "SpotOrderUpdated"]


def test_a_handler_error_under_the_native_applier_rolls_back_and_counts() -> None:
    engine = _engine(True)
    before = engine.state_hash()

    def broken(cmd: Any) -> Any:
        engine.ledger.open_account("zed", "USDC")  # a change that must be undone
        raise RuntimeError("boom")

    engine._handlers[SetMarketStatus] = broken
    result, events = _stamped_apply(
        engine, SetMarketStatus(command_id="s", market=MARKET.symbol, status="HALTED")
    )
    assert result.code == "internal_error" and "RuntimeError: boom" in result.detail
    assert events == [] and engine.internal_errors == 1
    assert engine.ledger.account("zed", "USDC") is None
    assert engine.state_hash() != before  # seq, clock and the dedup entry moved on...
    again, _ = _stamped_apply(engine, SetMarketStatus(command_id="s", market=MARKET.symbol, status="HALTED"))
    assert again is result  # ...and the repeat is answered from the table
