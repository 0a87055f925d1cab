"""Topic registry and wire codecs, without sockets: sequence numbers, the last-message cache,
encode-once fan-out, private topics, and the binary header."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from cashmarkets.gateway.protocol import (
    HEADER,
    ErrorCode,
    MsgType,
    ProtocolError,
    binary_frame,
    parse_binary,
    parse_json,
)
from cashmarkets.gateway.topics import TopicRegistry


class Sink:
    def __init__(self, binary: bool = False, accept: bool = True) -> None:
        self.binary = binary
        self.accept = accept
        self.frames: list[bytes] = []

    def deliver(self, frame: bytes) -> bool:
        self.frames.append(frame)
        return self.accept

    def sender(self) -> Any:
        return self.frames.append


def json_of(frame: bytes) -> Any:
    return msgspec.json.decode(frame)


def test_sequence_last_message_and_one_encoding_per_codec() -> None:
    registry = TopicRegistry()
    registry.declare(["bookTicker.BTC_USDC"])
    a, b, c = Sink(), Sink(), Sink(binary=True)
    registry.subscribe("bookTicker.BTC_USDC", a)
    registry.publish("bookTicker.BTC_USDC", {"bid": "1.00"})
    registry.subscribe("bookTicker.BTC_USDC", b)  # gets the last message at once
    registry.subscribe("bookTicker.BTC_USDC", c)
    registry.publish("bookTicker.BTC_USDC", {"bid": "2.00"}, ts_ms=1_700_000_000_123)
    assert [json_of(f)["seq"] for f in a.frames] == [1, 2]
    assert [json_of(f)["data"]["bid"] for f in b.frames] == ["1.00", "2.00"]
    assert a.frames[1] is b.frames[1]  # encoded once, the same bytes for both
    version, kind, ts_ms, seq = HEADER.unpack_from(c.frames[-1])
    assert (version, kind, ts_ms, seq) == (1, MsgType.STREAM_DATA, 1_700_000_000_123, 2)
    assert msgspec.msgpack.decode(c.frames[-1][HEADER.size :]) == {
        "stream": "bookTicker.BTC_USDC",
        "data": {"bid": "2.00"},
    }
    assert registry.unsubscribe("bookTicker.BTC_USDC", a) and not registry.unsubscribe(
        "bookTicker.BTC_USDC", a
    )
    registry.publish("bookTicker.BTC_USDC", {"bid": "3.00"})
    assert len(a.frames) == 2 and json_of(b.frames[-1])["seq"] == 3


def test_private_topics_need_a_user_and_are_kept_only_while_watched() -> None:
    registry = TopicRegistry(private_snapshot=lambda user: [(MsgType.BALANCE_UPDATE, {"user": user})])
    with pytest.raises(ProtocolError) as anonymous:
        registry.key_for("account", None)
    assert anonymous.value.code == ErrorCode.AUTH_REQUIRED
    with pytest.raises(ProtocolError) as unknown:
        registry.key_for("bookTicker.NOPE", "u1")
    assert unknown.value.code == ErrorCode.UNKNOWN_TOPIC
    registry.publish("account:u1", {"lost": True})  # nobody watches: not kept
    assert "account:u1" not in registry.topics
    mine = Sink()
    registry.subscribe(registry.key_for("account", "u1"), mine)
    assert json_of(mine.frames[0]) == {"stream": "account", "seq": 0, "data": {"user": "u1"}}
    registry.publish("account:u1", {"balance": "1"}, MsgType.BALANCE_UPDATE)
    assert json_of(mine.frames[1])["seq"] == 1
    registry.unsubscribe("account:u1", mine)
    assert "account:u1" not in registry.topics


def test_binary_header_parsing_refuses_what_it_cannot_read() -> None:
    frame = binary_frame(MsgType.SUBSCRIBE_ROUND, 0, 77, {"topic": "x"})
    assert parse_binary(frame) == (MsgType.SUBSCRIBE_ROUND, 77, {"topic": "x"})
    assert parse_binary(HEADER.pack(1, 6, 0, 3)) == (6, 3, {})  # no payload: an empty map
    for bad, code in [
        (b"\x01", ErrorCode.BAD_MESSAGE),
        (HEADER.pack(2, 2, 0, 1), ErrorCode.UNSUPPORTED_VERSION),
        (HEADER.pack(1, 2, 0, 1) + b"\xc1", ErrorCode.BAD_MESSAGE),  # never-used MessagePack byte
        (HEADER.pack(1, 2, 0, 1) + msgspec.msgpack.encode([1, 2]), ErrorCode.BAD_MESSAGE),
    ]:
        with pytest.raises(ProtocolError) as refused:
            parse_binary(bad)
        assert refused.value.code == code
    assert binary_frame(MsgType.RESULT, 0, 2**32 + 5, {})[10:14] == (5).to_bytes(4, "big")  # wraps


def test_json_requests_are_checked_strictly() -> None:
    assert parse_json(b'{"method":"SUBSCRIBE","params":["a"],"id":1}').params == ["a"]
    for bad in (b"[]", b'{"params":[]}', b'{"method":"X","extra":1}', b"\xff"):
        with pytest.raises(ProtocolError):
            parse_json(bad)


def test_depth_snapshot_and_diffs_rebuild_the_book_for_a_late_subscriber() -> None:
    import random

    from cashmarkets.gateway.depth import DepthBook, LocalBook, OutOfSync

    registry = TopicRegistry()
    book = DepthBook(registry, "BTC_USDC", price_decimals=2, qty_decimals=8)
    rng = random.Random(7)
    clients: list[tuple[Sink, LocalBook]] = []
    update_id = 0
    for step in range(400):
        if step % 50 == 10:  # someone subscribes mid-stream
            sink = Sink()
            registry.subscribe("depth.BTC_USDC", sink)
            clients.append((sink, LocalBook(2, 8)))
        first = update_id + 1
        update_id += rng.randint(1, 3)
        bids = [
            (rng.randint(9_000, 9_999), rng.choice([0, rng.randint(1, 10**8)]))
            for _ in range(rng.randint(0, 4))
        ]
        asks = [
            (rng.randint(10_000, 11_000), rng.choice([0, rng.randint(1, 10**8)]))
            for _ in range(rng.randint(0, 4))
        ]
        book.update(first, update_id, dict(bids).items(), dict(asks).items())
        for sink, local in clients:
            while sink.frames:
                local.on_message(json_of(sink.frames.pop(0))["data"])
            assert (local.bids, local.asks, local.last_update_id) == (book.bids, book.asks, update_id)
    assert len(clients) == 8
    # A client that misses a diff notices at the next one.
    sink, local = clients[0]
    book.update(update_id + 1, update_id + 1, [(9_500, 5)], [])
    book.update(update_id + 2, update_id + 2, [(9_501, 5)], [])
    sink.frames.pop(0)  # lost
    with pytest.raises(OutOfSync):
        local.on_message(json_of(sink.frames.pop(0))["data"])


def test_stream_status_notices_carry_the_last_seq_and_take_no_number() -> None:
    registry = TopicRegistry()
    registry.declare(["bookTicker.BTC_USDC", "bookTicker.ETH_USDC"])
    json_sub, binary_sub, idle = Sink(), Sink(binary=True), Sink()
    registry.subscribe("bookTicker.BTC_USDC", json_sub)
    registry.subscribe("bookTicker.BTC_USDC", binary_sub)
    registry.subscribe("account:u1", idle)  # a private topic with no message yet: seq 0
    registry.publish("bookTicker.BTC_USDC", {"bid": "1.00"})
    registry.publish("bookTicker.ETH_USDC", {"bid": "2.00"})  # nobody listens: no notice
    assert registry.stream_status("interrupted") == 3
    assert registry.stream_status("resumed") == 3
    registry.publish("bookTicker.BTC_USDC", {"bid": "3.00"})
    notices = [json_of(f) for f in json_sub.frames[1:3]]
    assert notices == [
        {"stream": "bookTicker.BTC_USDC", "event": "interrupted", "seq": 1},
        {"stream": "bookTicker.BTC_USDC", "event": "resumed", "replayed": True, "seq": 1},
    ]
    assert json_of(json_sub.frames[3])["seq"] == 2  # the next message: no gap, no repeat
    assert [json_of(f) for f in idle.frames] == [
        {"stream": "account", "event": "interrupted", "seq": 0},
        {"stream": "account", "event": "resumed", "replayed": True, "seq": 0},
    ]
    version, kind, _ts, sequence = HEADER.unpack_from(binary_sub.frames[2])
    assert (version, kind, sequence) == (1, MsgType.STREAM_STATUS, 1)
    payload = msgspec.msgpack.decode(binary_sub.frames[2][HEADER.size :])
    assert payload == {"stream": "bookTicker.BTC_USDC", "event": "resumed", "replayed": True}
