"""Product `leverage`: long/short positions with isolated margin on exchange prices.

    PriceTick      the latest bid/ask of a symbol; fires the take-profits, stop-losses and
                   liquidations it crosses (and no other position is looked at)
    OpenPosition   long fills at the ask, short at the bid; margin moves user -> escrow
    ClosePosition  long closes at the bid, short at the ask; escrow/house -> user

Integer arithmetic throughout (prices in each market's price units, money in USDC minor units):

    notional     = margin * leverage
    pnl          = side * notional * (exit - entry) // entry      (floor: rounds toward the house)
    payout       = max(0, margin + pnl)                            (a loss never exceeds the margin)
    liquidation  long:  bid <= ceil(entry * (L - 1) * 10^4 / (L * (10^4 - mmr_bps)))
                 short: ask >= floor(entry * (L + 1) * 10^4 / (L * (10^4 + mmr_bps)))

The liquidation price is where equity (margin + pnl) falls to the maintenance margin
(mmr * position value): Hyperliquid's `entry * (1 - 1/L) / (1 - mmr)` for longs, rounded so that
liquidation happens no later than the exact price. A liquidated position's margin goes to the
house. A trigger fires at the tick's price (bid for longs, ask for shorts), not at the trigger
price: a gap through a stop is filled at the market, as on an exchange.

An instruction executes at the latest price before it in the log: prices are engine state, set
only by PriceTick commands. A price older than `stale_after_ns` (engine time) refuses trading.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec

from cashmarkets.core import codes
from cashmarkets.core.commands import Command
from cashmarkets.core.ledger import HOUSE, escrow
from cashmarkets.core.reconcile import Check, check
from cashmarkets.core.results import Reject, ResultData

if TYPE_CHECKING:
    from cashmarkets.core.engine import Engine, Handler

PRODUCT: Final = "leverage"
ESCROW: Final = escrow(PRODUCT)
SETTLEMENT_ASSET: Final = "USDC"
BPS: Final = 10_000

Side = Literal["long", "short"]
CloseReason = Literal["user", "take_profit", "stop_loss", "liquidation"]


# ---- configuration ------------------------------------------------------------------------------


class MarketConfig(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str  # "BTC"
    name: str
    feed_symbol: str  # the exchange's symbol, "BTC_USDC_PERP"
    price_decimals: int  # a price of 6543210 with 2 decimals is 65432.10 USDC
    max_leverage: int = 100
    mmr_bps: int = 50  # maintenance margin rate, 0.5 %


DEFAULT_MARKETS: Final = (
    MarketConfig(symbol="BTC", name="Bitcoin", feed_symbol="BTC_USDC_PERP", price_decimals=2),
    MarketConfig(symbol="ETH", name="Ether", feed_symbol="ETH_USDC_PERP", price_decimals=2),
    MarketConfig(symbol="SOL", name="Solana", feed_symbol="SOL_USDC_PERP", price_decimals=4),
)


class LeverageConfig(msgspec.Struct, frozen=True, kw_only=True):
    markets: tuple[MarketConfig, ...] = DEFAULT_MARKETS
    stale_after_ns: int = 10 * 1_000_000_000
    slippage_bps_max: int = 1_000
    margin_max: int = 1_000_000 * 1_000_000  # 1M USDC per position
    positions_per_owner_max: int = 100
    positions_max: int = 1_000_000


# ---- commands, results, events --------------------------------------------------------------------


class PriceTick(Command, tag="price_tick"):
    symbol: str
    bid: int
    ask: int
    bid_qty: int = 0
    ask_qty: int = 0
    exchange_ts_us: int = 0
    update_id: int = 0


class OpenPosition(Command, tag="open_position"):
    owner: str
    symbol: str
    side: str
    margin: int
    leverage: int
    slippage_bps: int = 0
    expected_price: int = 0  # the price the client saw; 0: the latest price
    take_profit: int = 0  # 0: none
    stop_loss: int = 0  # 0: none


class ClosePosition(Command, tag="close_position"):
    owner: str
    position_id: int


class PositionView(ResultData, tag="position"):
    position_id: int
    owner: str
    symbol: str
    side: str
    margin: int
    leverage: int
    notional: int
    entry_price: int
    liquidation_price: int
    take_profit: int
    stop_loss: int
    opened_seq: int
    opened_ts_ns: int


class PositionClosedView(ResultData, tag="position_closed"):
    position_id: int
    symbol: str
    reason: str
    exit_price: int
    pnl: int
    payout: int


class PriceUpdated(msgspec.Struct, tag="price_updated", array_like=True, gc=False):
    seq: int
    symbol: str
    bid: int
    ask: int
    exchange_ts_us: int
    update_id: int


class PositionOpened(msgspec.Struct, tag="position_opened", array_like=True, gc=False):
    seq: int
    position: PositionView


class PositionClosed(msgspec.Struct, tag="position_closed", array_like=True, gc=False):
    seq: int
    position_id: int
    owner: str
    symbol: str
    side: str
    reason: str
    exit_price: int
    pnl: int
    payout: int


# ---- state --------------------------------------------------------------------------------------


class Price(msgspec.Struct, array_like=True, gc=False):
    symbol: str
    bid: int
    ask: int
    bid_qty: int
    ask_qty: int
    exchange_ts_us: int
    update_id: int
    received_ts_ns: int  # engine time of the tick: staleness is judged against engine time


class LeverageState(msgspec.Struct, array_like=True):
    prices: list[Price]
    positions: list[PositionView]
    next_position_id: int


_STATE_ENCODER = msgspec.msgpack.Encoder(order="deterministic")
_STATE_DECODER = msgspec.msgpack.Decoder(LeverageState)

# Heap entry kinds.
_LIQ: Final = 0
_SL: Final = 1
_TP: Final = 2


class _Book:
    """Trigger prices of one symbol, so a tick finds exactly the positions it fires.

    long_down  max-heap of long SL/liquidation prices: fire when bid <= trigger
    long_up    min-heap of long TP prices:            fire when bid >= trigger
    short_up   min-heap of short SL/liquidation:      fire when ask >= trigger
    short_down max-heap of short TP prices:           fire when ask <= trigger
    Entries of closed positions stay until popped (lazy deletion); ties break by position id.
    """

    __slots__ = ("long_down", "long_up", "short_down", "short_up")

    def __init__(self) -> None:
        self.long_down: list[tuple[int, int, int]] = []
        self.long_up: list[tuple[int, int, int]] = []
        self.short_up: list[tuple[int, int, int]] = []
        self.short_down: list[tuple[int, int, int]] = []

    def add(self, p: PositionView) -> None:
        pid = p.position_id
        if p.side == "long":
            if p.liquidation_price > 0:
                heapq.heappush(self.long_down, (-p.liquidation_price, pid, _LIQ))
            if p.stop_loss:
                heapq.heappush(self.long_down, (-p.stop_loss, pid, _SL))
            if p.take_profit:
                heapq.heappush(self.long_up, (p.take_profit, pid, _TP))
        else:
            heapq.heappush(self.short_up, (p.liquidation_price, pid, _LIQ))
            if p.stop_loss:
                heapq.heappush(self.short_up, (p.stop_loss, pid, _SL))
            if p.take_profit:
                heapq.heappush(self.short_down, (-p.take_profit, pid, _TP))

    def fired(self, bid: int, ask: int, open_ids: dict[int, PositionView]) -> set[int]:
        out: set[int] = set()
        heap = self.long_down
        while heap and -heap[0][0] >= bid:
            out.add(heapq.heappop(heap)[1])
        heap = self.long_up
        while heap and heap[0][0] <= bid:
            out.add(heapq.heappop(heap)[1])
        heap = self.short_up
        while heap and heap[0][0] <= ask:
            out.add(heapq.heappop(heap)[1])
        heap = self.short_down
        while heap and -heap[0][0] >= ask:
            out.add(heapq.heappop(heap)[1])
        return {pid for pid in out if pid in open_ids}

    def entries(self) -> int:
        return len(self.long_down) + len(self.long_up) + len(self.short_up) + len(self.short_down)


# ---- the product --------------------------------------------------------------------------------


def liquidation_price(side: str, entry: int, leverage: int, mmr_bps: int) -> int:
    """Where equity reaches the maintenance margin; rounded so liquidation is never late."""
    if side == "long":
        num = entry * (leverage - 1) * BPS
        den = leverage * (BPS - mmr_bps)
        return -(-num // den)  # ceil
    return entry * (leverage + 1) * BPS // (leverage * (BPS + mmr_bps))


def pnl_of(side: str, notional: int, entry: int, exit_price: int) -> int:
    direction = 1 if side == "long" else -1
    return direction * notional * (exit_price - entry) // entry


class LeverageProduct:
    name = PRODUCT
    commands: tuple[type[Command], ...] = (PriceTick, OpenPosition, ClosePosition)
    events: tuple[type, ...] = (PriceUpdated, PositionOpened, PositionClosed)
    results: tuple[type[ResultData], ...] = (PositionView, PositionClosedView)
    config_type = LeverageConfig
    # Bump when the meaning of a rule changes: `replay --verify` then flags older logs (decision 023).
    rules_version = 1

    def __init__(self, engine: Engine, config: LeverageConfig | None = None) -> None:
        self.engine = engine
        self.ledger = engine.ledger
        self.config = config or LeverageConfig()
        self.markets = {m.symbol: m for m in self.config.markets}
        self.prices: dict[str, Price] = {}
        self.positions: dict[int, PositionView] = {}
        self.by_owner: dict[str, set[int]] = {}
        self.books = {symbol: _Book() for symbol in self.markets}
        self.next_position_id = 1

    @classmethod
    def factory(cls, config: LeverageConfig | None = None) -> Any:
        return lambda engine: cls(engine, config)

    def configure(self, config: LeverageConfig) -> None:
        """Rebuild as if built with `config` (the engine calls this only while the state is as
        built, so there is nothing to carry over)."""
        self.__init__(self.engine, config)  # type: ignore[misc]

    def handlers(self) -> dict[type[Command], Handler]:
        return {PriceTick: self.price_tick, OpenPosition: self.open, ClosePosition: self.close}

    # ---- handlers -------------------------------------------------------------------------------

    def price_tick(self, cmd: PriceTick) -> Reject | None:
        market = self.markets.get(cmd.symbol)
        if market is None:
            return Reject(codes.UNKNOWN_SYMBOL, cmd.symbol)
        if not 0 < cmd.bid <= cmd.ask:
            return Reject(codes.BAD_PRICE, "0 < bid <= ask")
        previous = self.prices.get(cmd.symbol)
        if previous is not None and cmd.update_id and cmd.update_id <= previous.update_id:
            return Reject(codes.STALE_UPDATE, f"update {cmd.update_id} <= {previous.update_id}")
        self.prices[cmd.symbol] = Price(
            cmd.symbol,
            cmd.bid,
            cmd.ask,
            cmd.bid_qty,
            cmd.ask_qty,
            cmd.exchange_ts_us,
            cmd.update_id,
            cmd.ts_ns,
        )
        self.engine.on_rollback(lambda: self._restore_price(cmd.symbol, previous))
        self.engine.emit(
            PriceUpdated(cmd.seq, cmd.symbol, cmd.bid, cmd.ask, cmd.exchange_ts_us, cmd.update_id)
        )
        book = self.books[cmd.symbol]
        fired = book.fired(cmd.bid, cmd.ask, self.positions)
        if fired:
            # Popped heap entries cannot be pushed back one by one: a rollback rebuilds the book.
            self.engine.on_rollback(lambda: self._rebuild_book(cmd.symbol))
            for pid in sorted(fired):
                self._settle_trigger(self.positions[pid], cmd.bid, cmd.ask, cmd.seq)
        return None

    def open(self, cmd: OpenPosition) -> PositionView | Reject:
        market = self.markets.get(cmd.symbol)
        if market is None:
            return Reject(codes.UNKNOWN_SYMBOL, cmd.symbol)
        if cmd.side != "long" and cmd.side != "short":
            return Reject(codes.BAD_SIDE, "long or short")
        if not 1 <= cmd.leverage <= market.max_leverage:
            return Reject(codes.BAD_LEVERAGE, f"1..{market.max_leverage}")
        if not 0 < cmd.margin <= self.config.margin_max:
            return Reject(codes.BAD_MARGIN, f"1..{self.config.margin_max} minor units")
        if not 0 <= cmd.slippage_bps <= self.config.slippage_bps_max:
            return Reject(codes.BAD_SLIPPAGE, f"0..{self.config.slippage_bps_max} bps")
        if cmd.owner.startswith("@"):
            return Reject(codes.BAD_OWNER)
        price = self.prices.get(cmd.symbol)
        if price is None:
            return Reject(codes.NO_PRICE, cmd.symbol)
        if cmd.ts_ns - price.received_ts_ns > self.config.stale_after_ns:
            return Reject(codes.STALE_PRICE, f"last {cmd.symbol} price is older than the limit")
        long = cmd.side == "long"
        fill = price.ask if long else price.bid
        if cmd.expected_price < 0 or cmd.take_profit < 0 or cmd.stop_loss < 0:
            return Reject(codes.BAD_PRICE, "prices are positive")
        if cmd.expected_price:
            worst = cmd.expected_price * (BPS + cmd.slippage_bps if long else BPS - cmd.slippage_bps)
            if (fill * BPS > worst) if long else (fill * BPS < worst):
                return Reject(codes.SLIPPAGE_EXCEEDED, f"fill {fill} vs expected {cmd.expected_price}")
        if cmd.take_profit and (cmd.take_profit <= fill if long else cmd.take_profit >= fill):
            return Reject(codes.BAD_TAKE_PROFIT, "take profit must be beyond the fill price")
        if cmd.stop_loss and (cmd.stop_loss >= fill if long else cmd.stop_loss <= fill):
            return Reject(codes.BAD_STOP_LOSS, "stop loss must be on the losing side of the fill price")
        owned = self.by_owner.get(cmd.owner)
        if owned is not None and len(owned) >= self.config.positions_per_owner_max:
            return Reject(codes.TOO_MANY_POSITIONS, f"at most {self.config.positions_per_owner_max} open")
        if len(self.positions) >= self.config.positions_max:
            return Reject(codes.TOO_MANY_POSITIONS, "the engine is full")
        user = self.ledger.by_key.get((cmd.owner, SETTLEMENT_ASSET))
        if user is None:
            return Reject(codes.INSUFFICIENT_FUNDS, "USDC balance is 0")
        escrow_acc = self._system(ESCROW)
        if isinstance(escrow_acc, Reject):
            return escrow_acc
        moved = self.ledger.move(user, escrow_acc, cmd.margin, "margin", cmd.seq)
        if isinstance(moved, str):
            return Reject(moved)
        position = PositionView(
            position_id=self.next_position_id,
            owner=cmd.owner,
            symbol=cmd.symbol,
            side=cmd.side,
            margin=cmd.margin,
            leverage=cmd.leverage,
            notional=cmd.margin * cmd.leverage,
            entry_price=fill,
            liquidation_price=liquidation_price(cmd.side, fill, cmd.leverage, market.mmr_bps),
            take_profit=cmd.take_profit,
            stop_loss=cmd.stop_loss,
            opened_seq=cmd.seq,
            opened_ts_ns=cmd.ts_ns,
        )
        self.next_position_id += 1
        self._insert(position)
        self.engine.on_rollback(lambda: self._remove(position))
        self.books[cmd.symbol].add(position)
        self.engine.emit(PositionOpened(cmd.seq, position))
        return position

    def close(self, cmd: ClosePosition) -> PositionClosedView | Reject:
        position = self.positions.get(cmd.position_id)
        # Someone else's position is "not found": ids are not a way to learn about others.
        if position is None or position.owner != cmd.owner:
            return Reject(codes.POSITION_NOT_FOUND, str(cmd.position_id))
        price = self.prices[position.symbol]
        if cmd.ts_ns - price.received_ts_ns > self.config.stale_after_ns:
            return Reject(codes.STALE_PRICE, f"last {position.symbol} price is older than the limit")
        exit_price = price.bid if position.side == "long" else price.ask
        return self._settle(position, exit_price, "user", cmd.seq)

    # ---- settlement -----------------------------------------------------------------------------

    def _settle_trigger(self, p: PositionView, bid: int, ask: int, seq: int) -> None:
        if p.side == "long":
            exit_price = bid
            liquidated = p.liquidation_price > 0 and bid <= p.liquidation_price
            reason: CloseReason = (
                "liquidation"
                if liquidated
                else "stop_loss"
                if p.stop_loss and bid <= p.stop_loss
                else "take_profit"
            )
        else:
            exit_price = ask
            liquidated = ask >= p.liquidation_price
            reason = (
                "liquidation"
                if liquidated
                else "stop_loss"
                if p.stop_loss and ask >= p.stop_loss
                else "take_profit"
            )
        out = self._settle(p, exit_price, reason, seq)
        assert not isinstance(out, Reject), out

    def _settle(
        self, p: PositionView, exit_price: int, reason: CloseReason, seq: int
    ) -> PositionClosedView | Reject:
        """Pay the position out through the ledger: escrow returns the margin (or what is left of
        it), the house pays a profit or receives a loss. Liquidation: the margin goes to the house."""
        user = self.ledger.by_key[(p.owner, SETTLEMENT_ASSET)]
        escrow_acc = self.ledger.by_key[(ESCROW, SETTLEMENT_ASSET)]
        house = self._system(HOUSE)
        if isinstance(house, Reject):
            return house
        pnl = pnl_of(p.side, p.notional, p.entry_price, exit_price)
        payout = 0 if reason == "liquidation" else max(0, p.margin + pnl)
        # margin = back to the user + to the house; profit beyond the margin comes from the house.
        to_user = min(payout, p.margin)
        legs = []
        if to_user:
            legs.append((escrow_acc, user, to_user, "margin"))
        if p.margin - to_user:
            legs.append((escrow_acc, house, p.margin - to_user, "pnl"))
        if payout > p.margin:
            legs.append((house, user, payout - p.margin, "pnl"))
        for debit, credit, amount, code in legs:
            moved = self.ledger.move(debit, credit, amount, code, seq)
            if isinstance(moved, str):
                return Reject(moved)
        self._remove(p)
        self.engine.on_rollback(lambda: self._insert(p))
        realized = payout - p.margin
        self.engine.emit(
            PositionClosed(
                seq, p.position_id, p.owner, p.symbol, p.side, reason, exit_price, realized, payout
            )
        )
        return PositionClosedView(
            position_id=p.position_id,
            symbol=p.symbol,
            reason=reason,
            exit_price=exit_price,
            pnl=realized,
            payout=payout,
        )

    def reconcile(self) -> list[Check]:
        """The escrow holds exactly the margins of the open positions."""
        acc = self.ledger.by_key.get((ESCROW, SETTLEMENT_ASSET))
        in_escrow = 0 if acc is None else acc.credits_posted - acc.debits_posted
        margins = sum(p.margin for p in self.positions.values())
        return [check("leverage escrow == margins of open positions", margins, in_escrow)]

    # ---- helpers --------------------------------------------------------------------------------

    def _system(self, owner: str) -> Any:
        acc = self.ledger.by_key.get((owner, SETTLEMENT_ASSET))
        if acc is not None:
            return acc
        opened = self.ledger.open_account(owner, SETTLEMENT_ASSET)
        if isinstance(opened, str):
            return Reject(opened)
        return opened

    def _insert(self, p: PositionView) -> None:
        self.positions[p.position_id] = p
        self.by_owner.setdefault(p.owner, set()).add(p.position_id)

    def _remove(self, p: PositionView) -> None:
        del self.positions[p.position_id]
        owned = self.by_owner[p.owner]
        owned.discard(p.position_id)
        if not owned:
            del self.by_owner[p.owner]

    def _restore_price(self, symbol: str, previous: Price | None) -> None:
        if previous is None:
            self.prices.pop(symbol, None)
        else:
            self.prices[symbol] = previous

    def _rebuild_book(self, symbol: str) -> None:
        book = _Book()
        for p in sorted(self.positions.values(), key=lambda p: p.position_id):
            if p.symbol == symbol:
                book.add(p)
        self.books[symbol] = book

    def open_positions_of(self, owner: str) -> list[PositionView]:
        return [self.positions[pid] for pid in sorted(self.by_owner.get(owner, ()))]

    # ---- snapshots ----------------------------------------------------------------------------------

    def snapshot_state(self) -> bytes:
        return _STATE_ENCODER.encode(
            LeverageState(
                prices=[self.prices[s] for s in sorted(self.prices)],
                positions=[self.positions[i] for i in sorted(self.positions)],
                next_position_id=self.next_position_id,
            )
        )

    def restore_state(self, data: bytes) -> None:
        state = _STATE_DECODER.decode(data)
        self.prices = {p.symbol: p for p in state.prices}
        self.positions = {}
        self.by_owner = {}
        for p in state.positions:
            self._insert(p)
        self.next_position_id = state.next_position_id
        for symbol in self.markets:
            self._rebuild_book(symbol)
