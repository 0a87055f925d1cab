"""Spot markets: what is traded, in which units, with which limits and fees.

Units (all integers): a price is a whole number of ticks, a quantity a whole number of lots.

    base amount  = qty_lots * lot_size                       (base minor units)
    quote amount = qty_lots * price_ticks * quote_per_lot_tick (quote minor units)

`quote_per_lot_tick = tick_size * lot_size / 10**base_decimals` must be a whole number, so every
trade moves an exact number of minor units of both assets and nothing is ever rounded.
"""

from __future__ import annotations

from typing import Final

import msgspec

from cashmarkets.core.money import Market, format_amount

BPS: Final = 10_000


class SpotMarket(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str  # "BTC_USDC"
    base: str
    quote: str
    base_decimals: int
    quote_decimals: int
    tick_size: int  # quote minor units per whole base unit, per tick
    lot_size: int  # base minor units per lot
    min_qty_lots: int = 1
    max_qty_lots: int
    max_price_ticks: int
    min_notional: int  # quote minor units
    maker_fee_bps: int = 5
    taker_fee_bps: int = 10

    def __post_init__(self) -> None:
        scale: int = 10**self.base_decimals
        if self.tick_size <= 0 or self.lot_size <= 0 or (self.tick_size * self.lot_size) % scale:
            raise ValueError(f"{self.symbol}: tick_size * lot_size must be a multiple of 10**base_decimals")
        if not 0 < self.min_qty_lots <= self.max_qty_lots or self.max_price_ticks <= 0:
            raise ValueError(f"{self.symbol}: bad quantity or price limits")
        if not (0 <= self.maker_fee_bps <= BPS and 0 <= self.taker_fee_bps <= BPS):
            raise ValueError(f"{self.symbol}: fees are 0..10000 bps")
        # The largest order must stay far inside int64 (ledger totals are signed 64-bit).
        if self.max_qty_lots * self.max_price_ticks * self.quote_per_lot_tick >= 2**62:
            raise ValueError(f"{self.symbol}: max_qty_lots * max_price_ticks overflows int64")
        # The base side too: a sell holds qty_lots * lot_size (int64 in the C hot path as well).
        if self.max_qty_lots * self.lot_size >= 2**62:
            raise ValueError(f"{self.symbol}: max_qty_lots * lot_size overflows int64")

    @property
    def quote_per_lot_tick(self) -> int:
        scale: int = 10**self.base_decimals
        return self.tick_size * self.lot_size // scale

    def fee_text(self, buyer: bool, buyer_fee: int, seller_fee: int) -> tuple[str, str]:
        """(fee, asset) of one side of a trade, as shown to it: a buyer pays in base, a seller
        in quote."""
        if buyer:
            return format_amount(buyer_fee, self.base_decimals), self.base
        return format_amount(seller_fee, self.quote_decimals), self.quote

    def units(self) -> Market:
        """Decimal-string parsing and formatting of this market's prices and quantities."""
        return Market(
            symbol=self.symbol,
            base=self.base,
            quote=self.quote,
            price_decimals=self.quote_decimals,
            qty_decimals=self.base_decimals,
            tick_size=self.tick_size,
            lot_size=self.lot_size,
        )


DEFAULT_MARKETS: Final = (
    # 0.01 USDC ticks, 0.0001 BTC lots: one lot-tick is 1 micro-USDC.
    SpotMarket(
        symbol="BTC_USDC",
        base="BTC",
        quote="USDC",
        base_decimals=8,
        quote_decimals=6,
        tick_size=10_000,
        lot_size=10_000,
        max_qty_lots=1_000_000,  # 100 BTC
        max_price_ticks=100_000_000,  # 1,000,000 USDC
        min_notional=5_000_000,  # 5 USDC
    ),
    SpotMarket(
        symbol="ETH_USDC",
        base="ETH",
        quote="USDC",
        base_decimals=9,
        quote_decimals=6,
        tick_size=10_000,
        lot_size=1_000_000,  # 0.001 ETH
        max_qty_lots=1_000_000,  # 1,000 ETH
        max_price_ticks=10_000_000,  # 100,000 USDC
        min_notional=5_000_000,
    ),
    SpotMarket(
        symbol="SOL_USDC",
        base="SOL",
        quote="USDC",
        base_decimals=9,
        quote_decimals=6,
        tick_size=1_000,  # 0.001 USDC
        lot_size=10_000_000,  # 0.01 SOL
        max_qty_lots=10_000_000,  # 100,000 SOL
        max_price_ticks=100_000_000,  # 100,000 USDC
        min_notional=5_000_000,
    ),
)


class SpotConfig(msgspec.Struct, frozen=True, kw_only=True):
    markets: tuple[SpotMarket, ...] = DEFAULT_MARKETS
    # Open orders one owner may have in one market (Binance: MAX_NUM_ORDERS 200).
    orders_per_owner_max: int = 200
    # Open orders in the whole engine, every market.
    orders_max: int = 2_000_000
    # Binance's newClientOrderId limit; ccxt's broker-prefixed ids fit.
    client_order_id_length_max: int = 36
