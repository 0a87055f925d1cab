"""The gateway's two wire codecs (docs/websocket.md is the reference for clients).

JSON (text frames), exchange style:
    -> {"method": "SUBSCRIBE", "params": ["bookTicker.BTC_USDC_PERP"], "id": 1}
    <- {"id": 1, "result": null}            or {"id": 1, "error": {"code": 2, "msg": "..."}}
    <- {"stream": "bookTicker.BTC_USDC_PERP", "seq": 7, "data": {...}}

Binary (binary frames), the spec's protocol: a 14-byte big-endian header, then a MessagePack
payload:
    version u8 | type u8 | timestamp u64 (server ms since the epoch) | sequence u32
For data frames `sequence` is the topic's sequence number (the same one JSON sends as "seq");
for replies it echoes the request's sequence.
"""

from __future__ import annotations

import enum
import struct
from typing import Any, Final

import msgspec

from cashmarkets.ops.nesting import NESTING_DEPTH_MAX, json_depth_within, msgpack_depth_within

PROTOCOL_VERSION: Final = 1
HEADER: Final = struct.Struct(">BBQI")  # version, type, timestamp ms, sequence
HEADER_BYTES: Final = HEADER.size  # 14
SEQUENCE_MAX: Final = 2**32 - 1  # the header's u32 wraps to 0 after this


class MsgType(enum.IntEnum):
    # client -> server
    AUTH = 0x01
    SUBSCRIBE_ROUND = 0x02  # payload {"topic": ...} (or {"roundId": ...} once rounds exist)
    UNSUBSCRIBE_ROUND = 0x03
    OPEN_POSITION = 0x04
    CLOSE_POSITION = 0x05
    GET_BALANCE = 0x06
    LIST_SUBSCRIPTIONS = 0x07  # extension: the JSON method of the same name
    # server -> client
    AUTH_SUCCESS = 0x81
    AUTH_FAILURE = 0x82
    CANDLE_DATA = 0x83
    POSITION_UPDATE = 0x84
    BALANCE_UPDATE = 0x85
    ROUND_END = 0x86
    STREAM_DATA = 0x87  # extension: data of a topic without a type of its own (prices, trades, depth)
    RESULT = 0x88  # extension: the answer to SUBSCRIBE/UNSUBSCRIBE/LIST/GET_BALANCE/OPEN/CLOSE
    ORDER_UPDATE = 0x89  # extension: a spot order changed, or filled (on the private `account`)
    STREAM_STATUS = 0x8A  # extension: {"stream", "event": "interrupted"|"resumed", "replayed"}
    ERROR = 0xFF


class ErrorCode(enum.IntEnum):
    """Stable numeric codes in error replies (JSON `error.code`, binary ERROR `code`)."""

    BAD_MESSAGE = 1  # not JSON / not MessagePack / wrong shape / bad header / truncated
    UNKNOWN_METHOD = 2
    UNKNOWN_TOPIC = 3
    TOO_MANY_SUBSCRIPTIONS = 4  # also: too many commands in flight (reason too_many_in_flight)
    AUTH_REQUIRED = 5  # a private topic or a command without a valid token
    AUTH_FAILED = 6
    MESSAGE_TOO_LARGE = 7
    UNSUPPORTED_VERSION = 8
    REJECTED = 9  # the engine refused a command; `reason` carries its rejection code
    UNAVAILABLE = 10  # the engine did not answer in time; or reason dependency_unavailable, retryAfterMs
    RATE_LIMITED = 11  # the user's rate limit (shared with HTTP): reason rate_limited, retryAfterMs


class ProtocolError(Exception):
    def __init__(
        self,
        code: ErrorCode,
        msg: str,
        *,
        sequence: int = 0,
        msg_type: int = 0,
        reason: str = "",
        retry_after_ms: int = 0,
    ) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.reason = reason  # REJECTED: the engine's or the API's stable code (insufficient_funds, ...)
        self.retry_after_ms = retry_after_ms  # RATE_LIMITED: when one more command would be allowed
        self.sequence = sequence  # of the offending binary request, when its header could be read
        self.msg_type = msg_type


_ENCODER = msgspec.msgpack.Encoder()
_TOO_DEEP: Final = f"payload nests deeper than {NESTING_DEPTH_MAX} levels"
_JSON = msgspec.json.Encoder()


def binary_frame(msg_type: int, ts_ms: int, sequence: int, payload: Any) -> bytes:
    """One binary frame: header + MessagePack payload."""
    return HEADER.pack(PROTOCOL_VERSION, msg_type, ts_ms, sequence & SEQUENCE_MAX) + _ENCODER.encode(payload)


def parse_binary(frame: bytes) -> tuple[int, int, Any]:
    """(type, sequence, payload) of a client frame; ProtocolError if it is not one."""
    if len(frame) < HEADER_BYTES:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"frame of {len(frame)} bytes is shorter than the header")
    version, msg_type, _ts_ms, sequence = HEADER.unpack_from(frame)
    where = {"sequence": sequence, "msg_type": msg_type}
    if version != PROTOCOL_VERSION:
        detail = f"protocol version {version}; this server speaks {PROTOCOL_VERSION}"
        raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION, detail, **where)
    if not msgpack_depth_within(frame[HEADER_BYTES:]):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, _TOO_DEEP, **where)
    try:
        payload = msgspec.msgpack.decode(frame[HEADER_BYTES:]) if len(frame) > HEADER_BYTES else {}
    except msgspec.DecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"payload is not MessagePack: {exc}", **where) from None
    if not isinstance(payload, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "payload must be a map", **where)
    return msg_type, sequence, payload


class JsonRequest(msgspec.Struct, forbid_unknown_fields=True):
    method: str
    params: list[Any] = []
    id: int | str | None = None


_JSON_REQUEST = msgspec.json.Decoder(JsonRequest)


def parse_json(text: bytes) -> JsonRequest:
    if not json_depth_within(text):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, _TOO_DEEP)
    try:
        return _JSON_REQUEST.decode(text)
    except msgspec.ValidationError as exc:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"bad request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"not JSON: {exc}") from None


def json_result(request_id: Any, result: Any) -> bytes:
    return _JSON.encode({"id": request_id, "result": result})


def json_error(request_id: Any, code: ErrorCode, msg: str, **extra: Any) -> bytes:
    return _JSON.encode({"id": request_id, "error": {"code": int(code), "msg": msg, **extra}})


# STREAM_STATUS events: the gateway lost its feed of the command log (Redis down), and got it back.
STREAM_INTERRUPTED: Final = "interrupted"
STREAM_RESUMED: Final = "resumed"


def json_data(stream: str, seq: int, data_json: bytes) -> bytes:
    """A data frame from already-encoded data: the data is encoded once for all subscribers."""
    return b'{"stream":%s,"seq":%d,"data":%s}' % (_JSON.encode(stream), seq, data_json)
