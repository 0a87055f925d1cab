"""The chart game's socket commands: open and close a position in the running round."""

from __future__ import annotations

from typing import Any

import msgspec

from cashmarkets.api.chartgame import PositionOpen, close_chart_position, open_chart_position
from cashmarkets.api.services import Services
from cashmarkets.api.ws_commands import socket_payload
from cashmarkets.gateway.protocol import MsgType


class ChartPositionClose(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    position_id: int


async def open_position(
    svc: Services, user_id: str, payload: dict[str, Any], cid: str
) -> tuple[MsgType, Any]:
    opened = await open_chart_position(svc, user_id, socket_payload(payload, PositionOpen), cid)
    return MsgType.POSITION_UPDATE, {"event": "chart", **msgspec.to_builtins(opened)}


async def close_position(
    svc: Services, user_id: str, payload: dict[str, Any], cid: str
) -> tuple[MsgType, Any]:
    position_id = socket_payload(payload, ChartPositionClose).position_id
    done = await close_chart_position(svc, user_id, position_id, cid)
    return MsgType.POSITION_UPDATE, {"event": "chart", **msgspec.to_builtins(done)}
