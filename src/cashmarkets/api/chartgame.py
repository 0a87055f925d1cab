"""Product `chartgame` over HTTP: `/api/v1/chartgame/...` (rounds and candles from the projection;
positions through the engine). A round is addressed by its game and number:
`/rounds/{game}/{round}`; `/verify` returns the document `tools/verify_round.py` checks."""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter, QueryParameter
from msgspec import Meta
from sqlalchemy import select

from cashmarkets.api.accounts import decode_cursor, encode_cursor
from cashmarkets.api.common import strict_body
from cashmarkets.api.errors import ApiError
from cashmarkets.api.schemas import AmountText
from cashmarkets.api.schemas import Request as RequestBody
from cashmarkets.api.schemas import Response as ResponseBody
from cashmarkets.api.security import AuthUser, current_user
from cashmarkets.api.services import Services, command_id, parse_money, result_data, services
from cashmarkets.benchmarks.chartgame import RtpEstimate, simulate_rtp
from cashmarkets.core.money import ASSETS, format_amount
from cashmarkets.core.products.chartgame import PRODUCT as CHARTGAME
from cashmarkets.core.products.chartgame import (
    ChartClosePosition,
    ChartgameConfig,
    ChartOpenPosition,
    ChartPositionView,
    GameConfig,
    OnchainDraw,
)
from cashmarkets.products.chartgame.views import PositionOut, position_out
from cashmarkets.store import chart_queries, queries
from cashmarkets.store.tables import chart_candles, chart_positions, chart_rounds

CANDLES_LIMIT_MAX: Final = 1_000
LEADERBOARD_SIZE: Final = 20

GameId = Annotated[str, PathParameter(min_length=1, max_length=32)]
RoundNo = Annotated[int, PathParameter(ge=1, le=2**62)]
PositionId = Annotated[int, PathParameter(ge=1, le=2**62)]


class PositionOpen(RequestBody):
    game: Annotated[str, Meta(min_length=1, max_length=32)]
    side: Literal["long", "short"]
    stake: AmountText
    leverage: Annotated[int, Meta(ge=1, le=1_000)]


class PositionsOut(ResponseBody):
    positions: list[PositionOut]
    next_cursor: str | None = None


class RoundOut(ResponseBody):
    game: str
    round: int
    status: str
    start_ms: int
    beacon_round: int
    chain_id: int
    candles: int
    seed: str | None = None
    # With a chain adapter: the transaction that drew the round's on-chain seed.
    onchain_txn: str | None = None


class RoundsOut(ResponseBody):
    rounds: list[RoundOut]
    next_cursor: str | None = None


class CandleOut(ResponseBody):
    i: int
    o: str
    h: str
    l: str  # noqa: E741 - the candle field's usual name
    c: str
    v: int
    t: int


class CandlesOut(ResponseBody):
    candles: list[CandleOut]
    next_cursor: str | None = None


class GameOut(ResponseBody):
    game: str
    name: str
    asset: str
    candle_interval_ms: int
    candles_per_round: int
    max_leverage: int
    stake_min: str
    stake_max: str
    fee_bps: int
    model: dict[str, int]
    beacon_genesis_s: int
    beacon_period_s: int
    # Return to player by simulation (fees included), per leverage.
    rtp_percent_by_leverage: dict[str, str]
    # The simulation's standard error per leverage, in percentage points (the true RTP is within
    # about two of them of the figure above).
    rtp_standard_error_by_leverage: dict[str, str]
    rtp_simulated_positions: int  # per leverage (each path played long and short)


class LeaderOut(ResponseBody):
    owner: str
    positions: int
    staked: str
    result: str  # payout - stake - fee


RTP_ROUNDS: Final = 200


@dataclass
class _Kept:
    """What the chart game's routes compute once per process (per Services)."""

    rtp: dict[str, tuple[GameConfig, RtpEstimate]] = field(default_factory=dict)
    rtp_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    beacon_public_key: bytes | None = None


_KEPT: weakref.WeakKeyDictionary[Services, _Kept] = weakref.WeakKeyDictionary()


def _kept(svc: Services) -> _Kept:
    found = _KEPT.get(svc)
    if found is None:
        found = _KEPT[svc] = _Kept()
    return found


async def games_in_force(svc: Services) -> dict[str, GameConfig]:
    """The games of the rules in force: the engine's (from the log, decision 023), never this
    module's defaults."""
    return {g.game: g for g in (await svc.balances.rules(CHARTGAME, ChartgameConfig)).games}


async def rtp_estimates(svc: Services, games: dict[str, GameConfig]) -> dict[str, RtpEstimate]:
    """Each game's return to player, simulated on first use (off the event loop) and kept while
    the game's configuration stays the same."""
    kept = _kept(svc)
    cache = kept.rtp
    async with kept.rtp_lock:
        for g in games.values():
            if g.game not in cache or cache[g.game][0] != g:
                cache[g.game] = (g, await asyncio.to_thread(simulate_rtp, g, RTP_ROUNDS))
    return {name: cache[name][1] for name in games}


