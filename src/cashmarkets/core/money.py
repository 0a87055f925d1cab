"""Money: integers in minor units inside the engine, decimal strings only at the edges.

Rules:
- Every amount in the engine is a Python `int` counting minor units of its asset (cents for USD,
  satoshis for BTC, ...). Floats never carry money: they cannot represent 0.1 exactly.
- Text crosses the boundary only through `parse_amount` (strict, exact, never rounds) and
  `format_amount` (canonical: exactly `decimals` fractional digits).
- Inputs must be `str`. JSON numbers are rejected because many clients decode them as floats,
  so the value may already be inexact before it reaches us.
- Market prices are carried in ticks and quantities in lots; `Market` converts both ways.

Everything here is pure: no clock, no randomness, no I/O.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

__all__ = [
    "ASSETS",
    "MAX_AMOUNT_TEXT_LEN",
    "AmountError",
    "Asset",
    "Market",
    "asset",
    "format_amount",
    "parse_amount",
]

# Bounds the work done on hostile input before any regex or int() runs.
MAX_AMOUNT_TEXT_LEN: Final = 64

# ASCII digits spelled out: `\d` and int() both accept non-ASCII digits (e.g. Arabic-Indic),
# and int() also accepts underscores, "+" and surrounding whitespace. The integer part has no
# leading zeros so every value has one spelling; the point needs digits on both sides.
_AMOUNT_RE: Final = re.compile(r"(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?")


class AmountError(ValueError):
    """A rejected amount. `code` is stable snake_case for clients; `detail` is for humans.

    Codes: not_a_string, empty, bad_format, too_many_decimals, negative, zero, too_large,
    off_tick, off_lot.
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def _require_int(value: object, what: str) -> int:
    # bool is an int subclass; True as an amount is always a bug.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    return value


def _require_decimals(decimals: object) -> int:
    d = _require_int(decimals, "decimals")
    if d < 0:
        raise ValueError(f"decimals must be >= 0, got {d}")
    return d


def parse_amount(
    text: object,
    decimals: int,
    *,
    allow_negative: bool = False,
    allow_zero: bool = True,
    max_integer_digits: int = 24,
) -> int:
    """Parse a decimal string into integer minor units (``"12.3"``, 2 -> ``1230``). Never rounds.

    Grammar (ASCII only, nothing around it): ``-?(0|[1-9][0-9]*)(\\.[0-9]+)?``.

    Choices:
    - Fractional digits beyond `decimals` are accepted only when they are all zeros
      (``"12.3400"`` with 2 -> 1234), since the value is still exact; otherwise too_many_decimals.
    - A minus sign on zero (``"-0"``, ``"-0.00"``) is bad_format, whatever `allow_negative` says:
      it has no meaning and keeps one spelling per value.
    - Checks run in order: not_a_string, empty, too_large (raw length), bad_format, too_large
      (integer digits), too_many_decimals, negative, zero.

    Raises AmountError; TypeError/ValueError only for a bad `decimals` (a programming error).
    """
    decimals = _require_decimals(decimals)
    if not isinstance(text, str):
        raise AmountError("not_a_string", f"amount must be a decimal string, got {type(text).__name__}")
    if not text:
        raise AmountError("empty", "amount is empty")
    if len(text) > MAX_AMOUNT_TEXT_LEN:
        raise AmountError("too_large", f"amount text longer than {MAX_AMOUNT_TEXT_LEN} characters")
    m = _AMOUNT_RE.fullmatch(text)
    if m is None:
        raise AmountError("bad_format", f"not a plain decimal number: {text!r}")
    sign, int_part, frac_part = m.group(1), m.group(2), m.group(3) or ""
    if len(int_part) > max_integer_digits:
        raise AmountError("too_large", f"more than {max_integer_digits} digits before the point")
    if len(frac_part) > decimals:
        if frac_part[decimals:].strip("0"):
            raise AmountError("too_many_decimals", f"more than {decimals} decimal places: {text!r}")
        frac_part = frac_part[:decimals]
    # The regex guarantees ASCII digits only, so int() here cannot see "_", "+", or spaces.
    frac_part = frac_part.ljust(decimals, "0")
    scale: int = 10**decimals  # annotated: int ** int is typed Any (the exponent could be negative)
    minor = int(int_part) * scale + (int(frac_part) if frac_part else 0)
    if sign:
        if minor == 0:
            raise AmountError("bad_format", f"negative zero is not allowed: {text!r}")
        if not allow_negative:
            raise AmountError("negative", f"amount must not be negative: {text!r}")
        minor = -minor
    if minor == 0 and not allow_zero:
        raise AmountError("zero", "amount must not be zero")
    return minor


