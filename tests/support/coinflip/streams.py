"""The coin flip's topic: `coinflip.flips`, every flip as it happens (public)."""

from __future__ import annotations

from typing import Any

from cashmarkets.core.money import ASSETS, format_amount
from cashmarkets.gateway.protocol import MsgType
from cashmarkets.gateway.topics import TopicRegistry
from tests.support.coinflip.core import CoinFlipped

TOPIC = "coinflip.flips"


class CoinflipStreams:
    def __init__(self, registry: TopicRegistry, _engine: Any) -> None:
        self.registry = registry
        registry.declare([TOPIC])

    def on_events(self, events: list[Any], ts_ms: int) -> None:
        for event in events:
            if type(event) is CoinFlipped:
                f = event.flip
                decimals = ASSETS[f.asset].decimals
                data = {
                    "flipId": f.flip_id,
                    "asset": f.asset,
                    "stake": format_amount(f.stake, decimals),
                    "outcome": f.outcome,
                    "payout": format_amount(f.payout, decimals),
                }
                self.registry.publish(TOPIC, data, ts_ms=ts_ms)

    def snapshot(self, _user_id: str) -> list[tuple[MsgType, Any]]:
        return []
