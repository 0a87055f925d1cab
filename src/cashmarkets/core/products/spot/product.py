"""Product `spot`: a central limit order book per market, matched by price-time priority.

Matching. A taker meets resting orders best price first, oldest first within a price, and every
trade executes at the resting (maker) order's price. A LIMIT order rests what it did not fill
(GTC), or expires it (IOC); FOK fills completely or not at all (it then expires and leaves no
trace: no hold, no trade, the book unchanged). MARKET orders fill what the book offers (by base
quantity, or by quote amount: as many lots as the amount pays for, level by level) and expire the
rest; a non-zero `price_ticks` is a protection price they never trade beyond. LIMIT_MAKER is
post-only: refused with `would_take` if it would match on arrival.

Self-trade prevention (the taker's mode decides): EXPIRE_MAKER cancels the resting order of the
same owner and matching goes on; EXPIRE_TAKER expires the rest of the taker; EXPIRE_BOTH both.
Expired orders end EXPIRED_IN_MATCH.

Amend. Lowering the quantity at the same price keeps the order's place in the queue; a new price
or a larger quantity loses it: the order leaves the queue, may match like a new taker at its new
price, and rests last. The quantity is the new total (filled part included).

Money. Placing an order holds what it can spend through the ledger: a BUY holds quote (limit:
qty x price; market: exactly what the walk of the book costs), a SELL holds base. A resting
order's hold always equals what its open quantity needs. A fill posts part of both holds into the
`@escrow:spot` account and pays each side out of it, less its fee (maker or taker rate, in bps,
floored, charged in the asset the side receives) which goes to `@fees`. Cancel and expiry release
the rest. Nothing is ever rounded: quote = lots x ticks x `quote_per_lot_tick`, exactly.

Rollback. Every change to the books goes through a journal of small tuples; should a handler raise
after mutating, the journal is replayed backwards and the books are exactly as before (the ledger
rolls back its own part).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import msgspec

from cashmarkets.core import codes, native
from cashmarkets.core.commands import Command
from cashmarkets.core.ledger import FEES, OWNER_LENGTH_MAX, Account, escrow
from cashmarkets.core.products.spot.book import (
    BUY,
    CANCELED,
    DAY_MS,
    EXPIRED,
    EXPIRED_IN_MATCH,
    FILLED,
    MINUTE_MS,
    NEW,
    PARTIALLY_FILLED,
    SELL,
    STP_EXPIRE_MAKER,
    STP_EXPIRE_TAKER,
    STP_MODES,
    Book,
    BookSide,
    Order,
)
from cashmarkets.core.products.spot.config import BPS, SpotConfig, SpotMarket
from cashmarkets.core.products.spot.messages import (
    COMMANDS,
    EVENTS,
    RESULTS,
    AmendOrder,
    CancelAllOrders,
    CancelOrder,
    MarketStatusView,
    OrderPlaced,
    OrdersCanceled,
    OrderView,
    PlaceOrder,
    SetMarketStatus,
    SpotMarketStatus,
    SpotOrderUpdated,
    SpotTrade,
)
from cashmarkets.core.reconcile import Check, check
from cashmarkets.core.results import Reject, ResultData

if TYPE_CHECKING:
    from cashmarkets.core.engine import Engine, Handler

PRODUCT: Final = "spot"
ESCROW: Final = escrow(PRODUCT)

SIDES: Final = {"BUY": BUY, "SELL": SELL}
SIDE_NAMES: Final = ("BUY", "SELL")
ORDER_TYPES: Final = frozenset({"LIMIT", "MARKET", "LIMIT_MAKER"})
TIFS: Final = frozenset({"GTC", "IOC", "FOK"})
STP_NAMES: Final = {v: k for k, v in STP_MODES.items()}
MARKET_STATUSES: Final = ("TRADING", "HALTED")
_COID_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.:/_-")

# Journal entry kinds (see `_undo`).
_J_LINK: Final = 0
_J_UNLINK: Final = 1
_J_FILL: Final = 2
_J_OPEN: Final = 3
_J_CLOSE: Final = 4
_J_FIELDS: Final = 5
_J_BOOK: Final = 6
_J_NEXT_ID: Final = 7
_J_MINUTE: Final = 8
_J_MINUTE_PRUNE: Final = 9

# Why matching stopped.
_STOP_DONE: Final = 0
_STOP_STP: Final = 1
_STOP_BUDGET: Final = 2
# The open quantity of an order by quote amount while it matches: its budget stops it first.
_UNBOUNDED: Final = 1 << 62


class BookState(msgspec.Struct, array_like=True):
    symbol: str
    trading: bool
    next_trade_id: int
    update_id: int
    orders: list[OrderView]  # bids best first in queue order, then asks likewise
    hold_ids: list[int]  # each order's ledger hold, in the same order
    minutes: list[list[int]]


class SpotState(msgspec.Struct, array_like=True):
    next_order_id: int
    books: list[BookState]


_STATE_ENCODER = msgspec.msgpack.Encoder(order="deterministic")
_STATE_DECODER = msgspec.msgpack.Decoder(SpotState)


class _Market:
    """A market's config with the hot values unpacked, and its account keys."""

    __slots__ = (
        "base",
        "config",
        "escrow_base",
        "escrow_quote",
        "fees_base",
        "fees_quote",
        "lot",
        "maker_bps",
        "quote",
        "taker_bps",
        "unit",
    )

    def __init__(self, config: SpotMarket) -> None:
        self.config = config
        self.base = config.base
        self.quote = config.quote
        self.lot = config.lot_size
        self.unit = config.quote_per_lot_tick
        self.maker_bps = config.maker_fee_bps
        self.taker_bps = config.taker_fee_bps
        self.escrow_base = (ESCROW, config.base)
        self.escrow_quote = (ESCROW, config.quote)
        self.fees_base = (FEES, config.base)
        self.fees_quote = (FEES, config.quote)


