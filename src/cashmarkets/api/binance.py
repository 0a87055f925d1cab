"""A Binance-compatible subset under `/api/v3` (enough for ccxt's `binance` class), on the same
engine commands and reads as `/api/v1/spot`.

    public   ping, time, exchangeInfo, depth, trades, klines, ticker/24hr, ticker/bookTicker
    signed   order (POST, DELETE, GET), openOrders (GET, DELETE), myTrades, account

Symbols drop the underscore (`BTC_USDC` is `BTCUSDC`). Signed requests work as Binance's: the
`X-MBX-APIKEY` header names a key made with `POST /api/v1/apikeys`; parameters travel in the query
string and/or an url-encoded body, with `timestamp` (ms) and optional `recvWindow` (ms, default
5000, at most 60000); `signature` is HMAC-SHA256 (hex) of the query string followed by the body,
without the signature itself. Errors are `{"code": -NNNN, "msg": ...}` with Binance's codes, which
ccxt maps to its exceptions.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

from litestar import Controller, Request, Response, delete, get, post

from cashmarkets.api import spot as v1
from cashmarkets.api.errors import ApiError
from cashmarkets.api.ratelimit import CHARGED_USER, retry_after_s, take, user_key
from cashmarkets.api.services import Services, new_command_id, services
from cashmarkets.core.money import format_amount
from cashmarkets.core.products.spot import (
    CancelAllOrders,
    CancelOrder,
    OrderPlaced,
    OrdersCanceled,
    OrderView,
    SpotMarket,
    SpotTrade,
)
from cashmarkets.core.products.spot.marketdata import INTERVALS_MS
from cashmarkets.ops import metrics
from cashmarkets.store import spot_queries

RECV_WINDOW_DEFAULT_MS: Final = 5_000
RECV_WINDOW_MAX_MS: Final = 60_000

# Our error codes -> (Binance code, message). Unlisted: -1013 with our message.
_CODES: Final = {
    "unknown_market": (-1121, "Invalid symbol."),
    "insufficient_funds": (-2010, "Account has insufficient balance for requested action."),
    "would_take": (-2010, "Order would immediately match and take."),
    "duplicate_client_order_id": (-2010, "Duplicate order sent."),
    "market_halted": (-2010, "Market is closed."),
    "too_many_orders": (-2010, "Too many open orders."),
    "below_min_notional": (-1013, "Filter failure: NOTIONAL"),
    "bad_quantity": (-1013, "Filter failure: LOT_SIZE"),
    "bad_price": (-1013, "Filter failure: PRICE_FILTER"),
    "invalid_price": (-1111, "Precision is over the maximum defined for this asset."),
    "invalid_quantity": (-1111, "Precision is over the maximum defined for this asset."),
    "missing_price": (-1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed."),
    "order_not_found": (-2013, "Order does not exist."),
    "timeout": (
        -1007,
        "Timeout waiting for response from backend server. Send status unknown; execution status unknown.",
    ),
    "rate_limited": (-1003, "Too many requests."),
}


class BinanceError(Exception):
    def __init__(self, code: int, msg: str, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status, self.headers = code, msg, status, headers


def _error(exc: BinanceError) -> Response[dict[str, Any]]:
    return Response({"code": exc.code, "msg": exc.msg}, status_code=exc.status, headers=exc.headers)


async def _charge_user(request: Request[Any, Any, Any], user_id: str) -> None:
    """Charge a signed request to its key's user: the bucket of their HTTP requests and socket
    commands (api/ratelimit.py). Binance's answer when over it: 429, -1003, Retry-After."""
    if request.scope.get("state", {}).get(CHARGED_USER) == user_id:
        return  # the request also carried this user's bearer token: the edge already charged it
    wait = await take(request.app.state.rate_limits["user"], user_key(user_id))
    if wait > 0:
        metrics.RATE_LIMITED.labels("apikey_user").inc()
        raise BinanceError(
            -1003,
            "Too many requests; the user's limit is shared by every API key, token and socket.",
            429,
            {"Retry-After": str(retry_after_s(wait))},
        )


