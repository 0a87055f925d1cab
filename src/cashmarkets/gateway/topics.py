"""Topics: what products publish into and connections subscribe to.

A topic has a sequence number that grows by one per message (clients detect gaps with it) and
keeps its last message, so a new subscriber gets the current value at once. A message is encoded
at most once per codec, whatever the number of subscribers, and the same bytes go to each.

Public topics are declared by the products (`bookTicker.BTC_USDC_PERP`, later `depth.…`, `round.…`).
The private topic `account` is one topic per user (`account:<user id>`), made on first
subscription and dropped with its last subscriber; messages for a user nobody watches are not
kept (the subscriber gets a fresh snapshot instead, from `private_snapshot`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

import msgspec

from cashmarkets.gateway.protocol import (
    STREAM_RESUMED,
    ErrorCode,
    MsgType,
    ProtocolError,
    binary_frame,
    json_data,
)
from cashmarkets.ops import metrics

PRIVATE_TOPICS: Final = frozenset({"account"})
TOPIC_NAME_MAX: Final = 100

_JSON = msgspec.json.Encoder()


class Subscriber(Protocol):
    binary: bool

    def deliver(self, frame: bytes) -> bool:
        """Send one frame (with the checks a single send deserves); True if sent."""
        ...

    def sender(self) -> Callable[[bytes], Any]:
        """The fan-out's hot path: a callable that writes a frame to this subscriber and nothing
        else (slow consumers are caught by the transport's flow control, not per send)."""
        ...


_SENT = {False: metrics.WS_SENT.labels("json"), True: metrics.WS_SENT.labels("binary")}
_SENT_BYTES = {False: metrics.WS_SENT_BYTES.labels("json"), True: metrics.WS_SENT_BYTES.labels("binary")}


def count_sent(binary: bool, frames: int, size: int) -> None:
    """Count `frames` frames of `size` bytes each as sent."""
    if frames:
        _SENT[binary].inc(frames)
        _SENT_BYTES[binary].inc(frames * size)


class Topic:
    __slots__ = (
        "binary_subs",
        "binary_type",
        "json_subs",
        "key",
        "last_binary",
        "last_binary_payload",
        "last_data",
        "last_json",
        "last_ts_ms",
        "seq",
    )

    def __init__(self, key: str, binary_type: MsgType) -> None:
        self.key = key
        self.binary_type = binary_type
        self.seq = 0
        # subscriber -> its sender, one dict per codec (the fan-out loops over the values)
        self.json_subs: dict[Subscriber, Callable[[bytes], Any]] = {}
        self.binary_subs: dict[Subscriber, Callable[[bytes], Any]] = {}
        self.last_data: Any = None
        self.last_ts_ms = 0
        self.last_json: bytes | None = None
        self.last_binary: bytes | None = None
        # The whole binary payload when the publisher gave one (a spec-defined frame such as
        # CANDLE_DATA); else the binary payload is {"stream", "data"}.
        self.last_binary_payload: Any = None

    @property
    def stream(self) -> str:
        """The name clients know it by (`account`, not `account:<user>`)."""
        return self.key.partition(":")[0] if self.key.startswith("account:") else self.key

    def frame(self, binary: bool) -> bytes | None:
        """The last message in one codec, encoded on first use."""
        if self.seq == 0:
            return None
        if binary:
            if self.last_binary is None:
                payload = self.last_binary_payload
                if payload is None:
                    payload = {"stream": self.stream, "data": self.last_data}
                self.last_binary = binary_frame(self.binary_type, self.last_ts_ms, self.seq, payload)
            return self.last_binary
        if self.last_json is None:
            self.last_json = json_data(self.stream, self.seq, _JSON.encode(self.last_data))
        return self.last_json


class TopicRegistry:
    def __init__(self, private_snapshot: Callable[[str], list[Any]] | None = None) -> None:
        self.topics: dict[str, Topic] = {}
        self.public: dict[str, MsgType] = {}
        # user id -> messages describing that user's state now (balances, open positions)
        self.private_snapshot = private_snapshot
        # public topics whose subscribers start from a snapshot instead of the last message
        # (a depth diff alone is no state): topic -> the messages describing it now
        self.snapshots: dict[str, Callable[[], list[tuple[MsgType, Any]]]] = {}

    def declare(self, names: Iterable[str], binary_type: MsgType = MsgType.STREAM_DATA) -> None:
        """Public topics a product publishes (subscribing to an undeclared one is an error)."""
        for name in names:
            self.public[name] = binary_type
            self.topics.setdefault(name, Topic(name, binary_type))

    def names(self) -> list[str]:
        return sorted([*self.public, *PRIVATE_TOPICS])

    def key_for(self, name: str, user_id: str | None) -> str:
        """The topic key a client's name refers to; ProtocolError if it cannot subscribe."""
        if not isinstance(name, str) or not 0 < len(name) <= TOPIC_NAME_MAX:
            raise ProtocolError(ErrorCode.UNKNOWN_TOPIC, "a topic is a string of 1..100 characters")
        if name in PRIVATE_TOPICS:
            if user_id is None:
                raise ProtocolError(ErrorCode.AUTH_REQUIRED, f"{name} is private: authenticate first")
            return f"{name}:{user_id}"
        if name not in self.public:
            raise ProtocolError(ErrorCode.UNKNOWN_TOPIC, f"unknown topic {name!r}")
        return name

    def subscribe(self, key: str, sub: Subscriber) -> None:
        topic = self.topics.get(key)
        if topic is None:  # a private topic: made for its first subscriber
            topic = self.topics[key] = Topic(key, MsgType.STREAM_DATA)
        (topic.binary_subs if sub.binary else topic.json_subs)[sub] = sub.sender()
        metrics.WS_SUBSCRIPTIONS.labels(topic.stream).inc()
        snapshot: list[tuple[MsgType, Any]] | None = None
        if key.startswith("account:") and self.private_snapshot is not None:
            snapshot = self.private_snapshot(key.partition(":")[2])
        elif key in self.snapshots:
            snapshot = self.snapshots[key]()
        if snapshot is not None:
            for kind, data in snapshot:
                one = self._frame_for_one(topic, kind, data, sub.binary)
                count_sent(sub.binary, sub.deliver(one), len(one))
            return
        last = topic.frame(sub.binary)
        if last is not None:
            count_sent(sub.binary, sub.deliver(last), len(last))

    def _frame_for_one(self, topic: Topic, kind: MsgType, data: Any, binary: bool) -> bytes:
        """A snapshot message for one subscriber. It carries the topic's current sequence number
        (the state as of that message): the next update is seq + 1 for every subscriber alike."""
        ts_ms = time.time_ns() // 1_000_000
        if binary:
            return binary_frame(kind, ts_ms, topic.seq, {"stream": topic.stream, "data": data})
        return json_data(topic.stream, topic.seq, _JSON.encode(data))

    def unsubscribe(self, key: str, sub: Subscriber) -> bool:
        topic = self.topics.get(key)
        if topic is None:
            return False
        if topic.binary_subs.pop(sub, None) is None and topic.json_subs.pop(sub, None) is None:
            return False
        metrics.WS_SUBSCRIPTIONS.labels(topic.stream).dec()
        if not topic.binary_subs and not topic.json_subs and key not in self.public:
            del self.topics[key]
        return True

    def stream_status(self, event: str) -> int:
        """Tell each subscriber of each topic that its stream is interrupted or has resumed
        (docs/websocket.md, "Stream interruptions"). The notice carries the topic's seq (the last
        message sent), so a client sees the gap; it is no message of the topic (seq unchanged).
        After "resumed" the messages missed meanwhile follow (the replica replays the log), hence
        `replayed`. Returns the number of notices sent."""
        ts_ms = time.time_ns() // 1_000_000
        replayed = event == STREAM_RESUMED
        sent = 0
        for topic in list(self.topics.values()):
            for binary, subs in ((False, topic.json_subs), (True, topic.binary_subs)):
                if not subs:
                    continue
                notice: dict[str, Any] = {"stream": topic.stream, "event": event}
                if replayed:
                    notice["replayed"] = True
                if binary:
                    frame = binary_frame(MsgType.STREAM_STATUS, ts_ms, topic.seq, notice)
                else:
                    frame = _JSON.encode({**notice, "seq": topic.seq})
                for sub in list(subs):
                    sent += bool(sub.deliver(frame))
        return sent

    def publish(
        self,
        key: str,
        data: Any,
        kind: MsgType | None = None,
        ts_ms: int | None = None,
        binary_payload: Any = None,
    ) -> None:
        """Send `data` to every subscriber of `key` (encoded once per codec) and keep it as the
        topic's last message. A private topic nobody watches is skipped. `ts_ms`: when the message's
        cause happened (engine time of the command), the binary header's timestamp; default now.
        `binary_payload`: the binary codec's whole payload, instead of {"stream", "data"}."""
        topic = self.topics.get(key)
        if topic is None:
            return
        started = time.perf_counter()
        topic.seq += 1
        topic.last_data = data
        topic.last_binary_payload = binary_payload
        topic.last_ts_ms = time.time_ns() // 1_000_000 if ts_ms is None else ts_ms
        if kind is not None and kind != topic.binary_type:
            topic.binary_type = kind
        topic.last_json = topic.last_binary = None
        if not topic.json_subs and not topic.binary_subs:
            return
        for binary, subs in ((False, topic.json_subs), (True, topic.binary_subs)):
            if not subs:
                continue
            frame = topic.frame(binary)
            assert frame is not None
            senders = list(subs.values())  # a sender may unsubscribe its connection meanwhile
            for send in senders:
                send(frame)
            count_sent(binary, len(senders), len(frame))
        metrics.WS_FANOUT_SECONDS.observe(time.perf_counter() - started)
