"""Chart game topics, fed from each applied batch of engine events (part of `EngineBridge`).

candles.<GAME>   {"game", "round", "i", "o", "h", "l", "c", "v"} every candle (decimal strings);
                 in the binary codec CANDLE_DATA (0x83) with the spec's CandlePayload {roundId,
                 index, open, high, low, close, volume, timestamp} (floats, uint16, ms), plus
                 "stream" and the exact "data" above
round.<GAME>     the round's lifecycle {"event": "announced" | "open" | "settled", "round",
                 "startMs", "beaconRound", "candles"}; at settlement ROUND_END (0x86) with the
                 revealed seed and the beacons (what a player needs to verify the round)
account          POSITION_UPDATE (0x84) {"event": "chart", ...the socket reply's position}
                 (products/chartgame/views.py)
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from cashmarkets.core.money import format_amount
from cashmarkets.core.products.chartgame import (
    Candle,
    CandleMade,
    ChartgameProduct,
    PositionChanged,
    RoundChanged,
)
from cashmarkets.gateway.protocol import MsgType
from cashmarkets.gateway.topics import TopicRegistry
from cashmarkets.products.chartgame.views import position_out

# The spec's CandlePayload carries the candle's index as a uint16.
CANDLE_INDEX_MAX: Final = 0xFFFF


def round_id(game: str, round_no: int) -> str:
    """The spec's `roundId` (a string): a round is known by its game and number."""
    return f"{game}:{round_no}"


def candle_payload(stream: str, data: dict[str, Any], c: Candle, decimals: int, ts_ms: int) -> dict[str, Any]:
    """The binary CANDLE_DATA payload: the spec's CandlePayload (prices as float64, the nearest
    double to the exact price; `timestamp`: the engine time of the tick that made the candle, ms),
    plus "stream" and "data" (the JSON message, exact decimal strings) as every binary topic has."""
    scale = 10**decimals  # int / int is correctly rounded: the float nearest the decimal price
    return {
        "roundId": round_id(data["game"], data["round"]),
        "index": c.index,
        "open": c.open / scale,
        "high": c.high / scale,
        "low": c.low / scale,
        "close": c.close / scale,
        "volume": float(c.volume),
        "timestamp": ts_ms,
        "stream": stream,
        "data": data,
    }


class ChartStreams:
    def __init__(self, registry: TopicRegistry, engine: Any) -> None:
        self.registry = registry
        self.product: ChartgameProduct = engine.products["chartgame"]
        self.games = self.product.games
        for game in self.games.values():
            if game.candles_per_round - 1 > CANDLE_INDEX_MAX:
                raise ValueError(f"{game.game}: CANDLE_DATA's index is a uint16, at most {CANDLE_INDEX_MAX}")
        registry.declare([f"{kind}.{game}" for game in self.games for kind in ("candles", "round")])

    def snapshot(self, _user_id: str) -> list[tuple[MsgType, Any]]:
        """Nothing: a chart position's state arrives with its round's messages."""
        return []

    def on_events(self, events: list[Any], ts_ms: int) -> None:
        publish = self.registry.publish
        for event in events:
            kind = type(event)
            if kind is CandleMade:
                c = event.candle
                d = self.games[event.game].model.price_decimals
                stream = f"candles.{event.game}"
                data = {
                    "game": event.game,
                    "round": event.round_no,
                    "i": c.index,
                    "o": format_amount(c.open, d),
                    "h": format_amount(c.high, d),
                    "l": format_amount(c.low, d),
                    "c": format_amount(c.close, d),
                    "v": c.volume,
                }
                binary = candle_payload(stream, data, c, d, ts_ms)
                publish(stream, data, MsgType.CANDLE_DATA, ts_ms=ts_ms, binary_payload=binary)
            elif kind is RoundChanged:
                r = event.round
                message: dict[str, Any] = {
                    "event": r.status,
                    "game": r.game,
                    "round": r.round_no,
                    "startMs": r.start_ms,
                    "beaconRound": r.beacon_round,
                    "candles": r.candles,
                }
                settled = r.status == "settled"
                if settled:
                    message["seed"] = event.seed.hex()
                    message["chainId"] = r.chain_id
                    message["chainIndex"] = r.chain_index
                    message["beacons"] = [
                        {"round": b, "fromCandle": i, "signature": s.hex()} for b, i, s in event.beacons
                    ]
                publish(
                    f"round.{r.game}",
                    message,
                    MsgType.ROUND_END if settled else MsgType.STREAM_DATA,
                    ts_ms=ts_ms,
                )
            elif kind is PositionChanged:
                p = event.position
                view = position_out(p, self.games[p.game])
                publish(
                    f"account:{p.owner}",
                    {"event": "chart", **msgspec.to_builtins(view)},
                    MsgType.POSITION_UPDATE,
                    ts_ms=ts_ms,
                )
