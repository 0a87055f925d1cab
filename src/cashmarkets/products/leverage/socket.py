"""Leverage's socket commands: the HTTP routes' validation and command path, answered on the socket."""

from __future__ import annotations

from typing import Any

import msgspec

from cashmarkets.api.leverage import TradeClose, TradeCreate, close_trade, open_trade
from cashmarkets.api.services import Services
from cashmarkets.api.ws_commands import socket_payload
from cashmarkets.gateway.protocol import MsgType


async def open_position(
    svc: Services, user_id: str, payload: dict[str, Any], cid: str
) -> tuple[MsgType, Any]:
    trade = await open_trade(svc, user_id, socket_payload(payload, TradeCreate), cid)
    return MsgType.POSITION_UPDATE, {"event": "opened", **msgspec.to_builtins(trade)}


async def close_position(
    svc: Services, user_id: str, payload: dict[str, Any], cid: str
) -> tuple[MsgType, Any]:
    closed = await close_trade(svc, user_id, socket_payload(payload, TradeClose), cid)
    return MsgType.POSITION_UPDATE, {"event": "closed", **msgspec.to_builtins(closed)}
