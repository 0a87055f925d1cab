"""Rules pinned in the log (issue 17 item 3, docs/decisions/023): SetRules configures a product
while its state is as built, the pinned rules are engine state (snapshot, state_hash), a log
without them keeps the old snapshot layout, and a rules version other than the log's is reported."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from cashmarkets.core import codes
from cashmarkets.core.commands import Command, Deposit, SetRules
from cashmarkets.core.engine import IMPLICIT_RULES_VERSION, Engine, _SnapshotBodyV1
from cashmarkets.core.products.chartgame import ChartgameProduct
from cashmarkets.core.products.leverage import DEFAULT_MARKETS, LeverageConfig, LeverageProduct, PriceTick
from cashmarkets.core.products.spot import DEFAULT_MARKETS as SPOT_MARKETS
from cashmarkets.core.products.spot import PlaceOrder, SpotConfig, SpotProduct
from cashmarkets.core.results import Accepted, Rejected

ENCODE = msgspec.msgpack.Encoder(order="deterministic").encode


def build(leverage: LeverageConfig | None = None, *, native: bool = False) -> Engine:
    from cashmarkets.core.engine import EngineConfig

    products = [LeverageProduct.factory(leverage), SpotProduct.factory(), ChartgameProduct.factory()]
    return Engine(EngineConfig(native=native), products=products)


class Feed:
    """Stamps and applies commands the way the runtime does."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __call__(self, cmd: Command) -> Any:
        cmd.seq, cmd.ts_ns = self.engine.seq + 1, 1_000_000_000 * (self.engine.seq + 1)
        result, _ = self.engine.apply(cmd)
        return result


def set_rules(product: str, config: Any, version: int = 1, cid: str = "") -> SetRules:
    return SetRules(
        command_id=cid or f"rules:{product}:{version}",
        product=product,
        version=version,
        config=ENCODE(config),
    )


def test_genesis_pins_every_configurable_product_and_is_engine_state() -> None:
    engine = build()
    before = engine.state_hash()
    genesis = engine.genesis_commands()
    assert [g.product for g in genesis] == ["chartgame", "leverage", "spot"]
    feed = Feed(engine)
    assert all(isinstance(feed(g), Accepted) for g in genesis)
    assert engine.genesis_commands() == []
    assert engine.rules["leverage"].version == 1 and engine.rules_problems() == []
    assert engine.state_hash() != before
    restored = build()
    restored.restore(engine.snapshot())
    assert restored.state_hash() == engine.state_hash()
    assert restored.rules == engine.rules


def test_an_engine_without_pinned_rules_keeps_the_old_snapshot_layout() -> None:
    engine = build()
    Feed(engine)(Deposit(command_id="d", owner="a", asset="USDC", amount=5))
    body = msgspec.msgpack.decode(engine.snapshot())
    assert len(body) == len(_SnapshotBodyV1.__struct_fields__)  # no fences, no rules appended


def test_the_logs_rules_win_over_the_builds_defaults() -> None:
    """Replaying a log whose genesis pins other rules than this build's defaults gives the log's
    rules, so a changed default cannot change what an old log replays to."""
    pinned = LeverageConfig(markets=DEFAULT_MARKETS[:1], stale_after_ns=5_000_000_000)
    log = [set_rules("leverage", pinned), PriceTick(command_id="t", symbol="ETH", bid=1, ask=2)]
    engine = build()  # built with the defaults: BTC, ETH, SOL
    feed = Feed(engine)
    assert isinstance(feed(log[0]), Accepted)
    leverage = engine.products["leverage"]
    assert leverage.config == pinned and set(leverage.markets) == {"BTC"}
    assert isinstance(eth := feed(log[1]), Rejected) and eth.code == codes.UNKNOWN_SYMBOL
    # Another build, other defaults: the same log, the same state.
    other = build(LeverageConfig(stale_after_ns=1))
    other_feed = Feed(other)
    for cmd in log:
        other_feed(msgspec.msgpack.decode(engine.codec.encode(cmd), type=engine.codec.command_type))
    assert other.state_hash() == engine.state_hash()


def test_rules_of_a_product_in_use_change_only_to_equal_ones() -> None:
    engine = build()
    feed = Feed(engine)
    feed(PriceTick(command_id="t", symbol="BTC", bid=1, ask=2))
    other = LeverageConfig(stale_after_ns=1)
    assert (r := feed(set_rules("leverage", other))).code == codes.RULES_REFUSED, r  # type: ignore[union-attr]
    assert "leverage" not in engine.rules
    assert isinstance(feed(set_rules("leverage", LeverageConfig(), version=2)), Accepted)
    assert engine.rules_version_of("leverage") == 2
    assert (
        r := feed(set_rules("leverage", LeverageConfig(), version=1, cid="old"))
    ).code == codes.RULES_REFUSED  # type: ignore[union-attr]
    assert engine.rules_version_of("leverage") == 2


@pytest.mark.parametrize(
    "cmd",
    [
        SetRules(command_id="x", product="nope", version=1, config=ENCODE(LeverageConfig())),
        SetRules(command_id="x", product="ledger", version=1, config=b"\x80"),
        SetRules(command_id="x", product="leverage", version=0, config=ENCODE(LeverageConfig())),
        SetRules(command_id="x", product="leverage", version=1, config=b"not msgpack"),
        SetRules(command_id="x", product="leverage", version=1, config=ENCODE({"stale_after_ns": "soon"})),
    ],
)
def test_malformed_rules_are_refused_and_change_nothing(cmd: SetRules) -> None:
    engine = build()
    result = Feed(engine)(cmd)
    assert isinstance(result, Rejected) and result.code == codes.BAD_COMMAND, result
    assert engine.rules == {}


def test_a_spot_genesis_rebuilds_the_native_fast_path() -> None:
    only_eth = SpotConfig(markets=SPOT_MARKETS[1:2])
    engine = build(native=True)
    feed = Feed(engine)
    assert isinstance(feed(set_rules("spot", only_eth)), Accepted)
    feed(Deposit(command_id="d", owner="a", asset="USDC", amount=10**12))
    market = only_eth.markets[0]
    order = PlaceOrder(
        command_id="o", owner="a", market=market.symbol, side="BUY", price_ticks=250_000, qty_lots=100
    )
    assert isinstance(feed(order), Accepted)
    btc = PlaceOrder(
        command_id="o2", owner="a", market=SPOT_MARKETS[0].symbol, side="BUY", price_ticks=1, qty_lots=1
    )
    assert isinstance(r := feed(btc), Rejected) and r.code == codes.UNKNOWN_MARKET, r
    replayed = build(native=False)
    replayed.restore(engine.snapshot())
    assert replayed.state_hash() == engine.state_hash()


def test_a_rules_version_other_than_the_logs_is_reported() -> None:
    class NewerLeverage(LeverageProduct):
        rules_version = 2

    engine = Engine(products=[NewerLeverage.factory()])
    assert engine.rules_version_of("leverage") == IMPLICIT_RULES_VERSION
    assert engine.rules_problems() == ["leverage rules: the log has version 1, this build runs version 2"]
    Feed(engine)(engine.genesis_commands()[0])
    assert engine.rules_problems() == []
