from __future__ import annotations

import re
from fractions import Fraction

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cashmarkets.core.money import (
    ASSETS,
    MAX_AMOUNT_TEXT_LEN,
    AmountError,
    Asset,
    Market,
    asset,
    format_amount,
    parse_amount,
)

# --- parse_amount: table of good inputs -------------------------------------------------------

GOOD = [
    # (text, decimals, kwargs, expected minor units)
    ("0", 2, {}, 0),
    ("0.5", 2, {}, 50),
    ("0.05", 2, {}, 5),
    ("12.34", 2, {}, 1234),
    ("12.3", 2, {}, 1230),
    ("12", 2, {}, 1200),
    ("12.3400", 2, {}, 1234),  # extra fractional zeros are exact, so accepted
    ("12.000000", 0, {}, 12),
    ("5", 0, {}, 5),
    ("10", 0, {}, 10),
    ("100.10", 3, {}, 100100),
    ("1.000000000000000001", 18, {}, 10**18 + 1),
    ("-12.34", 2, {"allow_negative": True}, -1234),
    ("-0.01", 2, {"allow_negative": True}, -1),
    ("9" * 24, 0, {}, int("9" * 24)),
    ("9" * 24 + ".99", 2, {}, int("9" * 26)),
    ("123", 0, {"max_integer_digits": 3}, 123),
]


@pytest.mark.parametrize(("text", "decimals", "kwargs", "expected"), GOOD)
def test_parse_good(text: str, decimals: int, kwargs: dict[str, object], expected: int) -> None:
    assert parse_amount(text, decimals, **kwargs) == expected


# --- parse_amount: table of bad inputs ---------------------------------------------------------

BAD = [
    # (input, decimals, kwargs, expected code)
    (None, 2, {}, "not_a_string"),
    (1, 2, {}, "not_a_string"),
    (1.5, 2, {}, "not_a_string"),
    (True, 2, {}, "not_a_string"),
    (b"1", 2, {}, "not_a_string"),
    ("", 2, {}, "empty"),
    ("1e3", 2, {}, "bad_format"),
    ("1E3", 2, {}, "bad_format"),
    ("NaN", 2, {}, "bad_format"),
    ("nan", 2, {}, "bad_format"),
    ("inf", 2, {}, "bad_format"),
    ("-inf", 2, {"allow_negative": True}, "bad_format"),
    ("Infinity", 2, {}, "bad_format"),
    (" 1", 2, {}, "bad_format"),
    ("1 ", 2, {}, "bad_format"),
    ("1\n", 2, {}, "bad_format"),
    ("\t1", 2, {}, "bad_format"),
    ("1_000", 2, {}, "bad_format"),
    ("+1", 2, {}, "bad_format"),
    (".5", 2, {}, "bad_format"),
    ("5.", 2, {}, "bad_format"),
    (".", 2, {}, "bad_format"),
    ("-", 2, {"allow_negative": True}, "bad_format"),
    ("\u0663", 2, {}, "bad_format"),  # Arabic-Indic three: int() would accept it
    ("1\u0663", 2, {}, "bad_format"),
    ("\uff11", 2, {}, "bad_format"),  # fullwidth one
    ("0x10", 2, {}, "bad_format"),
    ("1,000", 2, {}, "bad_format"),
    ("1,5", 2, {}, "bad_format"),
    ("--1", 2, {"allow_negative": True}, "bad_format"),
    ("1.2.3", 2, {}, "bad_format"),
    ("007", 2, {}, "bad_format"),
    ("00", 2, {}, "bad_format"),
    ("00.5", 2, {}, "bad_format"),
    ("-0", 2, {"allow_negative": True}, "bad_format"),  # negative zero: one spelling per value
    ("-0.00", 2, {"allow_negative": True}, "bad_format"),
    ("-0.000", 2, {}, "bad_format"),
    ("one", 2, {}, "bad_format"),
    ("1/2", 2, {}, "bad_format"),
    ("12.345", 2, {}, "too_many_decimals"),
    ("12.3401", 2, {}, "too_many_decimals"),
    ("0.5", 0, {}, "too_many_decimals"),
    ("-1", 2, {}, "negative"),
    ("-0.01", 2, {}, "negative"),
    ("0", 2, {"allow_zero": False}, "zero"),
    ("0.00", 2, {"allow_zero": False}, "zero"),
    ("1" * 25, 0, {}, "too_large"),
    ("1" * 25 + ".5", 2, {}, "too_large"),
    ("1234", 0, {"max_integer_digits": 3}, "too_large"),
    ("1" * (MAX_AMOUNT_TEXT_LEN + 1), 0, {"max_integer_digits": 1000}, "too_large"),
    ("0." + "0" * MAX_AMOUNT_TEXT_LEN, 2, {}, "too_large"),  # raw length checked first
    (" " * 1000, 2, {}, "too_large"),
    ("x" * 10_000, 2, {}, "too_large"),
]


