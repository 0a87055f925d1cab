"""Spot commands, results and events. Codes and names follow Binance where it has one.

    PlaceOrder        LIMIT (GTC | IOC | FOK), MARKET (by base quantity or by quote amount, with an
                      optional protection price), LIMIT_MAKER (post-only)
    CancelOrder       by order id or by client order id
    CancelAllOrders   every open order of the owner in one market
    AmendOrder        new price and/or quantity (see `product` for the priority rule)
    SetMarketStatus   TRADING | HALTED (an operator's command)

Events: `SpotOrderUpdated` (an execution report: every status change of an order) and `SpotTrade`
(one per fill; it also carries the maker's state after the fill, so the maker needs no report of
its own). `SpotMarketStatus` when a market halts or resumes.
"""

from __future__ import annotations

import msgspec

from cashmarkets.core.commands import Command
from cashmarkets.core.results import ResultData


class PlaceOrder(Command, tag="spot_place"):
    owner: str
    market: str
    side: str  # BUY | SELL
    order_type: str = "LIMIT"  # LIMIT | MARKET | LIMIT_MAKER
    tif: str = "GTC"  # GTC | IOC | FOK, for LIMIT
    price_ticks: int = 0  # LIMIT: the limit price; MARKET: protection price (0: none)
    qty_lots: int = 0  # base quantity; 0 for a MARKET order by quote amount
    quote_qty: int = 0  # MARKET by quote amount: quote minor units to spend (BUY) or receive (SELL)
    stp: str = "EXPIRE_MAKER"  # EXPIRE_TAKER | EXPIRE_MAKER | EXPIRE_BOTH
    client_order_id: str = ""


class CancelOrder(Command, tag="spot_cancel"):
    owner: str
    market: str
    order_id: int = 0
    client_order_id: str = ""  # used when order_id is 0


class CancelAllOrders(Command, tag="spot_cancel_all"):
    owner: str
    market: str


class AmendOrder(Command, tag="spot_amend"):
    owner: str
    market: str
    order_id: int = 0
    client_order_id: str = ""  # used when order_id is 0
    price_ticks: int = 0  # 0: unchanged
    qty_lots: int = 0  # the new total quantity (filled part included); 0: unchanged


class SetMarketStatus(Command, tag="spot_market_status"):
    market: str
    status: str  # TRADING | HALTED


class OrderView(ResultData, tag="spot_order", kw_only=False):
    """An order as it stands after a command: the body of an execution report."""

    order_id: int
    market: str
    owner: str
    client_order_id: str
    side: str
    order_type: str
    tif: str
    stp: str
    price_ticks: int
    qty_lots: int
    quote_qty: int
    executed_lots: int
    executed_quote: int  # quote minor units traded so far
    remaining_lots: int  # open quantity on the book (0 once the order is closed)
    status: str
    created_seq: int
    created_ts_ns: int
    updated_seq: int
    updated_ts_ns: int


class SpotTrade(msgspec.Struct, tag="spot_trade", array_like=True, gc=False):
    """One fill, at the maker's price. Fees are in the asset each side receives."""

    seq: int
    ts_ns: int
    market: str
    trade_id: int  # sequential per market
    price_ticks: int
    qty_lots: int
    quote_amount: int
    taker_side: str  # BUY: the buyer took (Binance's isBuyerMaker is the opposite)
    taker_order_id: int
    taker_owner: str
    maker_order_id: int
    maker_owner: str
    maker_remaining_lots: int
    maker_status: str
    buyer_fee: int  # base minor units
    seller_fee: int  # quote minor units


class OrderPlaced(ResultData, tag="spot_placed", kw_only=False):
    order: OrderView
    trades: list[SpotTrade]


class OrdersCanceled(ResultData, tag="spot_canceled"):
    orders: list[OrderView]


class MarketStatusView(ResultData, tag="spot_market_status"):
    market: str
    status: str


class SpotOrderUpdated(msgspec.Struct, tag="spot_order_updated", array_like=True, gc=False):
    """`exec_type` says what happened: NEW | TRADE | CANCELED | AMENDED | EXPIRED."""

    seq: int
    exec_type: str
    order: OrderView


class SpotMarketStatus(msgspec.Struct, tag="spot_market_status", array_like=True, gc=False):
    seq: int
    market: str
    status: str


COMMANDS: tuple[type[Command], ...] = (PlaceOrder, CancelOrder, CancelAllOrders, AmendOrder, SetMarketStatus)
EVENTS: tuple[type, ...] = (SpotOrderUpdated, SpotTrade, SpotMarketStatus)
RESULTS: tuple[type[ResultData], ...] = (OrderView, OrderPlaced, OrdersCanceled, MarketStatusView)
