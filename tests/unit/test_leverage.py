"""The leverage product: integer PnL and liquidation, triggers exactly at the boundary tick,
execution at the latest price before the instruction, conservation of money."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cashmarkets.core import codes
from cashmarkets.core.commands import Command, Deposit
from cashmarkets.core.engine import Engine
from cashmarkets.core.ledger import HOUSE
from cashmarkets.core.products.leverage import (
    ESCROW,
    ClosePosition,
    LeverageProduct,
    OpenPosition,
    PositionClosed,
    PositionClosedView,
    PositionView,
    PriceTick,
    liquidation_price,
    pnl_of,
)
from cashmarkets.core.reconcile import reconcile
from cashmarkets.core.results import Accepted, Rejected

S = 1_000_000_000
USDC = 1_000_000


class Sim:
    """An engine with the leverage product and a clock; every call stamps and applies."""

    def __init__(self) -> None:
        self.engine = Engine(products=[LeverageProduct.factory()])
        self.now = 1_000 * S
        self.n = 0

    def run(self, cmd: Command, *, after_s: float = 0.001) -> tuple[Any, list[Any]]:
        self.now += int(after_s * S)
        self.n += 1
        cmd.seq, cmd.ts_ns = self.engine.seq + 1, self.now
        return self.engine.apply(cmd)

    def fund(self, owner: str, usdc: int = 10_000) -> None:
        result, _ = self.run(
            Deposit(command_id=f"fund-{owner}-{self.n}", owner=owner, asset="USDC", amount=usdc * USDC)
        )
        assert isinstance(result, Accepted)

    def tick(self, bid: int, ask: int | None = None, symbol: str = "BTC", **kw: Any) -> list[Any]:
        result, events = self.run(
            PriceTick(command_id=f"t{self.n}", symbol=symbol, bid=bid, ask=ask or bid, **kw)
        )
        assert isinstance(result, Accepted), result
        return events

    def open(
        self,
        owner: str = "alice",
        side: str = "long",
        margin: int = 100 * USDC,
        leverage: int = 10,
        **kw: Any,
    ) -> Any:
        cmd = OpenPosition(
            command_id=f"o{self.n}",
            owner=owner,
            symbol=kw.pop("symbol", "BTC"),
            side=side,
            margin=margin,
            leverage=leverage,
            **kw,
        )
        result, _ = self.run(cmd)
        return result

    def close(self, position_id: int, owner: str = "alice") -> Any:
        result, _ = self.run(ClosePosition(command_id=f"c{self.n}", owner=owner, position_id=position_id))
        return result

    def balance(self, owner: str) -> int:
        acc = self.engine.ledger.account(owner, "USDC")
        return 0 if acc is None else acc.balance

    @property
    def product(self) -> LeverageProduct:
        product: LeverageProduct = self.engine.products["leverage"]
        return product


def opened(result: Any) -> PositionView:
    assert isinstance(result, Accepted) and isinstance(result.data, PositionView), result
    return result.data


def test_formulas() -> None:
    assert pnl_of("long", 1_000 * USDC, 100_000, 110_000) == 100 * USDC
    assert pnl_of("short", 1_000 * USDC, 100_000, 110_000) == -100 * USDC
    # Floor: a fraction of a minor unit always goes to the house, in profit and in loss.
    assert pnl_of("long", 10, 3, 4) == 3 and pnl_of("long", 10, 3, 2) == -4
    assert liquidation_price("long", 100_000, 10, 50) == 90_453  # ceil(9e9 / 99_500)
    assert liquidation_price("short", 100_000, 10, 50) == 109_452  # floor(1.1e10 / 100_500)
    assert liquidation_price("long", 100_000, 1, 50) == 0  # 1x long: never liquidated


def test_long_round_trip_pays_margin_plus_pnl_from_the_house() -> None:
    sim = Sim()
    sim.fund("alice")
    sim.tick(99_990, 100_000)
    p = opened(sim.open(margin=100 * USDC, leverage=10))
    assert (p.entry_price, p.notional, p.liquidation_price) == (100_000, 1_000 * USDC, 90_453)
    assert sim.balance("alice") == 9_900 * USDC and sim.balance(ESCROW) == 100 * USDC
    sim.tick(105_000, 105_010)
    closed = sim.close(p.position_id)
    assert isinstance(closed, Accepted) and isinstance(closed.data, PositionClosedView)
    assert (closed.data.exit_price, closed.data.pnl, closed.data.payout) == (105_000, 50 * USDC, 150 * USDC)
    assert sim.balance("alice") == 10_050 * USDC
    assert sim.balance(ESCROW) == 0 and sim.balance(HOUSE) == -50 * USDC
    again = sim.close(p.position_id)
    assert isinstance(again, Rejected) and again.code == codes.POSITION_NOT_FOUND
    sim.engine.ledger.check_invariants()


def test_short_loss_is_capped_at_the_margin() -> None:
    sim = Sim()
    sim.fund("bob")
    sim.tick(100_000, 100_010)
    p = opened(sim.open(owner="bob", side="short", margin=10 * USDC, leverage=2, stop_loss=0))
    assert p.entry_price == 100_000
    assert p.liquidation_price == 149_253
    sim.tick(149_000, 149_240)  # not yet
    assert p.position_id in sim.product.positions
    sim.tick(149_250, 149_260)  # the ask crosses the liquidation price: liquidated
    assert p.position_id not in sim.product.positions
    assert sim.balance("bob") == 9_990 * USDC and sim.balance(HOUSE) == 10 * USDC


@pytest.mark.parametrize("side", ["long", "short"])
def test_liquidation_fires_exactly_at_the_boundary_tick(side: str) -> None:
    sim = Sim()
    sim.fund("alice")
    sim.tick(100_000, 100_000)
    p = opened(sim.open(side=side, leverage=10))
    liq = p.liquidation_price
    one_short = liq + 1 if side == "long" else liq - 1
    assert not [e for e in sim.tick(one_short, one_short) if isinstance(e, PositionClosed)]
    assert p.position_id in sim.product.positions
    events = [e for e in sim.tick(liq, liq) if isinstance(e, PositionClosed)]
    assert [(e.position_id, e.reason, e.payout) for e in events] == [(p.position_id, "liquidation", 0)]


@pytest.mark.parametrize(
    ("side", "tp", "sl", "boundary_tp", "boundary_sl"),
    [("long", 110_000, 95_000, 110_000, 95_000), ("short", 90_000, 105_000, 90_000, 105_000)],
)
def test_take_profit_and_stop_loss_fire_at_their_price_not_one_tick_before(
    side: str, tp: int, sl: int, boundary_tp: int, boundary_sl: int
) -> None:
    for trigger, reason in ((boundary_tp, "take_profit"), (boundary_sl, "stop_loss")):
        sim = Sim()
        sim.fund("alice")
        sim.tick(100_000, 100_000)
        p = opened(sim.open(side=side, take_profit=tp, stop_loss=sl))
        before = trigger - 1 if trigger > 100_000 else trigger + 1
        assert not [e for e in sim.tick(before, before) if isinstance(e, PositionClosed)]
        fired = [e for e in sim.tick(trigger, trigger) if isinstance(e, PositionClosed)]
        assert [(e.position_id, e.reason, e.exit_price) for e in fired] == [(p.position_id, reason, trigger)]


def test_an_instruction_executes_at_the_latest_price_before_it_never_a_later_one() -> None:
    sim = Sim()
    sim.fund("alice")
    sim.tick(99_000, 100_000)
    first = opened(sim.open())
    sim.tick(199_000, 200_000)
    assert sim.product.positions[first.position_id].entry_price == 100_000
    second = opened(sim.open())
    assert second.entry_price == 200_000


def test_validation_codes_and_no_state_change() -> None:
    sim = Sim()
    sim.fund("alice", usdc=50)
    sim.tick(100_000, 100_010)
    before = sim.engine.ledger.state()
    cases = [
        ({"symbol": "DOGE"}, codes.UNKNOWN_SYMBOL),
        ({"side": "up"}, codes.BAD_SIDE),
        ({"leverage": 0}, codes.BAD_LEVERAGE),
        ({"leverage": 101}, codes.BAD_LEVERAGE),
        ({"margin": 0}, codes.BAD_MARGIN),
        ({"slippage_bps": 5_000}, codes.BAD_SLIPPAGE),
        ({"expected_price": 99_000, "slippage_bps": 50}, codes.SLIPPAGE_EXCEEDED),
        ({"take_profit": 100_000}, codes.BAD_TAKE_PROFIT),
        ({"stop_loss": 100_020}, codes.BAD_STOP_LOSS),
        ({"margin": 51 * USDC}, codes.INSUFFICIENT_FUNDS),
        ({"owner": "nobody"}, codes.INSUFFICIENT_FUNDS),
        ({"symbol": "ETH"}, codes.NO_PRICE),
    ]
    for kw, code in cases:
        result = sim.open(**kw)
        assert isinstance(result, Rejected) and result.code == code, (kw, result)
    assert sim.engine.ledger.state() == before
    # Within the slippage: accepted (ask 100_010 vs expected 100_000 is 1 bp).
    assert isinstance(sim.open(margin=USDC, expected_price=100_000, slippage_bps=1), Accepted)


def test_stale_prices_refuse_trading_and_old_updates_are_dropped() -> None:
    sim = Sim()
    sim.fund("alice")
    sim.tick(100_000, 100_000, update_id=5)
    p = opened(sim.open())
    sim.now += 11 * S
    result = sim.open()
    assert isinstance(result, Rejected) and result.code == codes.STALE_PRICE
    result = sim.close(p.position_id)
    assert isinstance(result, Rejected) and result.code == codes.STALE_PRICE
    old, _ = sim.run(PriceTick(command_id="old", symbol="BTC", bid=1, ask=1, update_id=5))
    assert isinstance(old, Rejected) and old.code == codes.STALE_UPDATE
    sim.tick(100_000, 100_000, update_id=6)
    assert isinstance(sim.close(p.position_id), Accepted)


def test_someone_elses_position_is_not_found() -> None:
    sim = Sim()
    sim.fund("alice")
    sim.fund("mallory")
    sim.tick(100_000, 100_000)
    p = opened(sim.open())
    result = sim.close(p.position_id, owner="mallory")
    assert isinstance(result, Rejected) and result.code == codes.POSITION_NOT_FOUND


def test_snapshot_restore_keeps_positions_and_their_triggers() -> None:
    sim = Sim()
    sim.fund("alice")
    sim.tick(100_000, 100_000)
    opened(sim.open(take_profit=110_000))
    opened(sim.open(side="short", leverage=2, stop_loss=104_000))
    copy = Engine(products=[LeverageProduct.factory()])
    copy.restore(sim.engine.snapshot())
    assert copy.state_hash() == sim.engine.state_hash()
    other = Sim()
    other.engine, other.now, other.n = copy, sim.now, sim.n
    for s in (sim, other):
        fired = [e.reason for e in s.tick(110_000, 110_000) if isinstance(e, PositionClosed)]
        assert sorted(fired) == ["stop_loss", "take_profit"]
    assert copy.state_hash() == sim.engine.state_hash()


def test_a_failing_settlement_rolls_back_the_tick_and_keeps_the_triggers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim = Sim()
    sim.fund("alice")
    sim.tick(100_000, 100_000)
    p = opened(sim.open(take_profit=110_000))
    before = sim.engine.snapshot()
    real = LeverageProduct._settle_trigger

    def boom(*args: Any) -> None:
        real(*args)
        raise RuntimeError("injected")

    monkeypatch.setattr(LeverageProduct, "_settle_trigger", boom)
    result, events = sim.run(PriceTick(command_id="boom", symbol="BTC", bid=110_000, ask=110_000))
    assert isinstance(result, Rejected) and result.code == codes.INTERNAL_ERROR and events == []
    assert p.position_id in sim.product.positions
    assert sim.product.prices["BTC"].bid == 100_000
    monkeypatch.undo()
    restored = Engine(products=[LeverageProduct.factory()])
    restored.restore(before)
    assert sim.product.snapshot_state() == restored.products["leverage"].snapshot_state()
    fired = [e for e in sim.tick(110_000, 110_000) if isinstance(e, PositionClosed)]
    assert [e.reason for e in fired] == ["take_profit"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("tick"), st.integers(50_000, 150_000), st.integers(0, 50)),
            st.tuples(
                st.just("open"), st.sampled_from(["long", "short"]), st.integers(1, 100), st.integers(1, 50)
            ),
            st.tuples(st.just("close"), st.integers(1, 30), st.just(0)),
        ),
        max_size=60,
    )
)
def test_money_is_conserved_over_random_ticks_and_instructions(steps: list[tuple[Any, ...]]) -> None:
    sim = Sim()
    users = ["u1", "u2", "u3"]
    for u in users:
        sim.fund(u, usdc=1_000)
    sim.tick(100_000, 100_010)
    for i, step in enumerate(steps):
        if step[0] == "tick":
            sim.tick(step[1], step[1] + step[2])
        elif step[0] == "open":
            sim.open(owner=users[i % 3], side=step[1], leverage=step[2], margin=step[3] * USDC)
        else:
            sim.close(step[1], owner=users[i % 3])
        sim.engine.ledger.check_invariants()
        # The escrow holds exactly the margins of the open positions.
        assert sim.balance(ESCROW) == sum(p.margin for p in sim.product.positions.values())
        # Users + escrow + house = what came in from the world.
        assert sum(sim.balance(u) for u in users) + sim.balance(ESCROW) + sim.balance(HOUSE) == 3_000 * USDC
        report = reconcile(sim.engine)
        assert report.ok and report.assets[0].deposits == 3_000 * USDC, report
        # No open position sits beyond its own liquidation price at the current tick.
        price = sim.product.prices["BTC"]
        for p in sim.product.positions.values():
            assert (
                (price.bid > p.liquidation_price) if p.side == "long" else (price.ask < p.liquidation_price)
            )


def test_reconciliation_places_every_unit_and_catches_a_drifted_escrow() -> None:
    sim = Sim()
    sim.fund("alice", usdc=1_000)
    sim.fund("bob", usdc=500)
    sim.tick(100_000, 100_010)
    kept = opened(sim.open("alice", margin=100 * USDC, leverage=5))
    closed = opened(sim.open("bob", side="short", margin=50 * USDC, leverage=2))
    sim.tick(101_000, 101_010)
    assert isinstance(sim.close(closed.position_id, owner="bob"), Accepted)
    report = reconcile(sim.engine)
    (usdc,) = report.assets
    assert report.ok and report.user_accounts == 2
    assert usdc.deposits == 1_500 * USDC
    assert usdc.escrows == {ESCROW: kept.margin}
    assert usdc.users == sim.balance("alice") + sim.balance("bob")
    assert usdc.users + kept.margin + usdc.house == usdc.deposits
    assert [(c.expected, c.actual, c.ok) for c in report.checks] == [(kept.margin, kept.margin, True)]
    # A position whose margin no longer matches its escrow is caught.
    sim.product.positions[kept.position_id].margin += 1
    drifted = reconcile(sim.engine)
    assert not drifted.ok and not drifted.checks[0].ok and drifted.assets[0].balanced
