"""Product `spot` over HTTP: `/api/v1/spot/...` (the platform's own shape; `binance.py` serves the
Binance-compatible subset from the same helpers).

Prices and quantities are decimal strings: a price in the quote asset per whole base unit, on the
market's tick; a quantity in the base asset, on its lot. Reads of open orders and the book come
from the engine (embedded) or the projection (distributed); history, trades, candles and the
24 h ticker from the projection, which may lag the engine by one batch.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final, Literal

from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter, QueryParameter
from msgspec import Meta

from cashmarkets.api.accounts import decode_cursor, encode_cursor
from cashmarkets.api.common import strict_body
from cashmarkets.api.errors import ApiError
from cashmarkets.api.schemas import AmountText
from cashmarkets.api.schemas import Request as RequestBody
from cashmarkets.api.schemas import Response as ResponseBody
from cashmarkets.api.security import AuthUser, current_user
from cashmarkets.api.services import Services, command_id, result_data, services
from cashmarkets.core.money import AmountError, Market, format_amount, parse_amount
from cashmarkets.core.products.spot import (
    AmendOrder,
    CancelAllOrders,
    CancelOrder,
    OrderPlaced,
    OrdersCanceled,
    OrderView,
    PlaceOrder,
    SpotConfig,
    SpotMarket,
    SpotTrade,
)
from cashmarkets.core.products.spot.book import DAY_MS
from cashmarkets.core.products.spot.marketdata import INTERVALS_MS, change_percent
from cashmarkets.products.spot.views import OrderOut
from cashmarkets.products.spot.views import order_out as order_view
from cashmarkets.store import queries, spot_queries

SPOT: Final = "spot"
DEPTH_LIMIT_MAX: Final = 5_000
TRADES_LIMIT_MAX: Final = 1_000
KLINES_LIMIT_MAX: Final = 1_000

OrderId = Annotated[int, PathParameter(ge=1, le=2**63 - 1)]
MarketSymbol = Annotated[str, Meta(min_length=1, max_length=16, pattern=r"^[A-Z0-9_]+$")]
ClientOrderId = Annotated[str, Meta(min_length=1, max_length=36, pattern=r"^[\.A-Za-z0-9:/_-]+$")]
Side = Literal["BUY", "SELL"]
OrderType = Literal["LIMIT", "MARKET", "LIMIT_MAKER"]
TimeInForce = Literal["GTC", "IOC", "FOK"]
StpMode = Literal["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"]


class OrderCreate(RequestBody):
    market: MarketSymbol
    side: Side
    type: OrderType = "LIMIT"
    time_in_force: TimeInForce = "GTC"
    price: AmountText | None = None  # LIMIT / LIMIT_MAKER; MARKET: optional protection price
    quantity: AmountText | None = None
    quote_order_qty: AmountText | None = None  # MARKET only
    stp_mode: StpMode = "EXPIRE_MAKER"
    client_order_id: ClientOrderId | None = None


class OrderAmend(RequestBody):
    price: AmountText | None = None
    quantity: AmountText | None = None  # the new total quantity


class FillOut(ResponseBody):
    trade_id: int
    price: str
    qty: str
    quote_qty: str
    fee: str
    fee_asset: str


class OrderResult(ResponseBody):
    order: OrderOut
    fills: list[FillOut]


class OrdersOut(ResponseBody):
    orders: list[OrderOut]
    next_cursor: str | None = None


class MarketInfo(ResponseBody):
    symbol: str
    status: str
    base_asset: str
    quote_asset: str
    base_decimals: int
    quote_decimals: int
    tick_size: str
    lot_size: str
    min_qty: str
    max_qty: str
    max_price: str
    min_notional: str
    maker_fee_bps: int
    taker_fee_bps: int
    order_types: list[str]
    time_in_force: list[str]
    stp_modes: list[str]


class ExchangeInfo(ResponseBody):
    markets: list[MarketInfo]


class DepthOut(ResponseBody):
    last_update_id: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]


class TradeOut(ResponseBody):
    id: int
    price: str
    qty: str
    quote_qty: str
    time_ns: int
    is_buyer_maker: bool


class MyTradeOut(ResponseBody):
    id: int
    order_id: int
    price: str
    qty: str
    quote_qty: str
    fee: str
    fee_asset: str
    time_ns: int
    is_buyer: bool
    is_maker: bool


class MyTradesOut(ResponseBody):
    trades: list[MyTradeOut]
    next_cursor: str | None = None


class TickerOut(ResponseBody):
    market: str
    open_price: str
    high_price: str
    low_price: str
    last_price: str
    price_change: str
    price_change_percent: str
    volume: str
    quote_volume: str
    count: int
    open_time_ms: int
    close_time_ms: int


class BookTickerOut(ResponseBody):
    market: str
    bid_price: str | None
    bid_qty: str | None
    ask_price: str | None
    ask_qty: str | None
    update_id: int


# ---- parsing and views (shared with the Binance routes) --------------------------------------------


@functools.lru_cache(maxsize=8)
def _markets_of(config: SpotConfig) -> Mapping[str, SpotMarket]:
    return {m.symbol: m for m in config.markets}


@functools.lru_cache(maxsize=64)
def units_of(m: SpotMarket) -> Market:
    """The market's tick and lot arithmetic (cached: markets are frozen)."""
    return m.units()


