"""Price feeds: adapters that turn exchange data into `PriceTick` commands for the engine.

    BackpackFeed   live best bid/ask from Backpack Exchange over WebSocket (reconnects)
    SyntheticFeed  a seeded random walk, deterministic per seed
    ReplayFeed     recorded Backpack messages (JSONL) at the recorded pace, or as fast as possible
    record         writes such a recording

Every feed hands ticks to a `TickSink` (an async callable) through a `Coalescer` (ordering,
coalescing, counters in `FeedStats`); `StaleWatch` tracks the last update of each symbol.
"""

from cashmarkets.feeds.backpack import (
    BACKPACK_WS_URL,
    BackpackFeed,
    BadMessage,
    ServerReply,
    parse_message,
    stream_name,
    subscribe_message,
)
from cashmarkets.feeds.replay import ReplayFeed, record
from cashmarkets.feeds.synthetic import DEFAULT_START_PRICES, SyntheticFeed
from cashmarkets.feeds.ticks import Coalescer, FeedStats, StaleWatch, TickSink, tick_command_id

__all__ = [
    "BACKPACK_WS_URL",
    "DEFAULT_START_PRICES",
    "BackpackFeed",
    "BadMessage",
    "Coalescer",
    "FeedStats",
    "ReplayFeed",
    "ServerReply",
    "StaleWatch",
    "SyntheticFeed",
    "TickSink",
    "parse_message",
    "record",
    "stream_name",
    "subscribe_message",
    "tick_command_id",
]