async def game_of(svc: Services, game: str) -> GameConfig:
    found = (await games_in_force(svc)).get(game)
    if found is None:
        raise ApiError(404, "unknown_game", f"no game {game!r}")
    return found


def round_out(r: Any) -> RoundOut:
    return RoundOut(
        game=r.game,
        round=r.round_no,
        status=r.status,
        start_ms=r.start_ms,
        beacon_round=r.beacon_round,
        chain_id=r.chain_id,
        candles=r.candles,
        seed=r.seed,
        onchain_txn=None if r.onchain is None else msgspec.json.decode(r.onchain, type=OnchainDraw).txn_hash,
    )


def beacon_public_key(request: Request[Any, Any, Any]) -> bytes:
    """The key the deployment's beacons verify with (quicknet's, or the local beacon's)."""
    from cashmarkets.runtime.chart_setup import beacon_public_key as configured_key

    svc = services(request)
    kept = _kept(svc)
    if kept.beacon_public_key is None:
        kept.beacon_public_key = configured_key(svc.settings)
    return kept.beacon_public_key


class ChartgameController(Controller):
    path = "/api/v1/chartgame"
    tags = ["chartgame"]

    @get("/games")
    async def games(self, request: Request[Any, Any, Any]) -> list[GameOut]:
        """Every game's configuration: the model parameters, limits, the fee (the house edge) and
        the return to player by simulation."""
        out = []
        svc = services(request)
        in_force = await games_in_force(svc)
        estimates = await rtp_estimates(svc, in_force)
        for g in in_force.values():
            money = ASSETS[g.asset].decimals
            rtp = estimates[g.game]
            out.append(
                GameOut(
                    game=g.game,
                    name=g.name,
                    asset=g.asset,
                    candle_interval_ms=g.candle_interval_ms,
                    candles_per_round=g.candles_per_round,
                    max_leverage=g.max_leverage,
                    stake_min=format_amount(g.stake_min, money),
                    stake_max=format_amount(g.stake_max, money),
                    fee_bps=g.fee_bps,
                    model=chart_queries.model_json(g.model),
                    beacon_genesis_s=g.beacon_genesis_s,
                    beacon_period_s=g.beacon_period_s,
                    rtp_percent_by_leverage=rtp.percent(),
                    rtp_standard_error_by_leverage=rtp.error_percent(),
                    rtp_simulated_positions=rtp.positions,
                )
            )
        return out

    @get("/games/{game:str}/rounds")
    async def rounds(
        self,
        request: Request[Any, Any, Any],
        game: GameId,
        status: Annotated[Literal["announced", "open", "settled"] | None, QueryParameter()] = None,
        cursor: Annotated[str | None, QueryParameter(max_length=64)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=queries.PAGE_LIMIT_MAX)] = 50,
    ) -> RoundsOut:
        """Rounds newest first (the current one, then history); pass `nextCursor` back as `cursor`."""
        await game_of(services(request), game)
        r = chart_rounds.c
        q = select(chart_rounds).where(r.game == game)
        if status:
            q = q.where(r.status == status)
        before = decode_cursor(cursor)
        if before is not None:
            q = q.where(r.round_no < before)
        async with services(request).db.connect() as conn:
            rows = (await conn.execute(q.order_by(r.round_no.desc()).limit(limit + 1))).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return RoundsOut(
            rounds=[round_out(x) for x in rows],
            next_cursor=encode_cursor(rows[-1].round_no if more and rows else None),
        )

    @get("/rounds/{game:str}/{round_no:int}")
    async def round(self, request: Request[Any, Any, Any], game: GameId, round_no: RoundNo) -> RoundOut:
        return round_out(await _round_row(request, game, round_no))

    @get("/rounds/{game:str}/{round_no:int}/candles")
    async def candles(
        self,
        request: Request[Any, Any, Any],
        game: GameId,
        round_no: RoundNo,
        cursor: Annotated[str | None, QueryParameter(max_length=64)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=CANDLES_LIMIT_MAX)] = 500,
    ) -> CandlesOut:
        """The round's candles in order; pass `nextCursor` back as `cursor` for the next page."""
        g = await game_of(services(request), game)
        c = chart_candles.c
        after = decode_cursor(cursor)
        q = select(chart_candles).where(c.game == game, c.round_no == round_no)
        if after is not None:
            q = q.where(c.idx > after)
        async with services(request).db.connect() as conn:
            rows = (await conn.execute(q.order_by(c.idx).limit(limit + 1))).all()
        more = len(rows) > limit
        rows = rows[:limit]
        d = g.model.price_decimals
        return CandlesOut(
            candles=[
                CandleOut(
                    i=x.idx,
                    o=format_amount(x.open, d),
                    h=format_amount(x.high, d),
                    l=format_amount(x.low, d),
                    c=format_amount(x.close, d),
                    v=x.volume,
                    t=x.ts_ms,
                )
                for x in rows
            ],
            next_cursor=encode_cursor(rows[-1].idx if more and rows else None),
        )

    @get("/rounds/{game:str}/{round_no:int}/verify")
    async def verify(
        self, request: Request[Any, Any, Any], game: GameId, round_no: RoundNo
    ) -> dict[str, Any]:
        """Every input of a settled round and its candles: save it and run
        `tools/verify_round.py` on it (docs/fairness.md)."""
        g = await game_of(services(request), game)
        row = await _round_row(request, game, round_no)
        if row.status != "settled" or row.seed is None:
            raise ApiError(409, "round_not_settled", "the seed is revealed when the round settles")
        doc = await chart_queries.verification(services(request).db, g, round_no, beacon_public_key(request))
        assert doc is not None
        return doc

    @get("/rounds/{game:str}/{round_no:int}/leaderboard")
    async def leaderboard(
        self, request: Request[Any, Any, Any], game: GameId, round_no: RoundNo
    ) -> list[LeaderOut]:
        """The round's players by result (payout - stake - fee), best first."""
        g = await game_of(services(request), game)
        money = ASSETS[g.asset].decimals
        p = chart_positions.c
        async with services(request).db.connect() as conn:
            rows = (
                await conn.execute(
                    select(p.owner, p.stake, p.fee, p.payout, p.status).where(
                        p.game == game, p.round_no == round_no
                    )
                )
            ).all()
        totals: dict[str, list[int]] = {}
        for r in rows:
            t = totals.setdefault(r.owner, [0, 0, 0])
            t[0] += 1
            t[1] += r.stake
            t[2] += (r.payout if r.status != "open" else r.stake) - r.stake - r.fee
        best = sorted(totals.items(), key=lambda kv: (-kv[1][2], kv[0]))[:LEADERBOARD_SIZE]
        return [
            LeaderOut(
                owner=owner,
                positions=n,
                staked=format_amount(staked, money),
                result=format_amount(result, money),
            )
            for owner, (n, staked, result) in best
        ]

    @get("/positions", dependencies={"user": current_user})
    async def my_positions(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[AuthUser],
        cursor: Annotated[str | None, QueryParameter(max_length=64)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=queries.PAGE_LIMIT_MAX)] = 50,
    ) -> PositionsOut:
        """The caller's positions, newest first (from the store: may lag the engine by a batch)."""
        p = chart_positions.c
        q = select(chart_positions).where(p.owner == user.id)
        before = decode_cursor(cursor)
        if before is not None:
            q = q.where(p.position_id < before)
        async with services(request).db.connect() as conn:
            rows = (await conn.execute(q.order_by(p.position_id.desc()).limit(limit + 1))).all()
        more = len(rows) > limit
        rows = rows[:limit]
        in_force = await games_in_force(services(request))
        return PositionsOut(
            positions=[position_out(r, in_force[r.game]) for r in rows],
            next_cursor=encode_cursor(rows[-1].position_id if more and rows else None),
        )

    @post("/positions", status_code=200, dependencies={"user": current_user})
    async def open_position(
        self, request: Request[Any, Any, Any], user: NamedDependency[AuthUser], data: JSONBody[PositionOpen]
    ) -> PositionOut:
        """Open long or short at the current candle's close; the stake (and the fee) leave the
        balance at once."""
        await strict_body(request, PositionOpen)
        return await open_chart_position(services(request), user.id, data, command_id(request, user.id))

    @post("/positions/{position_id:int}/close", status_code=200, dependencies={"user": current_user})
    async def close_position(
        self, request: Request[Any, Any, Any], user: NamedDependency[AuthUser], position_id: PositionId
    ) -> PositionOut:
        """Close at the current candle's close; closing twice (or someone else's) is 404."""
        return await close_chart_position(
            services(request), user.id, position_id, command_id(request, user.id)
        )