class _Placing:
    """A PlaceOrder between its stages: what validation found, then what its hold needs."""

    __slots__ = (
        "book",
        "expire_only",
        "hold_amount",
        "market",
        "opp_side",
        "pay",
        "pay_asset",
        "side",
        "stp",
        "threshold",
        "tif",
    )

    def __init__(self, market: _Market, book: Book, side: int, tif: str, stp: int) -> None:
        self.market = market
        self.book = book
        self.side = side
        self.tif = tif  # as it applies: MARKET is IOC, LIMIT_MAKER is GTC
        self.stp = stp
        # Set by _check_funds:
        self.opp_side: BookSide = book.asks
        self.threshold = 0
        self.expire_only = False
        self.hold_amount = 0
        self.pay_asset = ""
        self.pay: Account | None = None


class _Amending:
    """A validated AmendOrder: the order, its new price and total quantity, whether it crosses
    the book at that price, and its hold now and as needed."""

    __slots__ = ("book", "crosses", "held", "market", "need", "order", "price", "qty")

    def __init__(
        self,
        market: _Market,
        book: Book,
        order: Order,
        price: int,
        qty: int,
        crosses: bool,
        need: int,
        held: int,
    ) -> None:
        self.market = market
        self.book = book
        self.order = order
        self.price = price
        self.qty = qty
        self.crosses = crosses
        self.need = need
        self.held = held


