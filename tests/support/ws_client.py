"""A WebSocket client of the gateway in both codecs, for tests: send a JSON method and read the
answer, build and read binary frames (with our codec's header)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection

from cashmarkets.gateway.protocol import HEADER, PROTOCOL_VERSION

RECV_TIMEOUT_S = 5.0


async def recv_json(ws: ClientConnection) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.recv(), RECV_TIMEOUT_S)
    assert isinstance(message, str), message
    decoded: dict[str, Any] = json.loads(message)
    return decoded


async def call(ws: ClientConnection, method: str, *params: Any, request_id: int = 1) -> dict[str, Any]:
    await ws.send(json.dumps({"method": method, "params": list(params), "id": request_id}))
    return await recv_json(ws)


def frame(msg_type: int, sequence: int, payload: Any, version: int = PROTOCOL_VERSION) -> bytes:
    return HEADER.pack(version, msg_type, 0, sequence) + msgspec.msgpack.encode(payload)


async def recv_binary(ws: ClientConnection) -> tuple[int, int, Any]:
    message = await asyncio.wait_for(ws.recv(), RECV_TIMEOUT_S)
    assert isinstance(message, bytes), message
    version, msg_type, ts_ms, sequence = HEADER.unpack_from(message)
    assert version == PROTOCOL_VERSION and ts_ms > 1_700_000_000_000
    return msg_type, sequence, msgspec.msgpack.decode(message[HEADER.size :])