def format_amount(minor: int, decimals: int) -> str:
    """Canonical string for minor units, with exactly `decimals` fractional digits (1234, 2 -> "12.34")."""
    minor = _require_int(minor, "minor")
    decimals = _require_decimals(decimals)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**decimals)
    if decimals == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:0{decimals}d}"


class Asset(msgspec.Struct, frozen=True, kw_only=True):
    """An asset and the scale of its minor unit (USD has 2 decimals: 1 = one cent)."""

    code: str
    decimals: int
    name: str = ""

    def __post_init__(self) -> None:
        _require_decimals(self.decimals)

    def parse(
        self,
        text: object,
        *,
        allow_negative: bool = False,
        allow_zero: bool = True,
        max_integer_digits: int = 24,
    ) -> int:
        """Parse a decimal string of this asset into minor units (see `parse_amount`)."""
        return parse_amount(
            text,
            self.decimals,
            allow_negative=allow_negative,
            allow_zero=allow_zero,
            max_integer_digits=max_integer_digits,
        )

    def format(self, minor: int) -> str:
        """Format minor units of this asset canonically."""
        return format_amount(minor, self.decimals)


class Market(msgspec.Struct, frozen=True, kw_only=True):
    """A base/quote market. Prices are carried in ticks, quantities in lots.

    `tick_size` is in price minor units (scale `price_decimals`); `lot_size` is in quantity minor
    units (scale `qty_decimals`). Prices and quantities must be positive.
    """

    symbol: str
    base: str
    quote: str
    price_decimals: int
    qty_decimals: int
    tick_size: int
    lot_size: int

    def __post_init__(self) -> None:
        _require_decimals(self.price_decimals)
        _require_decimals(self.qty_decimals)
        if _require_int(self.tick_size, "tick_size") <= 0:
            raise ValueError(f"tick_size must be > 0, got {self.tick_size}")
        if _require_int(self.lot_size, "lot_size") <= 0:
            raise ValueError(f"lot_size must be > 0, got {self.lot_size}")

    def parse_price(self, text: object) -> int:
        """Parse a price string into ticks; AmountError off_tick if not a whole number of ticks."""
        minor = parse_amount(text, self.price_decimals, allow_negative=False, allow_zero=False)
        ticks, rest = divmod(minor, self.tick_size)
        if rest:
            tick = format_amount(self.tick_size, self.price_decimals)
            raise AmountError("off_tick", f"price {text!r} is not a multiple of the tick size {tick}")
        return ticks

    def format_price(self, price_ticks: int) -> str:
        """Format a price given in ticks."""
        return format_amount(_require_int(price_ticks, "price_ticks") * self.tick_size, self.price_decimals)

    def parse_qty(self, text: object) -> int:
        """Parse a quantity string into lots; AmountError off_lot if not a whole number of lots."""
        minor = parse_amount(text, self.qty_decimals, allow_negative=False, allow_zero=False)
        lots, rest = divmod(minor, self.lot_size)
        if rest:
            lot = format_amount(self.lot_size, self.qty_decimals)
            raise AmountError("off_lot", f"quantity {text!r} is not a multiple of the lot size {lot}")
        return lots

    def format_qty(self, qty_lots: int) -> str:
        """Format a quantity given in lots."""
        return format_amount(_require_int(qty_lots, "qty_lots") * self.lot_size, self.qty_decimals)


ASSETS: dict[str, Asset] = {
    a.code: a
    for a in (
        Asset(code="USD", decimals=2, name="US dollar"),  # minor unit: cents
        Asset(code="USDC", decimals=6, name="USD Coin"),
        Asset(code="BTC", decimals=8, name="Bitcoin"),  # minor unit: satoshi
        # Gwei, not wei: ledger totals are signed 64-bit (ledger.TOTAL_MAX), and 18 decimals
        # would cap them at 9.2 ETH.
        Asset(code="ETH", decimals=9, name="Ether"),  # minor unit: gwei
        Asset(code="SOL", decimals=9, name="Solana"),  # minor unit: lamport
    )
}


def asset(code: str) -> Asset | None:
    """The default asset with this code, or None."""
    return ASSETS.get(code)