class SpotProduct:
    name = PRODUCT
    commands: tuple[type[Command], ...] = COMMANDS
    events: tuple[type, ...] = EVENTS
    results: tuple[type[ResultData], ...] = RESULTS
    config_type = SpotConfig
    # Bump when the meaning of a rule changes: `replay --verify` then flags older logs (decision 023).
    rules_version = 1

    def __init__(self, engine: Engine, config: SpotConfig | None = None) -> None:
        self.engine = engine
        self.ledger = engine.ledger
        self.config = config or SpotConfig()
        for m in self.config.markets:
            for asset in (m.base, m.quote):
                assert asset in self.ledger.assets, f"{m.symbol}: the engine has no asset {asset}"
        self.markets = {m.symbol: _Market(m) for m in self.config.markets}
        self.books = {m.symbol: Book(m.symbol) for m in self.config.markets}
        self.orders: dict[int, Order] = {}  # every open (resting) order
        self.by_owner: dict[tuple[str, str], dict[int, Order]] = {}  # (owner, market) -> open orders
        self.by_client_id: dict[tuple[str, str], Order] = {}  # (owner, client order id) -> open order
        self.next_order_id = 1
        self._journal: list[tuple[Any, ...]] = []
        self._undo_callback = self._undo  # one bound method, not one per command
        self._orders_per_owner_max = self.config.orders_per_owner_max
        self._orders_max = self.config.orders_max
        # The C fast path for the common commands (it hands anything unusual to the methods below).
        self.fast: Any = native.spot_fast(self) if engine.native else None

    @classmethod
    def factory(cls, config: SpotConfig | None = None) -> Any:
        return lambda engine: cls(engine, config)

    def configure(self, config: SpotConfig) -> None:
        """Rebuild as if built with `config` (the engine calls this only while the state is as
        built, so there is nothing to carry over)."""
        self.__init__(self.engine, config)  # type: ignore[misc]

    def handlers(self) -> dict[type[Command], Handler]:
        fast = self.fast
        if fast is not None:
            return {
                PlaceOrder: fast.place,
                CancelOrder: fast.cancel,
                CancelAllOrders: self.cancel_all,
                AmendOrder: fast.amend,
                SetMarketStatus: self.set_status,
            }
        return {
            PlaceOrder: self.place,
            CancelOrder: self.cancel,
            CancelAllOrders: self.cancel_all,
            AmendOrder: self.amend,
            SetMarketStatus: self.set_status,
        }

    # ---- place ------------------------------------------------------------------------------------

    def place(self, cmd: PlaceOrder) -> OrderPlaced | Reject:
        """In stages, as exchange-core places: validate -> hold -> match -> report. Nothing
        changes before the hold; from there on every change is journaled."""
        p = self._validate_place(cmd)
        if isinstance(p, Reject):
            return p
        short = self._check_funds(cmd, p)
        if short is not None:
            return short
        order = self._open_order(cmd, p)
        if p.expire_only:  # a FOK that cannot fill: no trace
            order.remaining = 0
            order.status = EXPIRED
            view = order_view(order)
            self.engine.emit(SpotOrderUpdated(cmd.seq, "EXPIRED", view))
            return OrderPlaced(view, [])
        if p.hold_amount:  # a market order that will not trade holds (and opens) nothing
            self._hold(cmd, p, order)
        return self._match_and_report(cmd, p, order)

    def _validate_place(self, cmd: PlaceOrder) -> _Placing | Reject:
        """The order's fields, in the order their rejections take precedence."""
        market = self.markets.get(cmd.market)
        if market is None:
            return Reject(codes.UNKNOWN_MARKET, cmd.market)
        book = self.books[cmd.market]
        if not book.trading:
            return Reject(codes.MARKET_HALTED, cmd.market)
        owner = cmd.owner
        if not owner or owner[0] == "@" or len(owner) > OWNER_LENGTH_MAX:
            return Reject(codes.BAD_OWNER)
        side = SIDES.get(cmd.side)
        if side is None:
            return Reject(codes.BAD_SIDE, "BUY or SELL")
        order_type = cmd.order_type
        if order_type not in ORDER_TYPES:
            return Reject(codes.BAD_ORDER_TYPE, "LIMIT, MARKET or LIMIT_MAKER")
        tif = cmd.tif
        if order_type != "LIMIT":
            tif = "GTC" if order_type == "LIMIT_MAKER" else "IOC"
        elif tif not in TIFS:
            return Reject(codes.BAD_TIME_IN_FORCE, "GTC, IOC or FOK")
        stp = STP_MODES.get(cmd.stp)
        if stp is None:
            return Reject(codes.BAD_STP_MODE, "EXPIRE_TAKER, EXPIRE_MAKER or EXPIRE_BOTH")
        if cmd.client_order_id:
            bad = self._check_client_order_id(owner, cmd.client_order_id)
            if bad is not None:
                return bad
        bad = self._check_size(cmd, market, book, side)
        if bad is not None:
            return bad
        if tif == "GTC":  # it may rest: room for one more open order
            owned = self.by_owner.get((owner, cmd.market))
            if owned is not None and len(owned) >= self._orders_per_owner_max:
                return Reject(codes.TOO_MANY_ORDERS, f"at most {self._orders_per_owner_max} open per market")
            if len(self.orders) >= self._orders_max:
                return Reject(codes.TOO_MANY_ORDERS, "the engine is full")
        return _Placing(market, book, side, tif, stp)

    def _check_size(self, cmd: PlaceOrder, market: _Market, book: Book, side: int) -> Reject | None:
        """Price and quantity against the market's limits (a MARKET order's price is a bound)."""
        cfg = market.config
        price = cmd.price_ticks
        qty = cmd.qty_lots
        quote_qty = cmd.quote_qty
        unit = market.unit
        if cmd.order_type == "MARKET":
            if not 0 <= price <= cfg.max_price_ticks:
                return Reject(codes.BAD_PRICE, f"protection price 0..{cfg.max_price_ticks} ticks")
            if (qty > 0) == (quote_qty > 0) or qty < 0 or quote_qty < 0:
                return Reject(codes.BAD_QUANTITY, "a MARKET order has a quantity or a quote amount")
            if qty and not cfg.min_qty_lots <= qty <= cfg.max_qty_lots:
                return Reject(codes.BAD_QUANTITY, f"{cfg.min_qty_lots}..{cfg.max_qty_lots} lots")
            if quote_qty and quote_qty < cfg.min_notional:
                return Reject(codes.BELOW_MIN_NOTIONAL, f"at least {cfg.min_notional}")
            if quote_qty > cfg.max_qty_lots * cfg.max_price_ticks * unit:
                return Reject(codes.BAD_QUANTITY, "quote amount above the market's maximum")
            return None
        if not 0 < price <= cfg.max_price_ticks:
            return Reject(codes.BAD_PRICE, f"1..{cfg.max_price_ticks} ticks")
        if quote_qty:
            return Reject(codes.BAD_QUANTITY, "a quote amount is for MARKET orders")
        if not cfg.min_qty_lots <= qty <= cfg.max_qty_lots:
            return Reject(codes.BAD_QUANTITY, f"{cfg.min_qty_lots}..{cfg.max_qty_lots} lots")
        if qty * price * unit < cfg.min_notional:
            return Reject(codes.BELOW_MIN_NOTIONAL, f"price x quantity below {cfg.min_notional}")
        if cmd.order_type == "LIMIT_MAKER" and _crosses(book, side, price):
            return Reject(codes.WOULD_TAKE, "post-only order would match")
        return None

    def _check_funds(self, cmd: PlaceOrder, p: _Placing) -> Reject | None:
        """What the order must hold, and whether its owner has it (fills `p`)."""
        market, side = p.market, p.side
        price, qty, quote_qty = cmd.price_ticks, cmd.qty_lots, cmd.quote_qty
        unit = market.unit
        # The threshold key: a taker matches resting orders whose key is >= it (see book.py).
        p.opp_side = p.book.asks if side == BUY else p.book.bids
        p.threshold = (-price if side == BUY else price) if price else -(1 << 62)
        if cmd.order_type == "MARKET" or p.tif == "FOK":
            lots, cost = _walk(p.opp_side, cmd.owner, p.threshold, qty, quote_qty, p.stp, unit)
            if p.tif == "FOK":
                p.expire_only = lots < qty
                p.hold_amount = qty * price * unit if side == BUY else qty * market.lot
            else:
                # Exactly what the walk found it will cost (possibly nothing).
                p.hold_amount = cost if side == BUY else lots * market.lot
        else:
            p.hold_amount = qty * price * unit if side == BUY else qty * market.lot
        p.pay_asset = market.quote if side == BUY else market.base
        pay = p.pay = self.ledger.by_key.get((cmd.owner, p.pay_asset))
        need = p.hold_amount
        if (
            need
            and not p.expire_only
            and (pay is None or pay.credits_posted - pay.debits_posted - pay.debits_pending < need)
        ):
            return Reject(codes.INSUFFICIENT_FUNDS, f"{p.pay_asset} available is below {need}")
        return None

    def _open_order(self, cmd: PlaceOrder, p: _Placing) -> Order:
        """Validated: the journal starts and the order gets its id."""
        journal = self._journal
        journal.clear()
        self.engine.on_rollback(self._undo_callback)
        journal.append((_J_NEXT_ID, self.next_order_id))
        order = Order(
            self.next_order_id,
            cmd.market,
            cmd.owner,
            cmd.client_order_id,
            p.side,
            cmd.order_type,
            p.tif,
            p.stp,
            cmd.price_ticks,
            cmd.qty_lots,
            cmd.quote_qty,
            cmd.seq,
            cmd.ts_ns,
        )
        self.next_order_id += 1
        return order

    def _hold(self, cmd: PlaceOrder, p: _Placing, order: Order) -> None:
        """Move what the order may spend to escrow, pending (opening the accounts a fill pays)."""
        market, ledger = p.market, self.ledger
        receive_asset = market.base if p.side == BUY else market.quote
        for key in (
            (cmd.owner, receive_asset),
            market.escrow_base,
            market.escrow_quote,
            market.fees_base,
            market.fees_quote,
        ):
            if key not in ledger.by_key:
                opened = ledger.open_account(key[0], key[1])
                assert isinstance(opened, Account), opened
        assert p.pay is not None
        escrow_acc = ledger.by_key[(ESCROW, p.pay_asset)]
        held = ledger.move(p.pay, escrow_acc, p.hold_amount, "hold", cmd.seq, pending=True)
        assert not isinstance(held, str), held
        order.hold_id = held.id

    def _match_and_report(self, cmd: PlaceOrder, p: _Placing, order: Order) -> OrderPlaced:
        """Match against the book, rest or close what is left, report the order and its trades."""
        seq, ts_ns, quote_qty = cmd.seq, cmd.ts_ns, cmd.quote_qty
        trades: list[SpotTrade] = []
        if quote_qty:
            order.remaining = _UNBOUNDED  # the budget stops it
        elif p.tif == "GTC" and not (p.opp_side.keys and p.opp_side.keys[-1] >= p.threshold):
            # Nothing to match (the common new order): straight onto the book, its hold exact.
            self._rest(p.book, order, seq)
            view = order_view(order)
            self.engine.emit(SpotOrderUpdated(seq, "NEW", view))
            return OrderPlaced(view, trades)
        stop = self._match(p.book, p.market, order, p.threshold, quote_qty, seq, ts_ns, trades)
        self._finish(p.book, p.market, order, stop == _STOP_STP, seq, ts_ns)
        if quote_qty:
            order.qty = order.executed
            if stop == _STOP_BUDGET and order.executed:
                order.status = FILLED
        view = order_view(order)
        self.engine.emit(SpotOrderUpdated(seq, "TRADE" if trades else "NEW", view))
        return OrderPlaced(view, trades)

    def _check_client_order_id(self, owner: str, coid: str) -> Reject | None:
        if len(coid) > self.config.client_order_id_length_max or not _COID_CHARS.issuperset(coid):
            return Reject(codes.BAD_CLIENT_ORDER_ID, "1..36 of A-Z a-z 0-9 . : / _ -")
        if (owner, coid) in self.by_client_id:
            return Reject(codes.DUPLICATE_CLIENT_ORDER_ID, coid)
        return None

    # ---- matching ---------------------------------------------------------------------------------

    def _match(
        self,
        book: Book,
        market: _Market,
        taker: Order,
        threshold: int,
        budget: int,
        seq: int,
        ts_ns: int,
        trades: list[SpotTrade],
    ) -> int:
        """Match `taker` against the opposite side down to `threshold` (and within `budget`
        quote units, when not 0); returns why it stopped: _STOP_STP when self-trade prevention
        expired the taker, _STOP_BUDGET when the budget cannot pay another lot, else _STOP_DONE."""
        opp = book.asks if taker.side == BUY else book.bids
        keys = opp.keys
        levels = opp.levels
        owner = taker.owner
        unit = market.unit
        while taker.remaining and keys:
            key = keys[-1]
            if key < threshold:
                break
            level = levels[key]
            maker = level.head
            while maker is not None and taker.remaining:
                nxt = maker.next
                lots = taker.remaining if taker.remaining < maker.remaining else maker.remaining
                if budget:
                    # Checked before self-trade prevention: an order the budget could not trade
                    # with is not a self-trade.
                    affordable = (budget - taker.executed_quote) // (level.price * unit)
                    if affordable == 0:
                        return _STOP_BUDGET
                    if affordable < lots:
                        lots = affordable
                if maker.owner == owner:
                    mode = taker.stp
                    if mode != STP_EXPIRE_TAKER:
                        self._close_resting(book, opp, maker, EXPIRED_IN_MATCH, "EXPIRED", seq, ts_ns)
                    if mode != STP_EXPIRE_MAKER:
                        return _STOP_STP
                else:
                    self._fill(book, opp, market, taker, maker, lots, seq, ts_ns, trades)
                    if budget and maker.remaining:
                        return _STOP_BUDGET  # it could not pay for all of this order
                maker = nxt
        if budget and taker.executed_quote == budget:
            return _STOP_BUDGET
        return _STOP_DONE

    def _fill(
        self,
        book: Book,
        opp: BookSide,
        market: _Market,
        taker: Order,
        maker: Order,
        lots: int,
        seq: int,
        ts_ns: int,
        trades: list[SpotTrade],
    ) -> None:
        """One trade of `lots` between the taker and a resting maker: paid, booked, reported."""
        price = maker.price
        quote = lots * price * market.unit
        buyer_fee, seller_fee = self._settle(market, taker, maker, lots * market.lot, quote, seq)
        journal = self._journal
        journal.append((_J_FILL, taker, lots, quote, taker.status, taker.updated_seq, taker.updated_ts_ns))
        journal.append((_J_FILL, maker, lots, quote, maker.status, maker.updated_seq, maker.updated_ts_ns))
        taker.remaining -= lots
        taker.executed += lots
        taker.executed_quote += quote
        maker.remaining -= lots
        maker.executed += lots
        maker.executed_quote += quote
        maker.level.qty -= lots  # type: ignore[union-attr]
        maker.updated_seq = seq
        maker.updated_ts_ns = ts_ns
        if book.update_id != seq:
            journal.append((_J_BOOK, book, book.next_trade_id, book.update_id))
            book.update_id = seq
        trade_id = book.next_trade_id
        book.next_trade_id = trade_id + 1
        self._record(book, ts_ns, price, lots, quote, trade_id)
        if maker.remaining:
            maker.status = PARTIALLY_FILLED
        else:
            maker.status = FILLED
            journal.append((_J_UNLINK, maker, opp.unlink(maker)))
            self._forget(maker)
        trade = SpotTrade(
            seq,
            ts_ns,
            book.symbol,
            trade_id,
            price,
            lots,
            quote,
            SIDE_NAMES[taker.side],
            taker.id,
            taker.owner,
            maker.id,
            maker.owner,
            maker.remaining,
            maker.status,
            buyer_fee,
            seller_fee,
        )
        trades.append(trade)
        self.engine.emit(trade)

    def _settle(
        self, market: _Market, taker: Order, maker: Order, base: int, quote: int, seq: int
    ) -> tuple[int, int]:
        """The money of one trade: both holds post their part into escrow, which pays each side
        what it receives less its fee (taker or maker rate, floored). (buyer fee, seller fee)."""
        if taker.side == BUY:
            buyer, seller = taker, maker
            buyer_bps, seller_bps = market.taker_bps, market.maker_bps
        else:
            buyer, seller = maker, taker
            buyer_bps, seller_bps = market.maker_bps, market.taker_bps
        buyer_fee = base * buyer_bps // BPS
        seller_fee = quote * seller_bps // BPS
        ledger = self.ledger
        by_key = ledger.by_key
        resolve = ledger.resolve_part
        out: Any = resolve(seller.hold_id, base, seq, post=True, forget=True)
        assert not isinstance(out, str), out
        out = resolve(buyer.hold_id, quote, seq, post=True, forget=True)
        assert not isinstance(out, str), out
        move = ledger.move
        escrow_base = by_key[market.escrow_base]
        escrow_quote = by_key[market.escrow_quote]
        if base > buyer_fee:
            out = move(escrow_base, by_key[(buyer.owner, market.base)], base - buyer_fee, "trade", seq)
            assert not isinstance(out, str), out
        if buyer_fee:
            out = move(escrow_base, by_key[market.fees_base], buyer_fee, "fee", seq)
            assert not isinstance(out, str), out
        if quote > seller_fee:
            out = move(escrow_quote, by_key[(seller.owner, market.quote)], quote - seller_fee, "trade", seq)
            assert not isinstance(out, str), out
        if seller_fee:
            out = move(escrow_quote, by_key[market.fees_quote], seller_fee, "fee", seq)
            assert not isinstance(out, str), out
        return buyer_fee, seller_fee

    def _record(self, book: Book, ts_ns: int, price: int, lots: int, quote: int, trade_id: int) -> None:
        """Add a trade to its minute (engine time) and keep only the last 24 h of minutes."""
        ms = ts_ns // 1_000_000
        minute = ms - ms % MINUTE_MS
        minutes = book.minutes
        journal = self._journal
        last = minutes[-1] if minutes else None
        if last is not None and last[0] == minute:
            journal.append((_J_MINUTE, book, last[:]))
            if price > last[2]:
                last[2] = price
            if price < last[3]:
                last[3] = price
            last[4] = price
            last[5] += lots
            last[6] += quote
            last[7] += 1
            last[9] = trade_id
            return
        minutes.append([minute, price, price, price, price, lots, quote, 1, trade_id, trade_id])
        journal.append((_J_MINUTE, book, None))
        cutoff = minute - DAY_MS
        while minutes[0][0] <= cutoff:
            journal.append((_J_MINUTE_PRUNE, book, minutes.popleft()))

    def _finish(
        self, book: Book, market: _Market, order: Order, stp_stop: bool, seq: int, ts_ns: int
    ) -> None:
        """After matching: rest the order (its hold trimmed to what the rest needs) or close it
        (its hold released)."""
        order.updated_seq = seq
        order.updated_ts_ns = ts_ns
        if order.remaining == 0:
            order.status = FILLED
        elif stp_stop:
            order.status = EXPIRED_IN_MATCH
        elif order.tif != "GTC":
            order.status = EXPIRED
        else:
            order.status = PARTIALLY_FILLED if order.executed else NEW
            if order.side == BUY:
                hold = self.ledger.holds[order.hold_id]
                surplus = hold.amount - order.remaining * order.price * market.unit
                if surplus:
                    out = self.ledger.resolve_part(order.hold_id, surplus, seq, post=False, forget=True)
                    assert not isinstance(out, str), out
            self._rest(book, order, seq)
            return
        order.remaining = 0
        rest = self.ledger.holds.get(order.hold_id)
        if rest is not None and rest.amount:
            out = self.ledger.resolve_part(order.hold_id, rest.amount, seq, post=False, forget=True)
            assert not isinstance(out, str), out

    def _rest(self, book: Book, order: Order, seq: int) -> None:
        journal = self._journal
        if book.update_id != seq:
            journal.append((_J_BOOK, book, book.next_trade_id, book.update_id))
            book.update_id = seq
        book.side(order.side).append(order)
        journal.append((_J_LINK, order))
        if order.id not in self.orders:
            self.orders[order.id] = order
            self.by_owner.setdefault((order.owner, order.market), {})[order.id] = order
            if order.client_order_id:
                self.by_client_id[(order.owner, order.client_order_id)] = order
            journal.append((_J_OPEN, order))

    def _forget(self, order: Order) -> None:
        """Drop a closed order from the open-order indexes."""
        del self.orders[order.id]
        key = (order.owner, order.market)
        owned = self.by_owner[key]
        del owned[order.id]
        if not owned:
            del self.by_owner[key]
        if order.client_order_id:
            del self.by_client_id[(order.owner, order.client_order_id)]
        self._journal.append((_J_CLOSE, order))

    def _close_resting(
        self, book: Book, side: BookSide, order: Order, status: str, exec_type: str, seq: int, ts_ns: int
    ) -> OrderView:
        """Cancel or expire a resting order: off the book, hold released, report emitted (and
        returned)."""
        journal = self._journal
        journal.append((_J_FIELDS, order, _fields(order)))
        if book.update_id != seq:
            journal.append((_J_BOOK, book, book.next_trade_id, book.update_id))
            book.update_id = seq
        journal.append((_J_UNLINK, order, side.unlink(order)))
        self._forget(order)
        hold = self.ledger.holds.get(order.hold_id)
        if hold is not None and hold.amount:
            out = self.ledger.resolve_part(order.hold_id, hold.amount, seq, post=False, forget=True)
            assert not isinstance(out, str), out
        order.remaining = 0
        order.status = status
        order.updated_seq = seq
        order.updated_ts_ns = ts_ns
        view = order_view(order)
        self.engine.emit(SpotOrderUpdated(seq, exec_type, view))
        return view

    # ---- cancel, amend, status ----------------------------------------------------------------------

    def _find(self, owner: str, market: str, order_id: int, client_order_id: str) -> Order | Reject:
        if order_id:
            order = self.orders.get(order_id)
        else:
            order = self.by_client_id.get((owner, client_order_id)) if client_order_id else None
        # Someone else's order is "not found": ids are not a way to learn about others.
        if order is None or order.owner != owner or order.market != market:
            return Reject(codes.ORDER_NOT_FOUND, str(order_id or client_order_id))
        return order

    def cancel(self, cmd: CancelOrder) -> OrderView | Reject:
        if cmd.market not in self.markets:
            return Reject(codes.UNKNOWN_MARKET, cmd.market)
        order = self._find(cmd.owner, cmd.market, cmd.order_id, cmd.client_order_id)
        if isinstance(order, Reject):
            return order
        self._journal.clear()
        self.engine.on_rollback(self._undo_callback)
        book = self.books[cmd.market]
        side = book.bids if order.side == BUY else book.asks
        return self._close_resting(book, side, order, CANCELED, "CANCELED", cmd.seq, cmd.ts_ns)

    def cancel_all(self, cmd: CancelAllOrders) -> OrdersCanceled | Reject:
        if cmd.market not in self.markets:
            return Reject(codes.UNKNOWN_MARKET, cmd.market)
        owned = self.by_owner.get((cmd.owner, cmd.market))
        views: list[OrderView] = []
        if owned:
            self._journal.clear()
            self.engine.on_rollback(self._undo_callback)
            book = self.books[cmd.market]
            for order_id in sorted(owned):
                order = owned[order_id]
                side = book.bids if order.side == BUY else book.asks
                views.append(self._close_resting(book, side, order, CANCELED, "CANCELED", cmd.seq, cmd.ts_ns))
        return OrdersCanceled(orders=views)

    def amend(self, cmd: AmendOrder) -> OrderPlaced | Reject:
        """Validate -> re-hold -> (keep its place | requeue and match) -> report."""
        a = self._validate_amend(cmd)
        if isinstance(a, Reject):
            return a
        journal = self._journal
        journal.clear()
        self.engine.on_rollback(self._undo_callback)
        if a.price == a.order.price and a.qty <= a.order.qty:
            return self._amend_in_place(cmd, a)
        return self._amend_requeue(cmd, a)

    def _validate_amend(self, cmd: AmendOrder) -> _Amending | Reject:
        market = self.markets.get(cmd.market)
        if market is None:
            return Reject(codes.UNKNOWN_MARKET, cmd.market)
        book = self.books[cmd.market]
        if not book.trading:
            return Reject(codes.MARKET_HALTED, cmd.market)
        found = (
            self.orders.get(cmd.order_id)
            if cmd.order_id
            else self._find(cmd.owner, cmd.market, 0, cmd.client_order_id)
        )
        if (
            found is None
            or isinstance(found, Reject)
            or found.owner != cmd.owner
            or found.market != cmd.market
        ):
            return Reject(codes.ORDER_NOT_FOUND, str(cmd.order_id or cmd.client_order_id))
        order = found
        cfg = market.config
        price = cmd.price_ticks or order.price
        qty = cmd.qty_lots or order.qty
        if not 0 < price <= cfg.max_price_ticks:
            return Reject(codes.BAD_PRICE, f"1..{cfg.max_price_ticks} ticks")
        if not (cfg.min_qty_lots <= qty <= cfg.max_qty_lots and qty > order.executed):
            return Reject(
                codes.BAD_QUANTITY,
                f"above the filled {order.executed}, {cfg.min_qty_lots}..{cfg.max_qty_lots} lots",
            )
        unit = market.unit
        if qty * price * unit < cfg.min_notional:
            return Reject(codes.BELOW_MIN_NOTIONAL, f"price x quantity below {cfg.min_notional}")
        crosses = _crosses(book, order.side, price)
        if crosses and order.order_type == "LIMIT_MAKER":
            return Reject(codes.WOULD_TAKE, "post-only order would match")
        remaining = qty - order.executed
        need = remaining * price * unit if order.side == BUY else remaining * market.lot
        hold = self.ledger.holds[order.hold_id]
        pay = self.ledger.accounts[hold.debit_account_id]
        if (
            need > hold.amount
            and pay.credits_posted - pay.debits_posted - pay.debits_pending < need - hold.amount
        ):
            return Reject(codes.INSUFFICIENT_FUNDS, f"{pay.asset} available is below {need - hold.amount}")
        return _Amending(market, book, order, price, qty, crosses, need, hold.amount)

    def _amend_in_place(self, cmd: AmendOrder, a: _Amending) -> OrderPlaced:
        """Smaller (or equal) at the same price: keeps its place in the queue."""
        order, book, seq = a.order, a.book, cmd.seq
        if a.qty < order.qty:
            journal = self._journal
            journal.append((_J_FIELDS, order, _fields(order)))
            if book.update_id != seq:
                journal.append((_J_BOOK, book, book.next_trade_id, book.update_id))
                book.update_id = seq
            delta = order.qty - a.qty
            order.qty = a.qty
            order.remaining -= delta
            order.level.qty -= delta  # type: ignore[union-attr]
            order.updated_seq, order.updated_ts_ns = seq, cmd.ts_ns
            out = self.ledger.resolve_part(order.hold_id, a.held - a.need, seq, post=False, forget=True)
            assert not isinstance(out, str), out
        view = order_view(order)
        self.engine.emit(SpotOrderUpdated(seq, "AMENDED", view))
        return OrderPlaced(view, [])

    def _amend_requeue(self, cmd: AmendOrder, a: _Amending) -> OrderPlaced:
        """A new price or a larger quantity: the order leaves the queue and comes back as a taker."""
        order, book, seq, ts_ns = a.order, a.book, cmd.seq, cmd.ts_ns
        journal, ledger = self._journal, self.ledger
        # Unlinked before its fields are saved: the undo restores the old price, then relinks.
        if book.update_id != seq:
            journal.append((_J_BOOK, book, book.next_trade_id, book.update_id))
            book.update_id = seq
        book_side = book.bids if order.side == BUY else book.asks
        journal.append((_J_UNLINK, order, book_side.unlink(order)))
        journal.append((_J_FIELDS, order, _fields(order)))
        if a.need < a.held:
            out = ledger.resolve_part(order.hold_id, a.held - a.need, seq, post=False, forget=True)
            assert not isinstance(out, str), out
        elif a.need > a.held:
            out = ledger.hold_more(order.hold_id, a.need - a.held, seq)
            assert not isinstance(out, str), out
        order.price = a.price
        order.qty = a.qty
        order.remaining = a.qty - order.executed
        order.created_seq, order.created_ts_ns = seq, ts_ns  # its time priority starts now
        trades: list[SpotTrade] = []
        if not a.crosses:
            # The common move: to the back of its new level, nothing to match (its status, open
            # quantity and hold are already right).
            order.updated_seq, order.updated_ts_ns = seq, ts_ns
            book_side.append(order)
            journal.append((_J_LINK, order))
            view = order_view(order)
            self.engine.emit(SpotOrderUpdated(seq, "AMENDED", view))
            return OrderPlaced(view, trades)
        threshold = -a.price if order.side == BUY else a.price
        stop = self._match(book, a.market, order, threshold, 0, seq, ts_ns, trades)
        self._finish(book, a.market, order, stop == _STOP_STP, seq, ts_ns)
        if order.remaining == 0:
            self._forget(order)
        view = order_view(order)
        self.engine.emit(SpotOrderUpdated(seq, "TRADE" if trades else "AMENDED", view))
        return OrderPlaced(view, trades)

    def set_status(self, cmd: SetMarketStatus) -> MarketStatusView | Reject:
        if cmd.market not in self.markets:
            return Reject(codes.UNKNOWN_MARKET, cmd.market)
        if cmd.status not in MARKET_STATUSES:
            return Reject(codes.BAD_MARKET_STATUS, "TRADING or HALTED")
        book = self.books[cmd.market]
        trading = cmd.status == "TRADING"
        if book.trading != trading:
            self.engine.on_rollback(lambda: setattr(book, "trading", not trading))
            book.trading = trading
            self.engine.emit(SpotMarketStatus(cmd.seq, cmd.market, cmd.status))
        return MarketStatusView(market=cmd.market, status=cmd.status)

    # ---- rollback -----------------------------------------------------------------------------------

    def _undo(self) -> None:
        journal = self._journal
        while journal:
            entry = journal.pop()
            kind = entry[0]
            if kind == _J_FILL:
                _, o, lots, quote, status, useq, uts = entry
                o.remaining += lots
                o.executed -= lots
                o.executed_quote -= quote
                o.status, o.updated_seq, o.updated_ts_ns = status, useq, uts
                if o.level is not None:
                    o.level.qty += lots
            elif kind == _J_LINK:
                o = entry[1]
                self.books[o.market].side(o.side).unlink(o)
            elif kind == _J_UNLINK:
                o, prev = entry[1], entry[2]
                self.books[o.market].side(o.side).insert_after(o, prev)
            elif kind == _J_OPEN:
                o = entry[1]
                del self.orders[o.id]
                key = (o.owner, o.market)
                del self.by_owner[key][o.id]
                if not self.by_owner[key]:
                    del self.by_owner[key]
                if o.client_order_id:
                    del self.by_client_id[(o.owner, o.client_order_id)]
            elif kind == _J_CLOSE:
                o = entry[1]
                self.orders[o.id] = o
                self.by_owner.setdefault((o.owner, o.market), {})[o.id] = o
                if o.client_order_id:
                    self.by_client_id[(o.owner, o.client_order_id)] = o
            elif kind == _J_FIELDS:
                o, fields = entry[1], entry[2]
                level = o.level
                if level is not None:
                    level.qty += fields[2] - o.remaining
                (
                    o.price,
                    o.qty,
                    o.remaining,
                    o.executed,
                    o.executed_quote,
                    o.hold_id,
                    o.status,
                    o.created_seq,
                    o.created_ts_ns,
                    o.updated_seq,
                    o.updated_ts_ns,
                ) = fields
            elif kind == _J_MINUTE:
                minutes, saved = entry[1].minutes, entry[2]
                if saved is None:
                    minutes.pop()
                else:
                    minutes[-1][:] = saved
            elif kind == _J_MINUTE_PRUNE:
                entry[1].minutes.appendleft(entry[2])
            elif kind == _J_BOOK:
                book = entry[1]
                book.next_trade_id, book.update_id = entry[2], entry[3]
            else:
                assert kind == _J_NEXT_ID
                self.next_order_id = entry[1]

    # ---- queries (read-only; the API and the gateway use them on replicas) ------------------------

    def open_orders_of(self, owner: str, market: str | None = None) -> list[OrderView]:
        """The owner's open orders, oldest id first (one market or all)."""
        out: list[OrderView] = []
        for symbol in [market] if market else sorted(self.markets):
            owned = self.by_owner.get((owner, symbol))
            if owned:
                out.extend(order_view(owned[i]) for i in sorted(owned))
        return out

    def locked(self, owner: str) -> dict[str, int]:
        """What the owner's open orders hold, per asset (Binance's `locked`)."""
        out: dict[str, int] = {}
        holds = self.ledger.holds
        for (who, symbol), owned in self.by_owner.items():
            if who != owner:
                continue
            market = self.markets[symbol]
            for order in owned.values():
                asset = market.quote if order.side == BUY else market.base
                out[asset] = out.get(asset, 0) + holds[order.hold_id].amount
        return out

    # ---- invariants and reconciliation ----------------------------------------------------------------

    def reconcile(self) -> list[Check]:
        """Per asset: the spot escrow holds nothing posted, and its pending credits are exactly
        what the open orders need."""
        needed: dict[str, int] = {}
        for order in self.orders.values():
            market = self.markets[order.market]
            if order.side == BUY:
                needed[market.quote] = (
                    needed.get(market.quote, 0) + order.remaining * order.price * market.unit
                )
            else:
                needed[market.base] = needed.get(market.base, 0) + order.remaining * market.lot
        checks = []
        assets = sorted({a for m in self.markets.values() for a in (m.base, m.quote)})
        for asset in assets:
            acc = self.ledger.by_key.get((ESCROW, asset))
            posted = 0 if acc is None else acc.credits_posted - acc.debits_posted
            pending = 0 if acc is None else acc.credits_pending
            checks.append(check(f"spot escrow {asset} posted == 0", 0, posted))
            checks.append(
                check(f"spot escrow {asset} held == open orders' needs", needed.get(asset, 0), pending)
            )
        return checks

    def check_invariants(self) -> None:
        """Assert every structural invariant (tests): books uncrossed, level totals and links
        right, indexes complete, every open order's hold equal to what it needs."""
        count = 0
        for symbol, book in self.books.items():
            market = self.markets[symbol]
            if book.bids.keys and book.asks.keys:
                assert book.best_bid() < book.best_ask(), f"{symbol} crossed"
            for side in (book.bids, book.asks):
                assert side.keys == sorted(side.keys) and len(side.keys) == len(side.levels)
                assert set(side.keys) == set(side.levels)
                for key in side.keys:
                    level = side.levels[key]
                    assert level.key == key and level.price * side.sign == key
                    qty = n = 0
                    o = level.head
                    prev = None
                    while o is not None:
                        assert o.prev is prev and o.level is level and o.price == level.price
                        assert o.remaining > 0 and o.status in (NEW, PARTIALLY_FILLED)
                        assert o.executed + o.remaining == o.qty
                        assert self.orders.get(o.id) is o
                        need = (
                            o.remaining * o.price * market.unit if o.side == BUY else o.remaining * market.lot
                        )
                        hold = self.ledger.holds[o.hold_id]
                        assert hold.amount == need, (o, hold.amount, need)
                        qty += o.remaining
                        n += 1
                        prev, o = o, o.next
                    assert level.tail is prev and level.qty == qty and level.count == n > 0
                    count += n
        assert count == len(self.orders)
        assert sum(len(v) for v in self.by_owner.values()) == count
        assert all(c.ok for c in self.reconcile()), self.reconcile()

    # ---- snapshots ------------------------------------------------------------------------------------

    def snapshot_state(self) -> bytes:
        books = []
        for symbol in sorted(self.books):
            book = self.books[symbol]
            resting = book.bids.orders() + book.asks.orders()
            orders = [order_view(o) for o in resting]
            hold_ids = [o.hold_id for o in resting]
            minutes = [list(m) for m in book.minutes]
            books.append(
                BookState(symbol, book.trading, book.next_trade_id, book.update_id, orders, hold_ids, minutes)
            )
        return _STATE_ENCODER.encode(SpotState(self.next_order_id, books))

    def restore_state(self, data: bytes) -> None:
        state = _STATE_DECODER.decode(data)
        self.next_order_id = state.next_order_id
        self.books = {m: Book(m) for m in self.markets}
        self.orders = {}
        self.by_owner = {}
        self.by_client_id = {}
        self._journal.clear()
        for bs in state.books:
            book = self.books[bs.symbol]
            book.trading, book.next_trade_id, book.update_id = bs.trading, bs.next_trade_id, bs.update_id
            book.minutes.extend(bs.minutes)
            for v, hold_id in zip(bs.orders, bs.hold_ids, strict=True):
                o = Order(
                    v.order_id,
                    v.market,
                    v.owner,
                    v.client_order_id,
                    SIDES[v.side],
                    v.order_type,
                    v.tif,
                    STP_MODES[v.stp],
                    v.price_ticks,
                    v.qty_lots,
                    v.quote_qty,
                    v.created_seq,
                    v.created_ts_ns,
                )
                o.remaining, o.executed, o.executed_quote = (
                    v.remaining_lots,
                    v.executed_lots,
                    v.executed_quote,
                )
                o.hold_id, o.status = hold_id, v.status
                o.updated_seq, o.updated_ts_ns = v.updated_seq, v.updated_ts_ns
                book.side(o.side).append(o)
                self.orders[o.id] = o
                self.by_owner.setdefault((o.owner, o.market), {})[o.id] = o
                if o.client_order_id:
                    self.by_client_id[(o.owner, o.client_order_id)] = o
        if self.fast is not None:
            self.fast.rebind()