async def spot_markets(svc: Services) -> Mapping[str, SpotMarket]:
    """The spot markets in force: the rules the log pins (decision 023), by symbol."""
    return _markets_of(await svc.balances.rules(SPOT, SpotConfig))


def market_of(markets: Mapping[str, SpotMarket], symbol: str) -> SpotMarket:
    found = markets.get(symbol)
    if found is None:
        raise ApiError(
            400,
            "unknown_market",
            f"unknown market {symbol!r}",
            errors=[{"field": "market", "message": "unknown"}],
        )
    return found


def parse_price(units: Market, text: str, field: str = "price") -> int:
    return _parsed(units.parse_price, text, field, "invalid_price")


def parse_qty(units: Market, text: str, field: str = "quantity") -> int:
    return _parsed(units.parse_qty, text, field, "invalid_quantity")


def parse_quote(market: SpotMarket, text: str, field: str = "quoteOrderQty") -> int:
    return _parsed(
        lambda t: parse_amount(t, market.quote_decimals, allow_zero=False, max_integer_digits=15),
        text,
        field,
        "invalid_quantity",
    )


def _parsed(parse: Callable[[str], int], text: str, field: str, code: str) -> int:
    """A decimal string through `parse`; a clear 400 naming the field if it is not one."""
    try:
        return parse(text)
    except AmountError as exc:
        raise ApiError(
            400, code, f"{field}: {exc.detail}", errors=[{"field": field, "message": exc.code}]
        ) from None


def place_command(
    owner: str,
    cid: str,
    market: SpotMarket,
    side: str,
    order_type: str,
    tif: str,
    price: str | None,
    quantity: str | None,
    quote_order_qty: str | None,
    stp: str,
    client_order_id: str | None,
) -> PlaceOrder:
    """A PlaceOrder from decimal strings, with a clear 400 for each missing or malformed part."""
    units = units_of(market)
    if order_type != "MARKET" and price is None:
        raise ApiError(400, "missing_price", f"a {order_type} order needs a price")
    if quote_order_qty is not None and order_type != "MARKET":
        raise ApiError(400, "invalid_quantity", "quoteOrderQty is for MARKET orders")
    if (quantity is None) == (quote_order_qty is None) and order_type == "MARKET":
        raise ApiError(
            400, "invalid_quantity", "a MARKET order has exactly one of quantity and quoteOrderQty"
        )
    if quantity is None and order_type != "MARKET":
        raise ApiError(400, "invalid_quantity", "quantity is required")
    return PlaceOrder(
        command_id=cid,
        owner=owner,
        market=market.symbol,
        side=side,
        order_type=order_type,
        tif=tif,
        price_ticks=parse_price(units, price) if price is not None else 0,
        qty_lots=parse_qty(units, quantity) if quantity is not None else 0,
        quote_qty=parse_quote(market, quote_order_qty) if quote_order_qty is not None else 0,
        stp=stp,
        client_order_id=client_order_id or "",
    )


