"""Product `leverage` over HTTP, in the shape the trading spec's clients use.

`margin` and the balance are integers in USD cents (as those clients send them); prices are
decimal strings; `slippage` is in basis points (100 = 1 %). Inside the engine margin is USDC minor
units (1 cent = 10,000 minor units).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter
from msgspec import Meta

from cashmarkets.api.accounts import decode_cursor, encode_cursor
from cashmarkets.api.common import strict_body
from cashmarkets.api.errors import ApiError
from cashmarkets.api.schemas import Request as RequestBody
from cashmarkets.api.schemas import Response as ResponseBody
from cashmarkets.api.security import AuthUser, current_user
from cashmarkets.api.services import Services, command_id, result_data, services
from cashmarkets.core.money import AmountError, format_amount, parse_amount
from cashmarkets.core.products.leverage import PRODUCT as LEVERAGE
from cashmarkets.core.products.leverage import (
    ClosePosition,
    LeverageConfig,
    MarketConfig,
    OpenPosition,
    PositionClosedView,
    PositionView,
)
from cashmarkets.products.leverage.views import MINOR_PER_CENT, Trade, TradeClosed, closed_view, trade_view
from cashmarkets.store import queries

Cents = Annotated[int, Meta(gt=0, le=100_000_000, description="USD cents")]


class TradeCreate(RequestBody):
    # One of the markets in force (the engine's rules, decision 023): checked in open_trade.
    asset: Annotated[str, Meta(max_length=16)]
    type: Literal["long", "short"]
    margin: Cents
    leverage: Annotated[int, Meta(ge=1, le=100)]
    slippage: Annotated[int, Meta(ge=0, le=1_000, description="basis points")] = 100
    price: Annotated[str, Meta(max_length=32)] | None = None
    take_profit: Annotated[str, Meta(max_length=32)] | None = None
    stop_loss: Annotated[str, Meta(max_length=32)] | None = None


class TradeClose(RequestBody):
    order_id: Annotated[int, Meta(ge=1, le=2**63 - 1)]


class Trades(ResponseBody):
    trades: list[Trade]
    next_cursor: str | None = None


class UsdBalance(ResponseBody):
    balance: int  # cents


class AssetInfo(ResponseBody):
    symbol: str
    name: str
    decimals: int
    max_leverage: int
    maintenance_margin_bps: int


class SupportedAssets(ResponseBody):
    assets: list[AssetInfo]


class PriceView(ResponseBody):
    symbol: str
    bid: str
    ask: str
    exchange_ts_us: int
    update_id: int
    # Since the engine received it; over the engine's limit trading on it is refused (stale_price).
    age_ms: int
    stale: bool


class Prices(ResponseBody):
    prices: list[PriceView]


def _price(market: MarketConfig, value: int) -> str:
    return format_amount(value, market.price_decimals)


def _parse_price(market: MarketConfig, text: str | None, field: str) -> int:
    if text is None:
        return 0
    try:
        return parse_amount(text, market.price_decimals, allow_zero=False, max_integer_digits=12)
    except AmountError as exc:
        raise ApiError(
            400, "invalid_price", f"{field}: {exc.detail}", errors=[{"field": field, "message": exc.code}]
        ) from None


async def rules(svc: Services) -> LeverageConfig:
    """The leverage rules in force: the engine's (from the log), never this module's defaults."""
    return await svc.balances.rules(LEVERAGE, LeverageConfig)


async def markets(svc: Services) -> dict[str, MarketConfig]:
    return {m.symbol: m for m in (await rules(svc)).markets}


async def open_trade(svc: Services, user_id: str, data: TradeCreate, cid: str) -> Trade:
    """Validate and submit an open (HTTP `trade/create` and the WebSocket OPEN_POSITION)."""
    in_force = await markets(svc)
    market = in_force.get(data.asset)
    if market is None:
        # Word for word what the schema's fixed list of symbols answered (clients parse it).
        errors = [{"field": "asset", "message": f"Invalid enum value {data.asset!r}"}]
        detail = "Validation failed for POST /api/v1/trade/create"
        raise ApiError(400, "validation_failed", detail, errors=errors)
    if data.leverage > market.max_leverage:
        raise ApiError(400, "bad_leverage", f"1..{market.max_leverage} for {data.asset}")
    cmd = OpenPosition(
        command_id=cid,
        owner=user_id,
        symbol=data.asset,
        side=data.type,
        margin=data.margin * MINOR_PER_CENT,
        leverage=data.leverage,
        slippage_bps=data.slippage,
        expected_price=_parse_price(market, data.price, "price"),
        take_profit=_parse_price(market, data.take_profit, "takeProfit"),
        stop_loss=_parse_price(market, data.stop_loss, "stopLoss"),
    )
    result = await svc.execute(cmd)
    view = result_data(result, PositionView)
    return trade_view(view, in_force[view.symbol])


async def close_trade(svc: Services, user_id: str, data: TradeClose, cid: str) -> TradeClosed:
    """Submit a close (HTTP `trade/close` and the WebSocket CLOSE_POSITION)."""
    result = await svc.execute(ClosePosition(command_id=cid, owner=user_id, position_id=data.order_id))
    closed = result_data(result, PositionClosedView)
    market = (await markets(svc))[closed.symbol]
    return closed_view(
        closed.position_id, closed.reason, closed.exit_price, closed.pnl, closed.payout, market
    )


class LeverageController(Controller):
    path = "/api/v1"
    tags = ["leverage"]

    @post("/trade/create", status_code=200, dependencies={"user": current_user})
    async def create(
        self, request: Request[Any, Any, Any], user: NamedDependency[AuthUser], data: JSONBody[TradeCreate]
    ) -> Trade:
        """Open a long (fills at the ask) or short (fills at the bid) with `margin` cents held."""
        await strict_body(request, TradeCreate)
        return await open_trade(services(request), user.id, data, command_id(request, user.id))

    @post("/trade/close", status_code=200, dependencies={"user": current_user})
    async def close(
        self, request: Request[Any, Any, Any], user: NamedDependency[AuthUser], data: JSONBody[TradeClose]
    ) -> TradeClosed:
        """Close at the bid (long) or the ask (short); closing twice is 404 position_not_found."""
        await strict_body(request, TradeClose)
        return await close_trade(services(request), user.id, data, command_id(request, user.id))

    @get("/trades/open", dependencies={"user": current_user})
    async def open_trades(self, request: Request[Any, Any, Any], user: NamedDependency[AuthUser]) -> Trades:
        svc = services(request)
        in_force = await markets(svc)
        return Trades(
            trades=[trade_view(p, in_force[p.symbol]) for p in await svc.balances.open_positions(user.id)]
        )

    @get("/trades", dependencies={"user": current_user})
    async def closed_trades(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[AuthUser],
        status: Annotated[Literal["open", "closed"], QueryParameter()] = "closed",
        cursor: Annotated[str | None, QueryParameter(max_length=64)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=queries.PAGE_LIMIT_MAX)] = 50,
    ) -> Trades:
        """Closed trades from the store, newest first (`status=open` is the same as /trades/open)."""
        svc = services(request)
        in_force = await markets(svc)
        if status == "open":
            positions = await svc.balances.open_positions(user.id)
            return Trades(trades=[trade_view(p, in_force[p.symbol]) for p in positions])
        rows, next_id = await queries.closed_positions_page(
            svc.db, user.id, before_id=decode_cursor(cursor), limit=limit
        )
        trades = []
        for r in rows:
            market = in_force[r.symbol]
            view = trade_view(queries.position_view(r), market)
            trades.append(
                msgspec.structs.replace(
                    view,
                    status="closed",
                    close_price=_price(market, r.exit_price),
                    close_reason=r.close_reason,
                    pnl=r.pnl // MINOR_PER_CENT,
                    closed_at_ns=r.closed_ts_ns,
                )
            )
        return Trades(trades=trades, next_cursor=encode_cursor(next_id))

    @get("/balance/usd", dependencies={"user": current_user})
    async def usd_balance(
        self, request: Request[Any, Any, Any], user: NamedDependency[AuthUser]
    ) -> UsdBalance:
        """The USDC balance in cents (floored), as the trading clients expect."""
        for acc in await services(request).balances.accounts_of(user.id):
            if acc.asset == "USDC":
                return UsdBalance(balance=acc.balance // MINOR_PER_CENT)
        return UsdBalance(balance=0)

    @get("/supportedAssets")
    async def supported_assets(self, request: Request[Any, Any, Any]) -> SupportedAssets:
        return SupportedAssets(
            assets=[
                AssetInfo(
                    symbol=m.symbol,
                    name=m.name,
                    decimals=m.price_decimals,
                    max_leverage=m.max_leverage,
                    maintenance_margin_bps=m.mmr_bps,
                )
                for m in (await rules(services(request))).markets
            ]
        )

    @get("/prices")
    async def prices(self, request: Request[Any, Any, Any]) -> Prices:
        """The latest bid/ask per market (the prices trades execute at)."""
        out = []
        now_ns = time.time_ns()
        svc = services(request)
        in_force = await rules(svc)
        in_markets = {m.symbol: m for m in in_force.markets}
        for p in await svc.balances.prices():
            market = in_markets.get(p.symbol)
            if market is not None:
                out.append(
                    PriceView(
                        symbol=p.symbol,
                        bid=_price(market, p.bid),
                        ask=_price(market, p.ask),
                        exchange_ts_us=p.exchange_ts_us,
                        update_id=p.update_id,
                        age_ms=max(0, now_ns - p.received_ts_ns) // 1_000_000,
                        stale=now_ns - p.received_ts_ns > in_force.stale_after_ns,
                    )
                )
        return Prices(prices=out)
