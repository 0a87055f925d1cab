"""A chart-game client written from the product spec's text alone (§5.2 "Message Format
Specification"), not from our code: it must not import cashmarkets.gateway. If our frames drift
from the spec, this decoder is what breaks.

The spec, verbatim in substance:

    interface BinaryMessage {
      version: uint8;    // Protocol version
      type: MessageType; // Message type
      timestamp: uint64; // Server timestamp
      sequence: uint32;  // Message sequence number
      payload: Buffer;   // MessagePack encoded payload
    }
    CANDLE_DATA = 0x83
    interface CandlePayload {
      roundId: string; index: uint16;
      open: float64; high: float64; low: float64; close: float64; volume: float64;
      timestamp: uint64;
    }

The spec gives no byte order; a fixed-size header on the wire is read in network order (big
endian). MessageType is one byte (its values run 0x01..0xFF). A client reads the fields it knows
and ignores the rest of the map.
"""

from __future__ import annotations

import struct
from typing import Annotated, Any, Final

import msgspec

SPEC_HEADER: Final = struct.Struct("!BBQI")  # version u8, type u8, timestamp u64, sequence u32
SPEC_CANDLE_DATA: Final = 0x83
SPEC_SUBSCRIBE_ROUND: Final = 0x02

UInt16 = Annotated[int, msgspec.Meta(ge=0, le=0xFFFF)]
UInt64 = Annotated[int, msgspec.Meta(ge=0)]  # msgspec bounds stop at int64; ms fit easily


class SpecHeader(msgspec.Struct, frozen=True):
    version: int
    type: int
    timestamp: int
    sequence: int


class CandlePayload(msgspec.Struct, frozen=True):
    roundId: str
    index: UInt16
    open: float
    high: float
    low: float
    close: float
    volume: float
    timestamp: UInt64


_CANDLE = msgspec.msgpack.Decoder(CandlePayload, strict=True)


def decode_header(frame: bytes) -> tuple[SpecHeader, bytes]:
    """The header and the payload bytes of one binary message."""
    assert len(frame) >= SPEC_HEADER.size, f"{len(frame)} bytes: shorter than the header"
    return SpecHeader(*SPEC_HEADER.unpack_from(frame)), frame[SPEC_HEADER.size :]


def decode_candle(payload: bytes) -> CandlePayload:
    """A CANDLE_DATA payload, typed as the spec says (a missing field, a string where a number
    belongs, an index past 65535 are refused)."""
    return _CANDLE.decode(payload)


def float64_fields(payload: bytes) -> dict[str, bool]:
    """For each of the spec's float64 fields: whether the wire carries it as a MessagePack
    float 64 (0xcb), as the spec's type says, and not as an int or a float 32."""
    found: dict[str, Any] = msgspec.msgpack.decode(payload)
    # Decoding loses the wire type: look at the byte after each key (a fixstr) instead.
    marks: dict[str, bool] = {}
    for name in ("open", "high", "low", "close", "volume"):
        key = msgspec.msgpack.encode(name)
        at = payload.find(key)
        assert at >= 0 and name in found, f"no {name}"
        marks[name] = payload[at + len(key)] == 0xCB
    return marks


def subscribe_frame(topic: str, sequence: int, version: int = 1) -> bytes:
    """SUBSCRIBE_ROUND for a topic (the payload's shape is the server's documented extension)."""
    return SPEC_HEADER.pack(version, SPEC_SUBSCRIBE_ROUND, 0, sequence) + msgspec.msgpack.encode(
        {"topic": topic}
    )
