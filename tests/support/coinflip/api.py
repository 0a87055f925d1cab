"""The coin flip's HTTP routes and socket command (the same validation and command path)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from sqlalchemy import select

from cashmarkets.api.common import strict_body
from cashmarkets.api.schemas import Request as RequestBody
from cashmarkets.api.schemas import Response as ResponseBody
from cashmarkets.api.security import AuthUser, current_user
from cashmarkets.api.services import Services, command_id, parse_money, result_data, services
from cashmarkets.api.ws_commands import socket_payload
from cashmarkets.core.money import ASSETS, format_amount
from cashmarkets.gateway.protocol import MsgType
from tests.support.coinflip.core import FlipCoin, FlipView
from tests.support.coinflip.tables import coinflip_flips


class FlipRequest(RequestBody):
    asset: str
    stake: str  # a decimal string, as every amount at the edges
    call: str  # heads or tails; the engine refuses anything else (bad_call, HTTP 400)


class Flip(ResponseBody):
    flip_id: int
    asset: str
    stake: str
    call: str
    outcome: str
    payout: str


class Flips(ResponseBody):
    flips: list[Flip]


def flip_view(asset: str, flip_id: int, stake: int, call: str, outcome: str, payout: int) -> Flip:
    decimals = ASSETS[asset].decimals
    return Flip(
        flip_id=flip_id,
        asset=asset,
        stake=format_amount(stake, decimals),
        call=call,
        outcome=outcome,
        payout=format_amount(payout, decimals),
    )


async def flip(svc: Services, user_id: str, data: FlipRequest, cid: str) -> Flip:
    asset = svc.asset(data.asset)
    stake = parse_money(asset, data.stake, "stake")
    cmd = FlipCoin(command_id=cid, owner=user_id, asset=asset.code, stake=stake, call=data.call)
    v = result_data(await svc.execute(cmd), FlipView)
    return flip_view(v.asset, v.flip_id, v.stake, v.call, v.outcome, v.payout)


async def socket_flip(svc: Services, user_id: str, payload: dict[str, Any], cid: str) -> tuple[MsgType, Any]:
    done = await flip(svc, user_id, socket_payload(payload, FlipRequest), cid)
    return MsgType.RESULT, msgspec.to_builtins(done)


class CoinflipController(Controller):
    path = "/api/v1/coinflip"
    tags = ["coinflip"]

    @post("/flips", status_code=200, dependencies={"user": current_user})
    async def create(
        self, request: Request[Any, Any, Any], user: NamedDependency[AuthUser], data: JSONBody[FlipRequest]
    ) -> Flip:
        """Call heads or tails with a stake: won, the stake comes back doubled."""
        await strict_body(request, FlipRequest)
        return await flip(services(request), user.id, data, command_id(request, user.id))

    @get("/flips", dependencies={"user": current_user})
    async def history(self, request: Request[Any, Any, Any], user: NamedDependency[AuthUser]) -> Flips:
        """The caller's flips from the store (the projection), oldest first."""
        c = coinflip_flips.c
        query = select(coinflip_flips).where(c.owner == user.id).order_by(c.flip_id)
        async with services(request).db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return Flips(
            flips=[flip_view(r.asset, r.flip_id, r.stake, r.call, r.outcome, r.payout) for r in rows]
        )
