"""The one view of a spot order at the edges: the HTTP replies (api/spot.py) and the account
stream's ORDER_UPDATE build it here (docs/views.md). The Binance-compatible routes (api/binance.py)
keep Binance's own wire format. Prices are decimal strings in the quote asset, quantities in the
base asset, `executedQuoteQty` and `quoteOrderQty` in the quote asset."""

from __future__ import annotations

from cashmarkets.api.schemas import Response
from cashmarkets.core.money import format_amount
from cashmarkets.core.products.spot import OrderView, SpotMarket


class OrderOut(Response):
    order_id: int
    market: str
    client_order_id: str
    side: str
    type: str
    time_in_force: str
    stp_mode: str
    price: str  # quote asset
    orig_qty: str  # base asset
    executed_qty: str  # base asset
    executed_quote_qty: str  # quote asset
    remaining_qty: str  # base asset
    status: str
    created_at_ns: int
    updated_at_ns: int
    quote_order_qty: str | None = None  # quote asset, a market buy by quote amount


def order_out(o: OrderView, m: SpotMarket) -> OrderOut:
    """An order's state, as every edge (but Binance's) shows it."""
    return OrderOut(
        order_id=o.order_id,
        market=o.market,
        client_order_id=o.client_order_id,
        side=o.side,
        type=o.order_type,
        time_in_force=o.tif,
        stp_mode=o.stp,
        price=format_amount(o.price_ticks * m.tick_size, m.quote_decimals),
        orig_qty=format_amount(o.qty_lots * m.lot_size, m.base_decimals),
        executed_qty=format_amount(o.executed_lots * m.lot_size, m.base_decimals),
        executed_quote_qty=format_amount(o.executed_quote, m.quote_decimals),
        remaining_qty=format_amount(o.remaining_lots * m.lot_size, m.base_decimals),
        status=o.status,
        created_at_ns=o.created_ts_ns,
        updated_at_ns=o.updated_ts_ns,
        quote_order_qty=format_amount(o.quote_qty, m.quote_decimals) if o.quote_qty else None,
    )
