"""`cashmarkets bench spot`: one command stream through our order book and its Python peers.

The workload follows exchange-core's single-pair benchmark: 1,000 users, about 1,000 resting
orders over about 750 price levels (integer ticks), then a mix of 9 % GTC limit orders, 3 % IOC,
6 % cancels and 82 % "moves" (amend the price of a resting order; it may cross and trade). A
second variant replaces each move by cancel + new, for peers without amend.

The stream is generated once, with our own book as the simulator that says which orders rest
(so cancels and moves always name a live order), and contains no self-trade: a user never takes
its own order (we would expire it; the peers would trade it), so every engine must end with the
same resting orders. Every engine then runs the identical stream; per-command latency is
`perf_counter_ns` around each call, the same for all.

    cashmarkets          our engine through `Engine.apply`: validation, ledger holds, fees,
                         execution reports and trade events, the dedup table
    cashmarkets_no_events  the same with product events dropped (ledger transfers still made)
    liquibook            C++ (SWIG binding), an order listener in Python keeping order state
    lobby, pyorderbook   pure Python; IOC as limit + cancel of the rest; no amend
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from cashmarkets.core.commands import Deposit
from cashmarkets.core.engine import Engine, EngineConfig
from cashmarkets.core.products.spot import (
    AmendOrder,
    CancelOrder,
    PlaceOrder,
    SpotConfig,
    SpotMarket,
    SpotProduct,
)
from cashmarkets.core.products.spot.book import BUY, Book
from cashmarkets.core.results import Accepted

USERS = 1_000
CENTER = 100_000  # ticks
MARKET = SpotMarket(
    symbol="XBT_USD",
    base="BTC",
    quote="USDC",
    base_decimals=8,
    quote_decimals=6,
    tick_size=10_000,
    lot_size=10_000,
    max_qty_lots=1_000_000,
    max_price_ticks=10_000_000,
    min_notional=1,
    maker_fee_bps=2,
    taker_fee_bps=5,
)
MIX = (("gtc", 9), ("ioc", 3), ("cancel", 6), ("move", 82))

# A stream command: ("new", order_no, user, is_buy, price, qty, ioc) | ("cancel", order_no)
#                   | ("move", order_no, new_price)
Op = tuple[Any, ...]


def _engine() -> Engine:
    config = SpotConfig(markets=(MARKET,), orders_per_owner_max=10_000)
    engine = Engine(EngineConfig(dedup_entries_max=1_000_000), products=[SpotProduct.factory(config)])
    for u in range(USERS):
        for asset in ("BTC", "USDC"):
            cmd = Deposit(command_id=f"fund-{u}-{asset}", owner=f"u{u}", asset=asset, amount=10**15)
            cmd.seq, cmd.ts_ns = engine.seq + 1, engine.seq + 1
            engine.apply(cmd)
    return engine


def _owners_hit(book: Book, is_buy: bool, price: int, qty: int) -> set[str]:
    """Owners of the resting orders a taker (side, price, qty) would meet."""
    opp = book.asks if is_buy else book.bids
    owners: set[str] = set()
    left = qty
    for key in reversed(opp.keys):
        level = opp.levels[key]
        if (is_buy and level.price > price) or (not is_buy and level.price < price):
            break
        o = level.head
        while o is not None and left > 0:
            owners.add(o.owner)
            left -= o.remaining
            o = o.next
        if left <= 0:
            break
    return owners


def generate(commands: int, resting: int = 1_000, seed: int = 1) -> tuple[list[Op], list[Op]]:
    """The stream: `resting` orders to fill the book, then `commands` in the mix; and its
    variant with each move as cancel + new (the same book results: an amended price loses its
    queue place and re-enters like a new order)."""
    rng = random.Random(seed)
    engine = _engine()
    product = engine.products["spot"]
    book: Book = product.books[MARKET.symbol]
    ops: list[Op] = []
    variant: list[Op] = []
    alias: dict[int, int] = {}  # order_no -> its current number in the variant
    counters = {"no": 0, "variant": 0}
    live: list[int] = []  # order numbers resting (as far as the simulator says)
    position: dict[int, int] = {}  # order_no -> index in live

    def sim(cmd: Any) -> Any:
        cmd.seq, cmd.ts_ns = engine.seq + 1, engine.seq + 1
        result, _ = engine.apply(cmd)
        assert isinstance(result, Accepted), result
        return result.data

    def drop(no: int) -> None:
        i = position.pop(no)
        last = live.pop()
        if last != no:
            live[i] = last
            position[last] = i

    def sync(data: Any) -> None:
        # Makers the last command filled leave the live list.
        for trade in data.trades:
            if trade.maker_remaining_lots == 0 and trade.maker_order_id - 1 in position:
                drop(trade.maker_order_id - 1)

    def price_near(is_buy: bool, aggressive: bool) -> int:
        # Resting orders spread over ~750 levels either side of the centre; aggressive ones cross.
        offset = -rng.randrange(0, 40) if aggressive else int(abs(rng.gauss(0, 180))) + 1
        return CENTER - offset if is_buy else CENTER + offset

    def new(is_buy: bool, price: int, ioc: bool) -> None:
        qty = rng.randrange(1, 20)
        for _ in range(50):
            user = f"u{rng.randrange(USERS)}"
            if user not in _owners_hit(book, is_buy, price, qty):
                break
        else:
            return
        no = counters["no"]
        counters["no"] += 1
        cmd = PlaceOrder(
            command_id=f"g{no}",
            owner=user,
            market=MARKET.symbol,
            side="BUY" if is_buy else "SELL",
            tif="IOC" if ioc else "GTC",
            price_ticks=price,
            qty_lots=qty,
        )
        data = sim(cmd)
        assert data.order.order_id == no + 1
        ops.append(("new", no, user, is_buy, price, qty, ioc))
        alias[no] = counters["variant"]
        variant.append(("new", counters["variant"], user, is_buy, price, qty, ioc))
        counters["variant"] += 1
        sync(data)
        if data.order.remaining_lots and not ioc:
            position[no] = len(live)
            live.append(no)

    while counters["no"] < resting:
        is_buy = rng.random() < 0.5
        new(is_buy, price_near(is_buy, False), False)
    names = [name for name, weight in MIX for _ in range(weight)]
    while len(ops) < resting + commands:
        kind = rng.choice(names)
        # Hold the book near its size, as exchange-core's generator does: more new orders when it
        # shrinks, more cancels when it grows.
        if kind == "gtc" and len(live) > resting * 1.1:
            kind = "cancel"
        elif kind == "cancel" and len(live) < resting * 0.9:
            kind = "gtc"
        is_buy = rng.random() < 0.5
        if kind == "gtc" or not live:
            new(is_buy, price_near(is_buy, rng.random() < 0.1), False)
        elif kind == "ioc":
            new(is_buy, price_near(is_buy, True), True)
        elif kind == "cancel":
            no = live[rng.randrange(len(live))]
            owner = product.orders[no + 1].owner
            sim(CancelOrder(command_id=f"x{len(ops)}", owner=owner, market=MARKET.symbol, order_id=no + 1))
            drop(no)
            ops.append(("cancel", no))
            variant.append(("cancel", alias[no]))
        else:
            no = live[rng.randrange(len(live))]
            order = product.orders[no + 1]
            buy = order.side == BUY
            new_price = order.price + rng.choice((-1, 1)) * rng.randrange(1, 12)
            if new_price <= 0 or order.owner in _owners_hit(book, buy, new_price, order.remaining):
                continue
            remaining = order.remaining
            data = sim(
                AmendOrder(
                    command_id=f"m{len(ops)}",
                    owner=order.owner,
                    market=MARKET.symbol,
                    order_id=no + 1,
                    price_ticks=new_price,
                )
            )
            ops.append(("move", no, new_price))
            variant.append(("cancel", alias[no]))
            alias[no] = counters["variant"]
            variant.append(("new", counters["variant"], order.owner, buy, new_price, remaining, False))
            counters["variant"] += 1
            sync(data)
            if data.order.remaining_lots == 0 and no in position:
                drop(no)
    return ops, variant


# ---- engines ------------------------------------------------------------------------------------


class Ours:
    name = "cashmarkets"

    def __init__(self, events: bool = True) -> None:
        self.engine = _engine()
        if not events:
            self.name = "cashmarkets_no_events"
            self.engine.emit = lambda event: None  # type: ignore[method-assign]
            fast = self.engine.products["spot"].fast
            if fast is not None:  # the C path appends its events itself
                fast.emit = False
        self.owner: dict[int, str] = {}

    def prepare(self, ops: list[Op]) -> list[Any]:
        """Commands built before the clock starts (clients build them, not the engine)."""
        out: list[Any] = []
        first = self.engine.seq  # command ids stay unique across calls (the engine dedups them)
        owner = self.owner
        remaining: dict[int, int] = {}
        for i, op in enumerate(ops):
            kind = op[0]
            if kind == "new":
                _, no, user, is_buy, price, qty, ioc = op
                owner[no] = user
                remaining[no] = qty
                out.append(
                    PlaceOrder(
                        command_id=f"b{first + i}",
                        owner=user,
                        market=MARKET.symbol,
                        side="BUY" if is_buy else "SELL",
                        tif="IOC" if ioc else "GTC",
                        price_ticks=price,
                        qty_lots=qty,
                    )
                )
            elif kind == "cancel":
                out.append(
                    CancelOrder(
                        command_id=f"b{first + i}",
                        owner=owner[op[1]],
                        market=MARKET.symbol,
                        order_id=op[1] + 1,
                    )
                )
            else:
                out.append(
                    AmendOrder(
                        command_id=f"b{first + i}",
                        owner=owner[op[1]],
                        market=MARKET.symbol,
                        order_id=op[1] + 1,
                        price_ticks=op[2],
                    )
                )
        return out

    def runner(self, ops: list[Op]) -> tuple[list[Any], Callable[[Any], object]]:
        engine = self.engine
        apply = engine.apply
        commands = self.prepare(ops)
        base = engine.seq
        for i, cmd in enumerate(commands):
            cmd.seq = base + i + 1
            cmd.ts_ns = base + i + 1
        return commands, apply

    def resting(self) -> int:
        return len(self.engine.products["spot"].orders)


class Liquibook:
    name = "liquibook"

    def __init__(self) -> None:
        import liquibook as lb

        class Listener(lb.OrderListener):  # type: ignore[misc]
            def __init__(self) -> None:
                lb.OrderListener.__init__(self)

            def on_accept(self, order: Any) -> None:
                order.accept()

            def on_reject(self, order: Any, reason: Any) -> None:
                pass

            def on_cancel(self, order: Any) -> None:
                order.cancel()

            def on_cancel_reject(self, order: Any, reason: Any) -> None:
                pass

            def on_replace(self, order: Any, size_delta: int, new_price: int) -> None:
                order.replace(size_delta, new_price)

            def on_replace_reject(self, order: Any, reason: Any) -> None:
                pass

            def on_fill(self, passive: Any, aggressive: Any, qty: int, cost: int) -> None:
                passive.fill(qty, cost, 0)
                aggressive.fill(qty, cost, 0)

        self.lb = lb
        self.listener = Listener()
        self.book = lb.liquibook_book_OrderBook()
        self.book.set_order_listener(self.listener)
        self.orders: dict[int, Any] = {}

    def runner(self, ops: list[Op]) -> tuple[list[Any], Callable[[Any], object]]:
        lb, book, orders = self.lb, self.book, self.orders
        add, cancel, replace = book.add, book.cancel, book.replace
        ioc, plain = lb.oc_immediate_or_cancel, lb.oc_no_conditions
        simple = lb.SimpleOrder

        def run(op: Op) -> object:
            kind = op[0]
            if kind == "new":
                order = simple(op[3], op[4], op[5])
                orders[op[1]] = order
                return add(order, ioc if op[6] else plain)
            if kind == "cancel":
                return cancel(orders[op[1]])
            return replace(orders[op[1]], 0, op[2])

        return ops, run

    def resting(self) -> int:
        return int(self.book.bids().size() + self.book.asks().size())


class Lobby:
    name = "lobby"

    def __init__(self) -> None:
        from lobby.orderbook import OrderBook

        self.book = OrderBook(price_digits=0)
        self.ids: dict[int, tuple[str, int]] = {}  # order_no -> (side, lobby id)

    def runner(self, ops: list[Op]) -> tuple[list[Any], Callable[[Any], object]]:
        book, ids = self.book, self.ids
        process, cancel_order = book.processOrder, book.cancelOrder

        def run(op: Op) -> object:
            if op[0] == "new":
                _, no, user, is_buy, price, qty, ioc = op
                side = "bid" if is_buy else "ask"
                quote = {"type": "limit", "side": side, "qty": qty, "price": price, "tid": user}
                trades, resting = process(quote, False, False)
                if resting is not None:
                    if ioc:  # no IOC in lobby: cancel what rests
                        cancel_order(side, resting["idNum"])
                    else:
                        ids[no] = (side, resting["idNum"])
                return trades
            side, lobby_id = ids.pop(op[1], ("", 0))
            if side:
                cancel_order(side, lobby_id)
            return None

        return ops, run

    def resting(self) -> int:
        return int(len(self.book.bids.orderMap) + len(self.book.asks.orderMap))


class PyOrderBook:
    name = "pyorderbook"

    def __init__(self) -> None:
        import pyorderbook

        self.lib = pyorderbook
        self.book = pyorderbook.Book()
        self.orders: dict[int, Any] = {}

    def runner(self, ops: list[Op]) -> tuple[list[Any], Callable[[Any], object]]:
        lib, book, orders = self.lib, self.book, self.orders
        bid, ask, match, cancel = lib.bid, lib.ask, book.match, book.cancel

        def run(op: Op) -> object:
            if op[0] == "new":
                _, no, _user, is_buy, price, qty, ioc = op
                order = (bid if is_buy else ask)("X", price, qty)
                blotter = match(order)
                if order.quantity:
                    if ioc:  # no IOC in pyorderbook: cancel what rests
                        cancel(order)
                    else:
                        orders[no] = order
                return blotter
            order = orders.pop(op[1], None)
            if order is not None and order.quantity and order.id in book.order_map:
                cancel(order)
            return None

        return ops, run

    def resting(self) -> int:
        return len(self.book.order_map)


# ---- running ------------------------------------------------------------------------------------


def _measure(commands: list[Any], call: Callable[[Any], object], operations: int) -> dict[str, float]:
    gc.collect()
    gc.disable()
    lat: list[int] = []
    append = lat.append
    clock = time.perf_counter_ns
    try:
        start = clock()
        for cmd in commands:
            t0 = clock()
            call(cmd)
            append(clock() - t0)
        total_ns = clock() - start
    finally:
        gc.enable()
    lat.sort()
    n = len(lat)
    return {
        "commands": n,
        "seconds": round(total_ns / 1e9, 4),
        "commands_per_s": round(n / (total_ns / 1e9)),
        "workload_ops_per_s": round(operations / (total_ns / 1e9)),
        "p50_us": round(lat[n // 2] / 1000, 2),
        "p99_us": round(lat[min(n - 1, int(n * 0.99))] / 1000, 2),
        "p9999_us": round(lat[min(n - 1, int(n * 0.9999))] / 1000, 2),
        "mean_us": round(statistics.fmean(lat) / 1000, 2),
    }


ENGINES: dict[str, Callable[[], Any]] = {
    "cashmarkets": Ours,
    "cashmarkets_no_events": lambda: Ours(events=False),
    "liquibook": Liquibook,
    "lobby": Lobby,
    "pyorderbook": PyOrderBook,
}
AMENDS = {"cashmarkets", "cashmarkets_no_events", "liquibook"}


def _run_one(name: str, ops: list[Op], fill: int, operations: int) -> dict[str, Any]:
    """One engine through `ops` (the first `fill` build the book, untimed); `operations` is how
    many workload operations the timed part stands for (a move is one, as a cancel + new too)."""
    try:
        engine = ENGINES[name]()
    except ImportError as exc:
        return {"error": f"not installed: {exc.name} (pip install -e '.[bench]')"}
    commands, call = engine.runner(ops[:fill])
    for cmd in commands:  # the initial book is not timed
        call(cmd)
    commands, call = engine.runner(ops[fill:])
    out = _measure(commands, call, operations)
    out["resting_orders"] = engine.resting()
    return out


def run(
    commands: int = 200_000, resting: int = 1_000, seed: int = 1, engines: tuple[str, ...] = tuple(ENGINES)
) -> dict[str, Any]:
    """Generate the stream once, run it through every engine, one JSON-able dict."""
    ops, variant = generate(commands, resting=resting, seed=seed)
    counts = {kind: sum(1 for op in ops[resting:] if op[0] == kind) for kind in ("new", "cancel", "move")}
    result: dict[str, Any] = {
        "bench": "spot",
        "workload": {
            "users": USERS,
            "initial_resting_orders": resting,
            "commands": len(ops) - resting,
            "variant_commands": len(variant) - resting,
            "mix": {name: f"{weight} %" for name, weight in MIX},
            "counted": counts,
            "seed": seed,
            "note": "latency is perf_counter_ns around each call, the same for every engine",
        },
        "engines": {},
        "engines_cancel_new": {},
    }
    operations = len(ops) - resting
    for name in engines:
        if name in AMENDS:
            result["engines"][name] = _run_one(name, ops, resting, operations)
        result["engines_cancel_new"][name] = _run_one(name, variant, resting, operations)
    result.update(ratios(result))
    ours_moves = result["engines"].get("cashmarkets", {}).get("commands_per_s")
    ours_cn = result["engines_cancel_new"].get("cashmarkets", {}).get("commands_per_s")
    result["commands_per_s"] = ours_moves or ours_cn or 0
    return result


def ratios(result: dict[str, Any]) -> dict[str, float]:
    """Our engine against its peers, two ways (both reported; neither hides the other):

    same_commands   commands/s on the identical cancel + new stream: the same work per command
                    for every engine (theirs without ledger, dedup or events).
    same_workload   how fast each engine gets through the same 1 M-operation workload by its own
                    best means: ours amends in one command, a peer without amend needs a cancel
                    and a new order for each move (the way the issue's 170k-250k for pure-Python
                    books counts).
    """
    moves, cancel_new = result["engines"], result["engines_cancel_new"]
    out: dict[str, float] = {}
    peers = [cancel_new[k] for k in ("lobby", "pyorderbook") if "commands_per_s" in cancel_new.get(k, {})]
    ours_cn = cancel_new.get("cashmarkets", {})
    ours_moves = moves.get("cashmarkets", {})
    if peers and "commands_per_s" in ours_cn:
        best = max(p["commands_per_s"] for p in peers)
        out["ratio_to_best_pure_python_peer_same_commands"] = round(ours_cn["commands_per_s"] / best, 2)
    if peers and "workload_ops_per_s" in ours_moves:
        best = max(p["workload_ops_per_s"] for p in peers)
        ours = ours_moves["workload_ops_per_s"]
        out["ratio_to_best_pure_python_peer_same_workload"] = round(ours / best, 2)
    lb = moves.get("liquibook", {}).get("commands_per_s")
    if lb and "commands_per_s" in ours_moves:
        out["ratio_to_liquibook"] = round(ours_moves["commands_per_s"] / lb, 3)
    return out