@pytest.mark.parametrize(("text", "decimals", "kwargs", "code"), BAD)
def test_parse_bad(text: object, decimals: int, kwargs: dict[str, object], code: str) -> None:
    with pytest.raises(AmountError) as exc:
        parse_amount(text, decimals, **kwargs)
    assert exc.value.code == code
    assert exc.value.detail
    assert isinstance(exc.value, ValueError)


def test_bad_decimals_is_a_programming_error() -> None:
    with pytest.raises(ValueError) as exc:
        parse_amount("1", -1)
    assert not isinstance(exc.value, AmountError)
    with pytest.raises(TypeError):
        parse_amount("1", True)
    with pytest.raises(ValueError):
        format_amount(1, -1)


# --- format_amount --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "decimals", "expected"),
    [
        (1234, 2, "12.34"),
        (-5, 2, "-0.05"),
        (0, 0, "0"),
        (0, 2, "0.00"),
        (5, 0, "5"),
        (-5, 0, "-5"),
        (1, 18, "0.000000000000000001"),
        (-1234, 2, "-12.34"),
        (100, 2, "1.00"),
    ],
)
def test_format(minor: int, decimals: int, expected: str) -> None:
    assert format_amount(minor, decimals) == expected


@pytest.mark.parametrize("bad", [True, False, 1.5, "1", None])
def test_format_rejects_non_int(bad: object) -> None:
    with pytest.raises(TypeError):
        format_amount(bad, 2)


# --- properties -----------------------------------------------------------------------------------

MAX_INT_DIGITS = 24


@st.composite
def amount_and_decimals(draw: st.DrawFn) -> tuple[int, int]:
    d = draw(st.integers(min_value=0, max_value=18))
    bound = 10 ** (MAX_INT_DIGITS + d) - 1  # largest value with 24 integer digits
    x = draw(st.one_of(st.integers(min_value=-bound, max_value=bound), st.integers(-1000, 1000)))
    return x, d


@settings(max_examples=300)
@given(amount_and_decimals())
def test_format_parse_round_trip(xd: tuple[int, int]) -> None:
    x, d = xd
    text = format_amount(x, d)
    assert parse_amount(text, d, allow_negative=True) == x
    # Canonical: parsing then formatting gives back the same text.
    assert format_amount(parse_amount(text, d, allow_negative=True), d) == text


_ASCII_GRAMMAR = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")

# Near-miss alphabets find more edge cases than fully random text.
_NEARLY_NUMBERS = st.text(alphabet="0123456789.-+eE_ ,\u0663\uff11", max_size=30)


def _check_against_fraction(text: str, d: int) -> None:
    try:
        got = parse_amount(text, d, allow_negative=True)
    except AmountError as e:
        # Every rejection must be justified independently of the implementation.
        if e.code == "bad_format":
            assert not _ASCII_GRAMMAR.fullmatch(text) or (text.startswith("-") and Fraction(text) == 0)
        elif e.code == "too_many_decimals":
            assert (Fraction(text) * 10**d).denominator != 1
        elif e.code == "too_large":
            assert len(text) > MAX_AMOUNT_TEXT_LEN or len(text.lstrip("-").split(".")[0]) > MAX_INT_DIGITS
        elif e.code == "empty":
            assert text == ""
        else:
            raise AssertionError(f"unexpected code {e.code} for {text!r}") from e
        return
    # Accepted: must be the strict ASCII grammar and the exact value.
    assert type(got) is int
    assert _ASCII_GRAMMAR.fullmatch(text)
    exact = Fraction(text) * 10**d
    assert exact.denominator == 1
    assert got == exact.numerator


@settings(max_examples=300)
@given(st.text(), st.integers(min_value=0, max_value=18))
def test_any_text_returns_int_or_amount_error(text: str, d: int) -> None:
    _check_against_fraction(text, d)


@settings(max_examples=300)
@given(_NEARLY_NUMBERS, st.integers(min_value=0, max_value=18))
def test_near_miss_text(text: str, d: int) -> None:
    _check_against_fraction(text, d)


@settings(max_examples=300)
@given(
    st.from_regex(r"-?(0|[1-9][0-9]{0,29})(\.[0-9]{1,25})?", fullmatch=True),
    st.integers(min_value=0, max_value=18),
)
def test_grammar_strings_match_fraction(text: str, d: int) -> None:
    _check_against_fraction(text, d)


@given(st.one_of(st.none(), st.integers(), st.floats(), st.binary(), st.lists(st.integers())))
def test_non_strings_rejected(value: object) -> None:
    with pytest.raises(AmountError) as exc:
        parse_amount(value, 2)
    assert exc.value.code == "not_a_string"


# --- Asset ----------------------------------------------------------------------------------------


def test_default_assets() -> None:
    assert {code: a.decimals for code, a in ASSETS.items()} == {
        "USD": 2,
        "USDC": 6,
        "BTC": 8,
        "ETH": 9,
        "SOL": 9,
    }
    usd = asset("USD")
    assert usd is not None and usd.code == "USD"
    assert asset("XYZ") is None