def order_out(o: OrderView, markets: Mapping[str, SpotMarket]) -> OrderOut:
    return order_view(o, markets[o.market])


def fill_out(t: SpotTrade, side: str, markets: Mapping[str, SpotMarket]) -> FillOut:
    """A fill from the placing (taker) order's side: its fee, in the asset it received."""
    market = markets[t.market]
    units = units_of(market)
    fee, fee_asset = market.fee_text(side == "BUY", t.buyer_fee, t.seller_fee)
    return FillOut(
        trade_id=t.trade_id,
        price=units.format_price(t.price_ticks),
        qty=units.format_qty(t.qty_lots),
        quote_qty=format_amount(t.quote_amount, market.quote_decimals),
        fee=fee,
        fee_asset=fee_asset,
    )


def placed_out(placed: OrderPlaced, markets: Mapping[str, SpotMarket]) -> OrderResult:
    return OrderResult(
        order=order_out(placed.order, markets),
        fills=[fill_out(t, placed.order.side, markets) for t in placed.trades],
    )


def market_info(m: SpotMarket) -> MarketInfo:
    units = units_of(m)
    return MarketInfo(
        symbol=m.symbol,
        status="TRADING",
        base_asset=m.base,
        quote_asset=m.quote,
        base_decimals=m.base_decimals,
        quote_decimals=m.quote_decimals,
        tick_size=units.format_price(1),
        lot_size=units.format_qty(1),
        min_qty=units.format_qty(m.min_qty_lots),
        max_qty=units.format_qty(m.max_qty_lots),
        max_price=units.format_price(m.max_price_ticks),
        min_notional=format_amount(m.min_notional, m.quote_decimals),
        maker_fee_bps=m.maker_fee_bps,
        taker_fee_bps=m.taker_fee_bps,
        order_types=["LIMIT", "MARKET", "LIMIT_MAKER"],
        time_in_force=["GTC", "IOC", "FOK"],
        stp_modes=["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    )


async def find_order(
    svc: Services, owner: str, market: str | None, order_id: int | None, client_id: str | None
) -> OrderView:
    """An order of `owner`: open ones from the live view, closed ones from the store."""
    found: OrderView | None = None
    if order_id is not None:
        found = await svc.balances.open_order(order_id) or await spot_queries.order(svc.db, order_id)
    elif client_id:
        for o in await svc.balances.open_orders(owner, market):
            if o.client_order_id == client_id:
                found = o
        found = found or await spot_queries.order_by_client_id(svc.db, owner, client_id)
    if found is None or found.owner != owner or (market is not None and found.market != market):
        raise ApiError(404, "order_not_found", "no such order")
    return found


async def ticker_of(svc: Services, market: SpotMarket) -> TickerOut:
    now_ms = time.time_ns() // 1_000_000
    symbol = market.symbol
    t = await spot_queries.ticker_24h(svc.db, symbol, now_ms)
    units = units_of(market)
    if t is None:
        zero = units.format_price(0)
        return TickerOut(
            market=symbol,
            open_price=zero,
            high_price=zero,
            low_price=zero,
            last_price=zero,
            price_change=zero,
            price_change_percent="0.00",
            volume=units.format_qty(0),
            quote_volume=format_amount(0, market.quote_decimals),
            count=0,
            open_time_ms=now_ms - DAY_MS,
            close_time_ms=now_ms,
        )
    change = t.last_ticks - t.open_ticks
    pct = change_percent(t.open_ticks, t.last_ticks)
    return TickerOut(
        market=symbol,
        open_price=units.format_price(t.open_ticks),
        high_price=units.format_price(t.high_ticks),
        low_price=units.format_price(t.low_ticks),
        last_price=units.format_price(t.last_ticks),
        price_change=("-" if change < 0 else "") + units.format_price(abs(change)),
        price_change_percent=pct,
        volume=units.format_qty(t.volume_lots),
        quote_volume=format_amount(t.quote_volume, market.quote_decimals),
        count=t.trades,
        open_time_ms=t.open_time_ms,
        close_time_ms=t.close_time_ms,
    )


class SpotController(Controller):
    path = "/api/v1/spot"
    tags = ["spot"]

    # ---- market data (public) ----

    @get("/exchangeInfo")
    async def exchange_info(self, request: Request[Any, Any, Any]) -> ExchangeInfo:
        markets = await spot_markets(services(request))
        return ExchangeInfo(markets=[market_info(m) for m in markets.values()])

    @get("/depth")
    async def depth(
        self,
        request: Request[Any, Any, Any],
        market: Annotated[str, QueryParameter(max_length=16)],
        limit: Annotated[int, QueryParameter(ge=1, le=DEPTH_LIMIT_MAX)] = 100,
    ) -> DepthOut:
        """The book aggregated by price, best first; `lastUpdateId` lines up with the
        `depth.<market>` stream's update ids."""
        m = market_of(await spot_markets(services(request)), market)
        units = units_of(m)
        update_id, bids, asks = await services(request).balances.depth(m.symbol, limit)
        return DepthOut(
            last_update_id=update_id,
            bids=[(units.format_price(p), units.format_qty(q)) for p, q in bids],
            asks=[(units.format_price(p), units.format_qty(q)) for p, q in asks],
        )

    @get("/ticker/bookTicker")
    async def book_ticker(
        self, request: Request[Any, Any, Any], market: Annotated[str, QueryParameter(max_length=16)]
    ) -> BookTickerOut:
        m = market_of(await spot_markets(services(request)), market)
        units = units_of(m)
        update_id, bids, asks = await services(request).balances.depth(m.symbol, 1)
        return BookTickerOut(
            market=m.symbol,
            bid_price=units.format_price(bids[0][0]) if bids else None,
            bid_qty=units.format_qty(bids[0][1]) if bids else None,
            ask_price=units.format_price(asks[0][0]) if asks else None,
            ask_qty=units.format_qty(asks[0][1]) if asks else None,
            update_id=update_id,
        )

    @get("/trades")
    async def trades(
        self,
        request: Request[Any, Any, Any],
        market: Annotated[str, QueryParameter(max_length=16)],
        limit: Annotated[int, QueryParameter(ge=1, le=TRADES_LIMIT_MAX)] = 500,
    ) -> list[TradeOut]:
        m = market_of(await spot_markets(services(request)), market)
        units = units_of(m)
        rows = await spot_queries.recent_trades(services(request).db, m.symbol, limit)
        return [
            TradeOut(
                id=r.trade_id,
                price=units.format_price(r.price_ticks),
                qty=units.format_qty(r.qty_lots),
                quote_qty=format_amount(r.quote_amount, m.quote_decimals),
                time_ns=r.ts_ns,
                is_buyer_maker=r.taker_side == "SELL",
            )
            for r in rows
        ]

    @get("/klines")
    async def klines(
        self,
        request: Request[Any, Any, Any],
        market: Annotated[str, QueryParameter(max_length=16)],
        interval: Annotated[Literal["1m", "5m", "15m", "1h", "4h", "1d"], QueryParameter()],
        start_time: Annotated[int | None, QueryParameter(name="startTime", ge=0, le=2**53)] = None,
        end_time: Annotated[int | None, QueryParameter(name="endTime", ge=0, le=2**53)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=KLINES_LIMIT_MAX)] = 500,
    ) -> list[list[Any]]:
        """Binance's array layout: [openTime, open, high, low, close, volume, closeTime,
        quoteVolume, trades]; times in ms."""
        m = market_of(await spot_markets(services(request)), market)
        return kline_rows(
            await spot_queries.klines(services(request).db, m.symbol, interval, start_time, end_time, limit),
            m,
            interval,
        )

    @get("/ticker/24hr")
    async def ticker_24hr(
        self,
        request: Request[Any, Any, Any],
        market: Annotated[str | None, QueryParameter(max_length=16)] = None,
    ) -> list[TickerOut]:
        """The rolling 24 h statistics (by the minute), one market or all."""
        svc = services(request)
        markets = await spot_markets(svc)
        chosen = [market_of(markets, market)] if market else list(markets.values())
        return [await ticker_of(svc, m) for m in chosen]

    # ---- orders (signed-in users) ----

    @post("/orders", status_code=200, dependencies={"user": current_user})
    async def place(
        self, request: Request[Any, Any, Any], user: NamedDependency[AuthUser], data: JSONBody[OrderCreate]
    ) -> OrderResult:
        """Place an order; the answer has the order as it stands and its fills."""
        await strict_body(request, OrderCreate)
        m = market_of(await spot_markets(services(request)), data.market)
        cmd = place_command(
            user.id,
            command_id(request, user.id),
            m,
            data.side,
            data.type,
            data.time_in_force,
            data.price,
            data.quantity,
            data.quote_order_qty,
            data.stp_mode,
            data.client_order_id,
        )
        svc = services(request)
        result = await svc.execute(cmd)
        return placed_out(result_data(result, OrderPlaced), await spot_markets(svc))

    @get("/orders/{order_id:int}", dependencies={"user": current_user})
    async def get_order(
        self, request: Request[Any, Any, Any], user: NamedDependency[AuthUser], order_id: OrderId
    ) -> OrderOut:
        svc = services(request)
        return order_out(await find_order(svc, user.id, None, order_id, None), await spot_markets(svc))

    @delete("/orders/{order_id:int}", status_code=200, dependencies={"user": current_user})
    async def cancel(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[AuthUser],
        order_id: OrderId,
        market: Annotated[str, QueryParameter(max_length=16)],
    ) -> OrderOut:
        """Cancel an open order: its hold is released at once."""
        m = market_of(await spot_markets(services(request)), market)
        result = await services(request).execute(
            CancelOrder(
                command_id=command_id(request, user.id), owner=user.id, market=m.symbol, order_id=order_id
            )
        )
        return order_out(result_data(result, OrderView), {m.symbol: m})

    @post("/orders/{order_id:int}/amend", status_code=200, dependencies={"user": current_user})
    async def amend(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[AuthUser],
        order_id: OrderId,
        market: Annotated[str, QueryParameter(max_length=16)],
        data: JSONBody[OrderAmend],
    ) -> OrderResult:
        """New price and/or total quantity. A smaller quantity at the same price keeps the
        order's place in the queue; anything else sends it to the back (and it may trade)."""
        m = market_of(await spot_markets(services(request)), market)
        if data.price is None and data.quantity is None:
            raise ApiError(400, "nothing_to_amend", "give a price, a quantity or both")
        units = units_of(m)
        result = await services(request).execute(
            AmendOrder(
                command_id=command_id(request, user.id),
                owner=user.id,
                market=m.symbol,
                order_id=order_id,
                price_ticks=parse_price(units, data.price) if data.price is not None else 0,
                qty_lots=parse_qty(units, data.quantity) if data.quantity is not None else 0,
            )
        )
        return placed_out(result_data(result, OrderPlaced), {m.symbol: m})

    @get("/openOrders", dependencies={"user": current_user})
    async def open_orders(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[AuthUser],
        market: Annotated[str | None, QueryParameter(max_length=16)] = None,
    ) -> OrdersOut:
        svc = services(request)
        markets = await spot_markets(svc)
        symbol = market_of(markets, market).symbol if market else None
        return OrdersOut(
            orders=[order_out(o, markets) for o in await svc.balances.open_orders(user.id, symbol)]
        )

    @delete("/openOrders", status_code=200, dependencies={"user": current_user})
    async def cancel_all(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[AuthUser],
        market: Annotated[str, QueryParameter(max_length=16)],
    ) -> OrdersOut:
        m = market_of(await spot_markets(services(request)), market)
        result = await services(request).execute(
            CancelAllOrders(command_id=command_id(request, user.id), owner=user.id, market=m.symbol)
        )
        orders = result_data(result, OrdersCanceled).orders
        return OrdersOut(orders=[order_out(o, {m.symbol: m}) for o in orders])

    @get("/orders", dependencies={"user": current_user})
    async def history(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[AuthUser],
        market: Annotated[str | None, QueryParameter(max_length=16)] = None,
        cursor: Annotated[str | None, QueryParameter(max_length=64)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=queries.PAGE_LIMIT_MAX)] = 50,
    ) -> OrdersOut:
        """Every order of the caller, newest first; pass `nextCursor` back as `cursor`."""
        svc = services(request)
        markets = await spot_markets(svc)
        symbol = market_of(markets, market).symbol if market else None
        rows, next_id = await spot_queries.orders_page(svc.db, user.id, symbol, decode_cursor(cursor), limit)
        return OrdersOut(orders=[order_out(o, markets) for o in rows], next_cursor=encode_cursor(next_id))

    @get("/myTrades", dependencies={"user": current_user})
    async def my_trades(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[AuthUser],
        market: Annotated[str, QueryParameter(max_length=16)],
        cursor: Annotated[str | None, QueryParameter(max_length=64)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=queries.PAGE_LIMIT_MAX)] = 50,
    ) -> MyTradesOut:
        m = market_of(await spot_markets(services(request)), market)
        rows, next_id = await spot_queries.my_trades_page(
            services(request).db, user.id, m.symbol, decode_cursor(cursor), limit
        )
        return MyTradesOut(
            trades=[my_trade_out(r, user.id, m) for r in rows], next_cursor=encode_cursor(next_id)
        )


