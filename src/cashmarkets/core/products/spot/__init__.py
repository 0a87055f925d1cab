"""Product `spot`: the order-book exchange (see `product` for the rules, `book` for the data
structures, `config` for markets and units, `messages` for commands, results and events)."""

from cashmarkets.core.products.spot.config import DEFAULT_MARKETS, SpotConfig, SpotMarket
from cashmarkets.core.products.spot.messages import (
    AmendOrder,
    CancelAllOrders,
    CancelOrder,
    OrderPlaced,
    OrdersCanceled,
    OrderView,
    PlaceOrder,
    SetMarketStatus,
    SpotMarketStatus,
    SpotOrderUpdated,
    SpotTrade,
)
from cashmarkets.core.products.spot.product import ESCROW, PRODUCT, SpotProduct

__all__ = [
    "DEFAULT_MARKETS",
    "ESCROW",
    "PRODUCT",
    "AmendOrder",
    "CancelAllOrders",
    "CancelOrder",
    "OrderPlaced",
    "OrderView",
    "OrdersCanceled",
    "PlaceOrder",
    "SetMarketStatus",
    "SpotConfig",
    "SpotMarket",
    "SpotMarketStatus",
    "SpotOrderUpdated",
    "SpotProduct",
    "SpotTrade",
]