def test_asset_parse_format() -> None:
    btc = ASSETS["BTC"]
    assert btc.parse("1.5") == 150_000_000
    assert btc.format(1) == "0.00000001"
    assert btc.parse("-0.1", allow_negative=True) == -10_000_000
    with pytest.raises(AmountError) as exc:
        btc.parse("0", allow_zero=False)
    assert exc.value.code == "zero"
    with pytest.raises(AmountError) as exc:
        btc.parse("0.000000001")
    assert exc.value.code == "too_many_decimals"


def test_asset_is_frozen_and_round_trips_msgspec() -> None:
    eth = ASSETS["ETH"]
    with pytest.raises(AttributeError):
        eth.decimals = 2
    assert msgspec.json.decode(msgspec.json.encode(eth), type=Asset) == eth
    with pytest.raises(ValueError):
        Asset(code="BAD", decimals=-1)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"code":"BAD","decimals":-1}', type=Asset)


# --- Market ---------------------------------------------------------------------------------------

# BTC-USD: prices in cents with a 5-cent tick; quantities in satoshis with a 0.001 BTC lot.
BTC_USD = Market(
    symbol="BTC-USD",
    base="BTC",
    quote="USD",
    price_decimals=2,
    qty_decimals=8,
    tick_size=5,
    lot_size=100_000,
)


def test_market_price_ticks() -> None:
    assert BTC_USD.parse_price("65000.05") == 1_300_001
    assert BTC_USD.parse_price("0.05") == 1
    assert BTC_USD.parse_price("65000.1") == 1_300_002
    assert BTC_USD.parse_price("65000.10") == 1_300_002
    assert BTC_USD.format_price(1_300_001) == "65000.05"
    assert BTC_USD.format_price(1_300_002) == "65000.10"
    assert BTC_USD.format_price(1) == "0.05"


def test_market_qty_lots() -> None:
    assert BTC_USD.parse_qty("1") == 1000
    assert BTC_USD.parse_qty("0.001") == 1
    assert BTC_USD.parse_qty("0.00100000") == 1
    assert BTC_USD.format_qty(1) == "0.00100000"
    assert BTC_USD.format_qty(2500) == "2.50000000"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("65000.01", "off_tick"),
        ("0.04", "off_tick"),
        ("0", "zero"),
        ("0.00", "zero"),
        ("-1", "negative"),
        ("1.001", "too_many_decimals"),
        ("1e3", "bad_format"),
        (100, "not_a_string"),
    ],
)
def test_market_price_errors(text: object, code: str) -> None:
    with pytest.raises(AmountError) as exc:
        BTC_USD.parse_price(text)
    assert exc.value.code == code


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("0.0015", "off_lot"),
        ("0.00000001", "off_lot"),
        ("0", "zero"),
        ("-0.001", "negative"),
        ("0.000000001", "too_many_decimals"),
        (".001", "bad_format"),
    ],
)
def test_market_qty_errors(text: object, code: str) -> None:
    with pytest.raises(AmountError) as exc:
        BTC_USD.parse_qty(text)
    assert exc.value.code == code


@given(st.integers(min_value=1, max_value=10**15))
def test_market_price_round_trip(ticks: int) -> None:
    assert BTC_USD.parse_price(BTC_USD.format_price(ticks)) == ticks


@given(st.integers(min_value=1, max_value=10**15))
def test_market_qty_round_trip(lots: int) -> None:
    assert BTC_USD.parse_qty(BTC_USD.format_qty(lots)) == lots


@given(st.integers(min_value=1, max_value=10**12))
def test_market_off_tick_and_lot_property(minor: int) -> None:
    price = format_amount(minor, BTC_USD.price_decimals)
    if minor % BTC_USD.tick_size:
        with pytest.raises(AmountError, match="off_tick"):
            BTC_USD.parse_price(price)
    else:
        assert BTC_USD.parse_price(price) * BTC_USD.tick_size == minor
    qty = format_amount(minor, BTC_USD.qty_decimals)
    if minor % BTC_USD.lot_size:
        with pytest.raises(AmountError, match="off_lot"):
            BTC_USD.parse_qty(qty)
    else:
        assert BTC_USD.parse_qty(qty) * BTC_USD.lot_size == minor


@pytest.mark.parametrize(
    "overrides",
    [{"tick_size": 0}, {"lot_size": -1}, {"price_decimals": -1}, {"qty_decimals": -2}],
)
def test_market_rejects_bad_config(overrides: dict[str, int]) -> None:
    fields = {f: getattr(BTC_USD, f) for f in BTC_USD.__struct_fields__} | overrides
    with pytest.raises(ValueError):
        Market(**fields)


def test_market_format_rejects_bool() -> None:
    with pytest.raises(TypeError):
        BTC_USD.format_price(True)
    with pytest.raises(TypeError):
        BTC_USD.format_qty(True)