def _crosses(book: Book, side: int, price: int) -> bool:
    """Would an order at `price` on `side` match the opposite side's best price?"""
    if side == BUY:
        keys = book.asks.keys
        return bool(keys) and -keys[-1] <= price
    keys = book.bids.keys
    return bool(keys) and keys[-1] >= price


def _walk(
    opp: BookSide, owner: str, threshold: int, qty: int, budget: int, stp: int, unit: int
) -> tuple[int, int]:
    """Dry run of a taker against `opp` with the rules of `_match`: (lots it would fill, quote
    it would cost). Reads only."""
    lots = cost = 0
    levels = opp.levels
    for key in reversed(opp.keys):
        if key < threshold:
            break
        level = levels[key]
        price = level.price
        o = level.head
        while o is not None:
            take = o.remaining
            if qty and qty - lots < take:
                take = qty - lots
            if budget:
                affordable = (budget - cost) // (price * unit)
                if affordable == 0:
                    return lots, cost
                take = min(take, affordable)
            if o.owner == owner:
                if stp != STP_EXPIRE_MAKER:
                    return lots, cost
            else:
                lots += take
                cost += take * price * unit
                if qty and lots == qty:
                    return lots, cost
            o = o.next
    return lots, cost


def _fields(o: Order) -> tuple[Any, ...]:
    return (
        o.price,
        o.qty,
        o.remaining,
        o.executed,
        o.executed_quote,
        o.hold_id,
        o.status,
        o.created_seq,
        o.created_ts_ns,
        o.updated_seq,
        o.updated_ts_ns,
    )


def order_view(o: Order) -> OrderView:
    # Positional: built once per command on the hot path (OrderView's fields, in order).
    return OrderView(
        o.id,
        o.market,
        o.owner,
        o.client_order_id,
        SIDE_NAMES[o.side],
        o.order_type,
        o.tif,
        STP_NAMES[o.stp],
        o.price,
        o.qty,
        o.quote_qty,
        o.executed,
        o.executed_quote,
        o.remaining,
        o.status,
        o.created_seq,
        o.created_ts_ns,
        o.updated_seq,
        o.updated_ts_ns,
    )