def my_trade_out(r: Any, owner: str, m: SpotMarket) -> MyTradeOut:
    """One trade from `owner`'s side, in market `m` (a self-trade cannot happen: STP expires it)."""
    units = units_of(m)
    taker = r.taker_owner == owner
    buyer = (r.taker_side == "BUY") == taker
    fee, fee_asset = m.fee_text(buyer, r.buyer_fee, r.seller_fee)
    return MyTradeOut(
        id=r.trade_id,
        order_id=r.taker_order_id if taker else r.maker_order_id,
        price=units.format_price(r.price_ticks),
        qty=units.format_qty(r.qty_lots),
        quote_qty=format_amount(r.quote_amount, m.quote_decimals),
        fee=fee,
        fee_asset=fee_asset,
        time_ns=r.ts_ns,
        is_buyer=buyer,
        is_maker=not taker,
    )


def kline_rows(rows: list[Any], m: SpotMarket, interval: str) -> list[list[Any]]:
    units = units_of(m)
    size = INTERVALS_MS[interval]
    return [
        [
            r.open_time_ms,
            units.format_price(r.open_ticks),
            units.format_price(r.high_ticks),
            units.format_price(r.low_ticks),
            units.format_price(r.close_ticks),
            units.format_qty(r.volume_lots),
            r.open_time_ms + size - 1,
            format_amount(r.quote_volume, m.quote_decimals),
            r.trades,
        ]
        for r in rows
    ]
