"""The gateway's spot topics follow the spot rules in force (decision 023): the replica's, which a
`SetRules` in the log may re-pin after the gateway built its streams."""

from __future__ import annotations

import msgspec

from cashmarkets.bootstrap import build_engine
from cashmarkets.core.commands import SetRules
from cashmarkets.core.products.spot import SpotConfig
from cashmarkets.core.results import Accepted
from cashmarkets.gateway.spot_streams import SpotStreams
from cashmarkets.gateway.topics import TopicRegistry


def test_spot_topics_follow_a_rules_change_in_the_log() -> None:
    engine = build_engine(native=False)
    registry = TopicRegistry()
    streams = SpotStreams(registry, engine)
    assert sorted(streams.markets) == ["BTC_USDC", "ETH_USDC", "SOL_USDC"]
    sol = msgspec.structs.replace(SpotConfig().markets[2], taker_fee_bps=1)
    cmd = SetRules(
        command_id="r", product="spot", version=1, config=msgspec.msgpack.encode(SpotConfig(markets=(sol,)))
    )
    cmd.seq = engine.seq + 1
    assert isinstance(engine.apply(cmd)[0], Accepted)
    streams.on_events([], ts_ms=0)
    assert list(streams.markets) == ["SOL_USDC"]
    assert streams.markets["SOL_USDC"].taker_fee_bps == 1
    assert list(streams.depth) == ["SOL_USDC"]
    assert "trade.SOL_USDC" in registry.topics and "ticker.SOL_USDC" in registry.topics