async def open_chart_position(svc: Services, user_id: str, data: PositionOpen, cid: str) -> PositionOut:
    """Validate and submit an open (HTTP and the WebSocket OPEN_POSITION with a `game`)."""
    in_force = await games_in_force(svc)
    g = in_force.get(data.game)
    if g is None:
        raise ApiError(404, "unknown_game", f"no game {data.game!r}")
    stake = parse_money(svc.asset(g.asset), data.stake, "stake")
    result = await svc.execute(
        ChartOpenPosition(
            command_id=cid, owner=user_id, game=g.game, side=data.side, stake=stake, leverage=data.leverage
        )
    )
    view = result_data(result, ChartPositionView)
    return position_out(view, in_force[view.game])


async def close_chart_position(svc: Services, user_id: str, position_id: int, cid: str) -> PositionOut:
    """Submit a close (HTTP and the WebSocket CLOSE_POSITION with a `positionId`)."""
    result = await svc.execute(ChartClosePosition(command_id=cid, owner=user_id, position_id=position_id))
    view = result_data(result, ChartPositionView)
    return position_out(view, (await games_in_force(svc))[view.game])


async def _round_row(request: Request[Any, Any, Any], game: str, round_no: int) -> Any:
    await game_of(services(request), game)
    async with services(request).db.connect() as conn:
        row = (
            await conn.execute(
                select(chart_rounds).where(chart_rounds.c.game == game, chart_rounds.c.round_no == round_no)
            )
        ).first()
    if row is None:
        raise ApiError(404, "round_not_found", f"no round {round_no} of {game}")
    return row