async def _guard(body: Callable[[], Awaitable[Any]], not_found: tuple[int, str] | None = None) -> Any:
    """Run a route body; our errors become Binance's."""
    try:
        return await body()
    except BinanceError as exc:
        return _error(exc)
    except ApiError as exc:
        if exc.code == "order_not_found" and not_found is not None:
            code, msg = not_found
        else:
            code, msg = _CODES.get(exc.code, (-1013, exc.detail or exc.code))
        return _error(BinanceError(code, msg, 400 if exc.status < 500 else exc.status))


@functools.lru_cache(maxsize=8)
def _symbols_of(markets: tuple[SpotMarket, ...]) -> Mapping[str, SpotMarket]:
    return {m.symbol.replace("_", ""): m for m in markets}


async def _symbols(svc: Services) -> Mapping[str, SpotMarket]:
    """The spot markets in force (decision 023) by their Binance symbol (no underscore)."""
    return _symbols_of(tuple((await v1.spot_markets(svc)).values()))


async def _market(svc: Services, symbol: str | None) -> SpotMarket:
    if not symbol:
        raise BinanceError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
    found = (await _symbols(svc)).get(symbol.upper())
    if found is None:
        raise BinanceError(-1121, "Invalid symbol.")
    return found


def _int(
    params: dict[str, str], name: str, default: int | None = None, lo: int = 0, hi: int = 2**63 - 1
) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BinanceError(
            -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
        ) from None
    if not lo <= value <= hi:
        raise BinanceError(-1100, f"Parameter '{name}' is out of range.")
    return value


def _ms(ns: int) -> int:
    return ns // 1_000_000


def _sym(symbol: str) -> str:
    return symbol.replace("_", "")


def order_json(o: OrderView, markets: Mapping[str, SpotMarket]) -> dict[str, Any]:
    m = markets[o.market]
    units = v1.units_of(m)
    return {
        "symbol": _sym(o.market),
        "orderId": o.order_id,
        "orderListId": -1,
        "clientOrderId": o.client_order_id,
        "price": units.format_price(o.price_ticks),
        "origQty": units.format_qty(o.qty_lots),
        "executedQty": units.format_qty(o.executed_lots),
        "cummulativeQuoteQty": format_amount(o.executed_quote, m.quote_decimals),
        "status": o.status,
        "timeInForce": o.tif,
        "type": o.order_type,
        "side": o.side,
        "stopPrice": units.format_price(0),
        "icebergQty": units.format_qty(0),
        "time": _ms(o.created_ts_ns),
        "updateTime": _ms(o.updated_ts_ns),
        "isWorking": o.remaining_lots > 0,
        "workingTime": _ms(o.created_ts_ns),
        "origQuoteOrderQty": format_amount(o.quote_qty, m.quote_decimals),
        "selfTradePreventionMode": o.stp,
    }


def _fill_json(t: SpotTrade, side: str, markets: Mapping[str, SpotMarket]) -> dict[str, Any]:
    f = v1.fill_out(t, side, markets)
    return {
        "price": f.price,
        "qty": f.qty,
        "commission": f.fee,
        "commissionAsset": f.fee_asset,
        "tradeId": f.trade_id,
    }


class BinanceController(Controller):
    path = "/api/v3"
    tags = ["binance-compatible"]
    # Described by Binance's own API documentation (parameters in query/body strings, Binance's
    # error shape), not by our OpenAPI document.
    include_in_schema = False

    # ---- plumbing ----

    @staticmethod
    async def _params(request: Request[Any, Any, Any]) -> tuple[dict[str, str], str, str]:
        """(parameters from the query string and the body, raw query, raw body)."""
        raw_query = request.scope.get("query_string", b"").decode("latin-1")
        raw_body = (await request.body()).decode("latin-1")
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        if raw_body:
            params.update(parse_qsl(raw_body, keep_blank_values=True))
        return params, raw_query, raw_body

    async def _signed(self, request: Request[Any, Any, Any]) -> tuple[Services, str, dict[str, str]]:
        """Check the API key, the timestamp and the signature; (services, user id, params)."""
        svc = services(request)
        params, raw_query, raw_body = await self._params(request)
        api_key = request.headers.get("x-mbx-apikey", "")
        if not api_key:
            raise BinanceError(-2014, "API-key format invalid.", 401)
        found = await svc.api_keys.lookup(api_key) if len(api_key) <= 64 else None
        if found is None:
            raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        user_id, secret = found
        state = await svc.users.state(user_id)  # the owner's live status (cached, at most 1 s old)
        if state is None or state.status != "active":
            raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        timestamp = _int(params, "timestamp")
        if timestamp is None:
            raise BinanceError(
                -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed."
            )
        window = _int(params, "recvWindow", RECV_WINDOW_DEFAULT_MS, 0, RECV_WINDOW_MAX_MS)
        assert window is not None
        now_ms = time.time_ns() // 1_000_000
        if not now_ms - window <= timestamp <= now_ms + 1_000:
            raise BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")
        given = params.get("signature", "")
        payload = _strip_signature(raw_query) + _strip_signature(raw_body)
        expected = hmac.new(secret.encode(), payload.encode("latin-1"), hashlib.sha256).hexdigest()
        if not given or not hmac.compare_digest(given.lower(), expected):
            raise BinanceError(-1022, "Signature for this request is not valid.")
        # Only once signed: a leaked key without its secret cannot spend its user's bucket.
        await _charge_user(request, user_id)
        return svc, user_id, params

    # ---- public ----

    @get("/ping")
    async def ping(self) -> dict[str, Any]:
        return {}

    @get("/time")
    async def server_time(self) -> dict[str, Any]:
        return {"serverTime": time.time_ns() // 1_000_000}

    @get("/exchangeInfo")
    async def exchange_info(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        symbols = []
        for sym, m in (await _symbols(services(request))).items():
            info = v1.market_info(m)
            symbols.append(
                {
                    "symbol": sym,
                    "status": "TRADING",
                    "baseAsset": m.base,
                    "baseAssetPrecision": m.base_decimals,
                    "quoteAsset": m.quote,
                    "quotePrecision": m.quote_decimals,
                    "quoteAssetPrecision": m.quote_decimals,
                    "baseCommissionPrecision": m.base_decimals,
                    "quoteCommissionPrecision": m.quote_decimals,
                    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
                    "icebergAllowed": False,
                    "ocoAllowed": False,
                    "otoAllowed": False,
                    "quoteOrderQtyMarketAllowed": True,
                    "allowTrailingStop": False,
                    "cancelReplaceAllowed": False,
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": False,
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": info.tick_size,
                            "maxPrice": info.max_price,
                            "tickSize": info.tick_size,
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": info.min_qty,
                            "maxQty": info.max_qty,
                            "stepSize": info.lot_size,
                        },
                        {
                            "filterType": "NOTIONAL",
                            "minNotional": info.min_notional,
                            "applyMinToMarket": True,
                            "maxNotional": "9000000.00000000",
                            "applyMaxToMarket": False,
                            "avgPriceMins": 0,
                        },
                    ],
                    "permissions": [],
                    "permissionSets": [["SPOT"]],
                    "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                    "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": time.time_ns() // 1_000_000,
            "rateLimits": [],
            "exchangeFilters": [],
            "symbols": symbols,
        }

    @get("/depth")
    async def depth(self, request: Request[Any, Any, Any]) -> Any:
        async def body() -> Any:
            params, _, _ = await self._params(request)
            m = await _market(services(request), params.get("symbol"))
            limit = _int(params, "limit", 100, 1, v1.DEPTH_LIMIT_MAX)
            assert limit is not None
            units = v1.units_of(m)
            update_id, bids, asks = await services(request).balances.depth(m.symbol, limit)
            return {
                "lastUpdateId": update_id,
                "bids": [[units.format_price(p), units.format_qty(q)] for p, q in bids],
                "asks": [[units.format_price(p), units.format_qty(q)] for p, q in asks],
            }

        return await _guard(body)

    @get("/trades")
    async def trades(self, request: Request[Any, Any, Any]) -> Any:
        async def body() -> Any:
            params, _, _ = await self._params(request)
            m = await _market(services(request), params.get("symbol"))
            limit = _int(params, "limit", 500, 1, v1.TRADES_LIMIT_MAX)
            assert limit is not None
            units = v1.units_of(m)
            rows = await spot_queries.recent_trades(services(request).db, m.symbol, limit)
            return [
                {
                    "id": r.trade_id,
                    "price": units.format_price(r.price_ticks),
                    "qty": units.format_qty(r.qty_lots),
                    "quoteQty": format_amount(r.quote_amount, m.quote_decimals),
                    "time": _ms(r.ts_ns),
                    "isBuyerMaker": r.taker_side == "SELL",
                    "isBestMatch": True,
                }
                for r in rows
            ]

        return await _guard(body)

    @get("/klines")
    async def klines(self, request: Request[Any, Any, Any]) -> Any:
        async def body() -> Any:
            params, _, _ = await self._params(request)
            m = await _market(services(request), params.get("symbol"))
            interval = params.get("interval", "")
            if interval not in INTERVALS_MS:
                raise BinanceError(-1120, "Invalid interval.")
            limit = _int(params, "limit", 500, 1, v1.KLINES_LIMIT_MAX)
            assert limit is not None
            rows = await spot_queries.klines(
                services(request).db,
                m.symbol,
                interval,
                _int(params, "startTime"),
                _int(params, "endTime"),
                limit,
            )
            # Binance adds taker-buy volumes and an unused field; we do not track the former.
            return [[*row, "0", "0", "0"] for row in v1.kline_rows(rows, m, interval)]

        return await _guard(body)

    @get("/ticker/24hr")
    async def ticker_24hr(self, request: Request[Any, Any, Any]) -> Any:
        async def body() -> Any:
            params, _, _ = await self._params(request)
            svc = services(request)
            symbols = (
                [(await _market(services(request), params["symbol"]))]
                if params.get("symbol")
                else list((await _symbols(svc)).values())
            )
            out = []
            for m in symbols:
                t = await v1.ticker_of(svc, m)
                _, bids, asks = await svc.balances.depth(m.symbol, 1)
                units = v1.units_of(m)
                out.append(
                    {
                        "symbol": _sym(m.symbol),
                        "priceChange": t.price_change,
                        "priceChangePercent": t.price_change_percent,
                        "weightedAvgPrice": t.last_price,
                        "prevClosePrice": t.open_price,
                        "lastPrice": t.last_price,
                        "lastQty": units.format_qty(0),
                        "bidPrice": units.format_price(bids[0][0]) if bids else units.format_price(0),
                        "bidQty": units.format_qty(bids[0][1]) if bids else units.format_qty(0),
                        "askPrice": units.format_price(asks[0][0]) if asks else units.format_price(0),
                        "askQty": units.format_qty(asks[0][1]) if asks else units.format_qty(0),
                        "openPrice": t.open_price,
                        "highPrice": t.high_price,
                        "lowPrice": t.low_price,
                        "volume": t.volume,
                        "quoteVolume": t.quote_volume,
                        "openTime": t.open_time_ms,
                        "closeTime": t.close_time_ms,
                        "firstId": -1,
                        "lastId": -1,
                        "count": t.count,
                    }
                )
            return out[0] if params.get("symbol") else out

        return await _guard(body)

    @get("/ticker/bookTicker")
    async def book_ticker(self, request: Request[Any, Any, Any]) -> Any:
        async def body() -> Any:
            params, _, _ = await self._params(request)
            m = await _market(services(request), params.get("symbol"))
            units = v1.units_of(m)
            _, bids, asks = await services(request).balances.depth(m.symbol, 1)
            return {
                "symbol": _sym(m.symbol),
                "bidPrice": units.format_price(bids[0][0] if bids else 0),
                "bidQty": units.format_qty(bids[0][1] if bids else 0),
                "askPrice": units.format_price(asks[0][0] if asks else 0),
                "askQty": units.format_qty(asks[0][1] if asks else 0),
            }

        return await _guard(body)

    # ---- signed ----

    @post("/order", status_code=200)
    async def new_order(self, request: Request[Any, Any, Any]) -> Any:
        async def body() -> Any:
            svc, user_id, p = await self._signed(request)
            m = await _market(services(request), p.get("symbol"))
            side, order_type = p.get("side", "").upper(), p.get("type", "").upper()
            if side not in ("BUY", "SELL"):
                raise BinanceError(
                    -1102, "Mandatory parameter 'side' was not sent, was empty/null, or malformed."
                )
            if order_type not in ("LIMIT", "MARKET", "LIMIT_MAKER"):
                raise BinanceError(-1116, "Invalid orderType.")
            tif = p.get("timeInForce", "GTC").upper()
            if tif not in ("GTC", "IOC", "FOK"):
                raise BinanceError(-1115, "Invalid timeInForce.")
            stp = p.get("selfTradePreventionMode", "EXPIRE_MAKER").upper()
            if stp not in ("EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"):
                raise BinanceError(-1013, "Invalid selfTradePreventionMode.")
            coid = p.get("newClientOrderId") or None
            if coid is not None and len(coid) > 36:
                raise BinanceError(-1100, "Illegal characters found in parameter 'newClientOrderId'.")
            cmd = v1.place_command(
                user_id,
                new_command_id(user_id),
                m,
                side,
                order_type,
                tif,
                p.get("price") or None,
                p.get("quantity") or None,
                p.get("quoteOrderQty") or None,
                stp,
                coid,
            )
            result = await svc.execute(cmd)
            assert isinstance(result.data, OrderPlaced)
            placed = result.data
            out = order_json(placed.order, {m.symbol: m})
            resp = p.get("newOrderRespType", "FULL").upper()
            if resp == "ACK":
                return {
                    "symbol": out["symbol"],
                    "orderId": out["orderId"],
                    "orderListId": -1,
                    "clientOrderId": out["clientOrderId"],
                    "transactTime": out["updateTime"],
                }
            out["transactTime"] = out["updateTime"]
            if resp == "FULL":
                out["fills"] = [_fill_json(t, placed.order.side, {m.symbol: m}) for t in placed.trades]
            return out

        return await _guard(body)

    @delete("/order", status_code=200)
    async def cancel_order(self, request: Request[Any, Any, Any]) -> Any:
        async def body() -> Any:
            svc, user_id, p = await self._signed(request)
            m = await _market(services(request), p.get("symbol"))
            order_id = _int(p, "orderId", 0, 0) or 0
            client_id = p.get("origClientOrderId", "")
            if not order_id and not client_id:
                raise BinanceError(
                    -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
                )
            result = await svc.execute(
                CancelOrder(
                    command_id=new_command_id(user_id),
                    owner=user_id,
                    market=m.symbol,
                    order_id=order_id,
                    client_order_id=client_id,
                )
            )
            assert isinstance(result.data, OrderView)
            out = order_json(result.data, {m.symbol: m})
            out["origClientOrderId"] = out["clientOrderId"]
            return out

        return await _guard(body, not_found=(-2011, "Unknown order sent."))

    @get("/order")
    async def query_order(self, request: Request[Any, Any, Any]) -> Any:
        async def body() -> Any:
            svc, user_id, p = await self._signed(request)
            m = await _market(services(request), p.get("symbol"))
            order_id = _int(p, "orderId", None, 1)
            client_id = p.get("origClientOrderId") or None
            if order_id is None and client_id is None:
                raise BinanceError(
                    -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
                )
            return order_json(await v1.find_order(svc, user_id, m.symbol, order_id, client_id), {m.symbol: m})

        return await _guard(body)

    @get("/openOrders")
    async def open_orders(self, request: Request[Any, Any, Any]) -> Any:
        async def body() -> Any:
            svc, user_id, p = await self._signed(request)
            symbol = (await _market(services(request), p["symbol"])).symbol if p.get("symbol") else None
            markets = await v1.spot_markets(svc)
            return [order_json(o, markets) for o in await svc.balances.open_orders(user_id, symbol)]

        return await _guard(body)

    @delete("/openOrders", status_code=200)
    async def cancel_open_orders(self, request: Request[Any, Any, Any]) -> Any:
        async def body() -> Any:
            svc, user_id, p = await self._signed(request)
            m = await _market(services(request), p.get("symbol"))
            result = await svc.execute(
                CancelAllOrders(command_id=new_command_id(user_id), owner=user_id, market=m.symbol)
            )
            assert isinstance(result.data, OrdersCanceled)
            return [order_json(o, {m.symbol: m}) for o in result.data.orders]

        return await _guard(body)

    @get("/myTrades")
    async def my_trades(self, request: Request[Any, Any, Any]) -> Any:
        async def body() -> Any:
            svc, user_id, p = await self._signed(request)
            m = await _market(services(request), p.get("symbol"))
            limit = _int(p, "limit", 500, 1, 1_000)
            assert limit is not None
            from_id = _int(p, "fromId")
            rows, _ = await spot_queries.my_trades_page(
                svc.db, user_id, m.symbol, None, 10_000 if from_id else limit
            )
            rows = sorted(rows, key=lambda r: r.trade_id)
            if from_id is not None:
                rows = [r for r in rows if r.trade_id >= from_id][:limit]
            out = []
            for r in rows:
                t = v1.my_trade_out(r, user_id, m)
                out.append(
                    {
                        "symbol": _sym(m.symbol),
                        "id": t.id,
                        "orderId": t.order_id,
                        "orderListId": -1,
                        "price": t.price,
                        "qty": t.qty,
                        "quoteQty": t.quote_qty,
                        "commission": t.fee,
                        "commissionAsset": t.fee_asset,
                        "time": _ms(t.time_ns),
                        "isBuyer": t.is_buyer,
                        "isMaker": t.is_maker,
                        "isBestMatch": True,
                    }
                )
            return out

        return await _guard(body)

    @get("/account")
    async def account(self, request: Request[Any, Any, Any]) -> Any:
        async def body() -> Any:
            svc, user_id, _ = await self._signed(request)
            from cashmarkets.core.money import ASSETS

            balances = []
            for acc in await svc.balances.accounts_of(user_id):
                decimals = ASSETS[acc.asset].decimals
                balances.append(
                    {
                        "asset": acc.asset,
                        "free": format_amount(acc.available, decimals),
                        "locked": format_amount(acc.balance - acc.available, decimals),
                    }
                )
            markets = (await v1.spot_markets(svc)).values()
            maker = max(m.maker_fee_bps for m in markets)
            taker = max(m.taker_fee_bps for m in markets)
            return {
                "makerCommission": maker,
                "takerCommission": taker,
                "buyerCommission": 0,
                "sellerCommission": 0,
                "commissionRates": {
                    "maker": format_amount(maker * 10_000, 8),  # bps as a fraction
                    "taker": format_amount(taker * 10_000, 8),
                    "buyer": "0.00000000",
                    "seller": "0.00000000",
                },
                "canTrade": True,
                "canWithdraw": True,
                "canDeposit": True,
                "brokered": False,
                "requireSelfTradePrevention": False,
                "preventSor": False,
                "updateTime": time.time_ns() // 1_000_000,
                "accountType": "SPOT",
                "balances": balances,
                "permissions": ["SPOT"],
            }

        return await _guard(body)


def _strip_signature(raw: str) -> str:
    """`raw` without its `signature=...` parameter (Binance signs everything else, in order)."""
    if "signature=" not in raw:
        return raw
    kept = [part for part in raw.split("&") if not part.startswith("signature=")]
    return "&".join(kept)
