"""Product `chartgame`: players trade a chart the engine generates, one candle per tick, from
committed inputs nobody can steer (`docs/fairness.md`).

Round lifecycle (commands appended by the scheduler outside the engine; replay gives the same
rounds, candles and settlements):

    ChartCommitChain    publish a seed chain's commitment (before any of its rounds)
    ChartAnnounceRound  commit phase: the round's start and its drand round (fixed by schedule)
    ChartBeginRound     the chain's next seed (must hash to the previous link), the announced
                        beacon and, with a chain adapter, the round's on-chain seed: the round
                        opens; round seed = HMAC(seed, game, round, beacon [, on-chain seed])
    ChartMixBeacon      rolling entropy: the next beacon round is mixed into the stream
    ChartTick           the next candle; the last one settles the round

These five carry the scheduler's lease token (`fence`, role "chartgame"): one lower than the
highest the engine has seen is refused as stale_fence, so a scheduler that lost its lease cannot
act after its successor's ClaimFence (docs/decisions/018).
    ChartOpenPosition / ChartClosePosition   players, while the round is open

A candle is K sub-ticks of a multiplicative walk in integer ticks: each sub-tick moves the price by
a uniform draw in [-volatility, +volatility] basis points plus the drift, and now and then a jump.
The generator never sees positions. A position opens at the last close with a stake and a leverage;
payout = stake + stake x leverage x direction x (exit - entry) / entry, floored (toward the house)
and never below 0; it is busted when a candle reaches its bust price (the whole stake lost); every
open position settles at the round's last close. The house edge is only the configured fee on the
notional, stake x leverage (`GameConfig.fee_bps`).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Final

import msgspec

from cashmarkets.core import codes
from cashmarkets.core.commands import Command
from cashmarkets.core.ledger import HOUSE, escrow
from cashmarkets.core.reconcile import Check, check
from cashmarkets.core.results import Reject, ResultData
from cashmarkets.fairness import drand
from cashmarkets.fairness.derive import Stream, round_seed

if TYPE_CHECKING:
    from cashmarkets.core.engine import Engine, Handler

PRODUCT: Final = "chartgame"
FENCE_ROLE: Final = "chartgame"  # the round scheduler's singleton role
ESCROW: Final = escrow(PRODUCT)
BPS: Final = 10_000
PPM: Final = 1_000_000
MIX_LABEL: Final = b"mix"


# ---- configuration --------------------------------------------------------------------------------


class ModelParams(msgspec.Struct, frozen=True, kw_only=True):
    start_price_ticks: int = 100_000  # 1000.00 with 2 decimals
    price_decimals: int = 2
    sub_ticks: int = 8  # per candle
    volatility_bp: int = 12  # each sub-tick: uniform in [-v, +v] basis points
    drift_bp: int = 0
    jump_ppm: int = 500  # chance per sub-tick of a jump, in millionths
    jump_bp: int = 150


class GameConfig(msgspec.Struct, frozen=True, kw_only=True):
    game: str
    name: str
    asset: str = "USDC"
    model: ModelParams = ModelParams()
    candle_interval_ms: int = 65
    candles_per_round: int = 461  # ~30 s
    # 25x: measured by simulation (6,000 rounds, both sides of 120,000 paths), RTP is 99.14 %
    # (standard error 0.06) at 25x but 99.8 % (0.2) at 50x: there the overshoot a bust forgives
    # (a step or a jump through the bust price) nearly cancels the notional fee, and at 100x it
    # outweighs it. A house edge must not hang on simulation noise.
    max_leverage: int = 25
    stake_min: int = 100_000  # 0.10 USDC
    stake_max: int = 1_000 * 1_000_000  # 1,000 USDC
    # The house edge: charged at open on the notional (stake x leverage), as exchanges charge
    # trading fees. It pays for the free "put" a bust gives the player when the price gaps
    # through the bust price (the loss stops at the stake): see the RTP by leverage in the bench.
    fee_bps: int = 5
    positions_per_owner_max: int = 20  # open, per round
    # The beacon schedule the rounds use (drand quicknet by default; a local beacon copies it).
    beacon_genesis_s: int = drand.QUICKNET_GENESIS_S
    beacon_period_s: int = drand.QUICKNET_PERIOD_S


DEFAULT_GAMES: Final = (GameConfig(game="btc-30s", name="Chart 30 s"),)


class ChartgameConfig(msgspec.Struct, frozen=True, kw_only=True):
    games: tuple[GameConfig, ...] = DEFAULT_GAMES
    positions_max: int = 1_000_000


# ---- commands, results, events ----------------------------------------------------------------------


class OnchainDraw(msgspec.Struct, frozen=True, kw_only=True):
    """A round's seed drawn by on-chain randomness (docs/fairness.md, "Chain adapters")."""

    chain: str  # "aptos"
    network: int  # the chain id (Aptos: 1 mainnet, 2 testnet, ...)
    module: str  # "<address>::round_seed"
    seed: bytes  # 32 bytes, mixed into the round seed
    txn_hash: str  # the drawing transaction, 0x-prefixed hex


class ChartCommitChain(Command, tag="chart_commit_chain"):
    game: str
    chain_id: int
    commitment: bytes  # c_N of the chain
    length: int
    onchain_txn: str = ""  # the transaction that published the commitment on chain, if any
    fence: int = 0  # the scheduler's lease token (0: unfenced)


class ChartAnnounceRound(Command, tag="chart_announce_round"):
    game: str
    round_no: int
    start_ms: int
    fence: int = 0


class ChartBeginRound(Command, tag="chart_begin_round"):
    game: str
    round_no: int
    seed: bytes  # the chain's next seed
    beacon_signature: bytes  # of the announced beacon round (checked with BLS by the scheduler)
    onchain: OnchainDraw | None = None  # with a chain adapter (checked against the chain by it)
    fence: int = 0


class ChartMixBeacon(Command, tag="chart_mix_beacon"):
    game: str
    round_no: int
    beacon_round: int
    beacon_signature: bytes
    fence: int = 0


class ChartTick(Command, tag="chart_tick"):
    game: str
    round_no: int
    fence: int = 0


class ChartOpenPosition(Command, tag="chart_open"):
    owner: str
    game: str
    side: str  # long | short
    stake: int
    leverage: int


class ChartClosePosition(Command, tag="chart_close"):
    owner: str
    position_id: int


class Candle(msgspec.Struct, array_like=True, frozen=True, gc=False):
    index: int
    open: int
    high: int
    low: int
    close: int
    volume: int


class ChartPositionView(ResultData, tag="chart_position"):
    position_id: int
    owner: str
    game: str
    round_no: int
    side: str
    stake: int
    fee: int
    leverage: int
    entry_price: int
    bust_price: int
    opened_candle: int
    status: str = "open"  # open | closed | busted | settled
    exit_price: int = 0
    payout: int = 0


class RoundView(ResultData, tag="chart_round"):
    game: str
    round_no: int
    status: str  # announced | open | settled
    start_ms: int
    beacon_round: int
    chain_id: int
    chain_index: int  # the seed's position in its chain (round r of the chain: c_(N-r))
    candles: int


class CandleMade(msgspec.Struct, tag="chart_candle", array_like=True, gc=False):
    seq: int
    game: str
    round_no: int
    candle: Candle


class RoundChanged(msgspec.Struct, tag="chart_round_changed", array_like=True, gc=False):
    seq: int
    round: RoundView
    seed: bytes  # revealed at settlement (empty before)
    beacons: list[tuple[int, int, bytes]]  # (beacon round, from candle index, signature)
    onchain: OnchainDraw | None = None


class ChainCommitted(msgspec.Struct, tag="chart_chain_committed", array_like=True, gc=False):
    seq: int
    game: str
    chain_id: int
    commitment: bytes
    length: int
    onchain_txn: str = ""


class PositionChanged(msgspec.Struct, tag="chart_position_changed", array_like=True, gc=False):
    seq: int
    position: ChartPositionView


# ---- state -----------------------------------------------------------------------------------------


class Chain(msgspec.Struct, array_like=True, gc=False):
    chain_id: int
    commitment: bytes
    length: int
    used: int  # rounds played from it
    last_link: bytes  # the commitment, then each revealed seed


class Round(msgspec.Struct, array_like=True, gc=False):
    game: str
    round_no: int
    status: str
    start_ms: int
    beacon_round: int
    chain_id: int = 0
    chain_index: int = 0
    seed: bytes = b""
    # (beacon round, first candle index it applies to, signature); the first is the start beacon.
    beacons: list[tuple[int, int, bytes]] = msgspec.field(default_factory=list)
    stream_key: bytes = b""
    stream_position: tuple[int, int] = (0, 0)
    candles: list[Candle] = msgspec.field(default_factory=list)
    onchain: OnchainDraw | None = None


class GameState(msgspec.Struct, array_like=True, gc=False):
    game: str
    chain: Chain | None
    round: Round | None
    last_round_no: int


class ChartState(msgspec.Struct, array_like=True):
    games: list[GameState]
    positions: list[ChartPositionView]
    next_position_id: int


_ENCODER = msgspec.msgpack.Encoder(order="deterministic")
_DECODER = msgspec.msgpack.Decoder(ChartState)
_COPY = msgspec.msgpack.Decoder(GameState)


# ---- the price model (pure; also used by the standalone verifier's port) ------------------------------


def next_candle(stream: Stream, index: int, prev_close: int, m: ModelParams) -> Candle:
    """One candle: `sub_ticks` steps of the walk from `prev_close`."""
    p = o = h = low = prev_close
    volume = 0
    v = m.volatility_bp
    for _ in range(m.sub_ticks):
        r = stream.between(-v, v) + m.drift_bp
        if m.jump_ppm and stream.below(PPM) < m.jump_ppm:
            r += m.jump_bp if stream.below(2) else -m.jump_bp
        p = max(1, p * (BPS + r) // BPS)
        if p > h:
            h = p
        if p < low:
            low = p
        volume += abs(r)
    return Candle(index, o, h, low, p, volume)


def mixed_key(key: bytes, beacon_round: int, randomness: bytes) -> bytes:
    """The stream key after mixing a beacon into `key` (rolling entropy)."""
    import hmac

    return hmac.new(key, MIX_LABEL + beacon_round.to_bytes(8, "big") + randomness, hashlib.sha256).digest()


def bust_price(side: str, entry: int, leverage: int) -> int:
    """Where the loss reaches the stake: long ceil(entry (L-1)/L), short floor(entry (L+1)/L)."""
    if side == "long":
        return -(-entry * (leverage - 1) // leverage)
    return entry * (leverage + 1) // leverage


def payout_of(side: str, stake: int, leverage: int, entry: int, exit_price: int) -> int:
    direction = 1 if side == "long" else -1
    return max(0, stake + direction * stake * leverage * (exit_price - entry) // entry)


# ---- the product ------------------------------------------------------------------------------------


class ChartgameProduct:
    name = PRODUCT
    commands: tuple[type[Command], ...] = (
        ChartCommitChain,
        ChartAnnounceRound,
        ChartBeginRound,
        ChartMixBeacon,
        ChartTick,
        ChartOpenPosition,
        ChartClosePosition,
    )
    events: tuple[type, ...] = (CandleMade, RoundChanged, PositionChanged, ChainCommitted)
    results: tuple[type[ResultData], ...] = (ChartPositionView, RoundView)
    config_type = ChartgameConfig
    # Bump when the meaning of a rule changes: `replay --verify` then flags older logs (decision 023).
    rules_version = 1

    def __init__(self, engine: Engine, config: ChartgameConfig | None = None) -> None:
        self.engine = engine
        self.ledger = engine.ledger
        self.config = config or ChartgameConfig()
        self.games = {g.game: g for g in self.config.games}
        self.state: dict[str, GameState] = {g: GameState(g, None, None, 0) for g in self.games}
        self.positions: dict[int, ChartPositionView] = {}
        self.next_position_id = 1
        self._streams: dict[str, Stream] = {}

    @classmethod
    def factory(cls, config: ChartgameConfig | None = None) -> Any:
        return lambda engine: cls(engine, config)

    def configure(self, config: ChartgameConfig) -> None:
        """Rebuild as if built with `config` (the engine calls this only while the state is as
        built, so there is nothing to carry over)."""
        self.__init__(self.engine, config)  # type: ignore[misc]

    def handlers(self) -> dict[type[Command], Handler]:
        return {
            ChartCommitChain: self.commit_chain,
            ChartAnnounceRound: self.announce,
            ChartBeginRound: self.begin,
            ChartMixBeacon: self.mix,
            ChartTick: self.tick,
            ChartOpenPosition: self.open,
            ChartClosePosition: self.close,
        }

    # ---- rounds -------------------------------------------------------------------------------------

    def _save(self, game: str) -> None:
        """Undo for any change to a game's state: restore a copy taken before the change."""
        before = _COPY.decode(_ENCODER.encode(self.state[game]))
        stream = self._streams.get(game)
        position = stream.position if stream is not None else None

        def undo() -> None:
            self.state[game] = before
            if stream is not None and position is not None:
                self._streams[game] = Stream.at(stream.seed, position)
            else:
                self._streams.pop(game, None)

        self.engine.on_rollback(undo)

    def commit_chain(self, cmd: ChartCommitChain) -> Reject | None:
        stale = self.engine.fence(FENCE_ROLE, cmd.fence)
        if stale is not None:
            return stale
        gs = self.state.get(cmd.game)
        if gs is None:
            return Reject(codes.UNKNOWN_GAME, cmd.game)
        if len(cmd.commitment) != 32 or cmd.length < 1:
            return Reject(codes.BAD_COMMAND, "a commitment is 32 bytes; a chain has 1+ seeds")
        if gs.round is not None and gs.round.status != "settled":
            return Reject(codes.ROUND_IN_PROGRESS, "a round is using the current chain")
        if gs.chain is not None and cmd.chain_id <= gs.chain.chain_id:
            return Reject(codes.BAD_COMMAND, "chain ids increase")
        self._save(cmd.game)
        gs.chain = Chain(cmd.chain_id, cmd.commitment, cmd.length, 0, cmd.commitment)
        self.engine.emit(
            ChainCommitted(cmd.seq, cmd.game, cmd.chain_id, cmd.commitment, cmd.length, cmd.onchain_txn)
        )
        return None

    def announce(self, cmd: ChartAnnounceRound) -> RoundView | Reject:
        stale = self.engine.fence(FENCE_ROLE, cmd.fence)
        if stale is not None:
            return stale
        gs = self.state.get(cmd.game)
        if gs is None:
            return Reject(codes.UNKNOWN_GAME, cmd.game)
        if gs.round is not None and gs.round.status != "settled":
            return Reject(codes.ROUND_IN_PROGRESS, f"round {gs.round.round_no} is {gs.round.status}")
        if cmd.round_no != gs.last_round_no + 1:
            return Reject(codes.BAD_ROUND, f"next round is {gs.last_round_no + 1}")
        if gs.chain is None or gs.chain.used >= gs.chain.length:
            return Reject(codes.NO_SEED_CHAIN, "commit a seed chain first")
        g = self.games[cmd.game]
        beacon_round = drand.round_at_or_after(cmd.start_ms, g.beacon_genesis_s, g.beacon_period_s)
        self._save(cmd.game)
        gs.round = Round(cmd.game, cmd.round_no, "announced", cmd.start_ms, beacon_round, gs.chain.chain_id)
        gs.last_round_no = cmd.round_no
        view = self._round_view(gs.round)
        self.engine.emit(RoundChanged(cmd.seq, view, b"", []))
        return view

    def begin(self, cmd: ChartBeginRound) -> RoundView | Reject:
        stale = self.engine.fence(FENCE_ROLE, cmd.fence)
        if stale is not None:
            return stale
        gs = self.state.get(cmd.game)
        if gs is None:
            return Reject(codes.UNKNOWN_GAME, cmd.game)
        r = gs.round
        if r is None or r.round_no != cmd.round_no or r.status != "announced":
            return Reject(codes.BAD_ROUND, "not the announced round")
        chain = gs.chain
        assert chain is not None
        if len(cmd.seed) != 32 or hashlib.sha256(cmd.seed).digest() != chain.last_link:
            return Reject(codes.BAD_SEED, "the seed does not hash to the chain's last link")
        if len(cmd.beacon_signature) == 0:
            return Reject(codes.BAD_COMMAND, "no beacon signature")
        if cmd.onchain is not None and len(cmd.onchain.seed) != 32:
            return Reject(codes.BAD_COMMAND, "an on-chain seed is 32 bytes")
        self._save(cmd.game)
        randomness = drand.randomness(cmd.beacon_signature)
        extra = cmd.onchain.seed if cmd.onchain is not None else b""
        key = round_seed(cmd.seed, cmd.game, cmd.round_no, randomness, extra)
        chain.used += 1
        chain.last_link = cmd.seed
        r.chain_index = chain.length - chain.used
        r.seed = cmd.seed
        r.status = "open"
        r.beacons = [(r.beacon_round, 0, cmd.beacon_signature)]
        r.onchain = cmd.onchain
        self._use_key(r, key)
        view = self._round_view(r)
        self.engine.emit(RoundChanged(cmd.seq, view, b"", list(r.beacons), r.onchain))
        return view

    def _open_round(self, game: str, round_no: int) -> Round | Reject:
        """The game's round `round_no` if it is open; else why not."""
        gs = self.state.get(game)
        if gs is None:
            return Reject(codes.UNKNOWN_GAME, game)
        r = gs.round
        if r is None or r.round_no != round_no or r.status != "open":
            return Reject(codes.ROUND_NOT_OPEN, str(round_no))
        return r

    def _use_key(self, r: Round, key: bytes) -> None:
        """From now on the round's candles come from `key`'s stream."""
        r.stream_key = key
        r.stream_position = (0, 0)
        self._streams[r.game] = Stream(key)

    def mix(self, cmd: ChartMixBeacon) -> Reject | None:
        stale = self.engine.fence(FENCE_ROLE, cmd.fence)
        if stale is not None:
            return stale
        r = self._open_round(cmd.game, cmd.round_no)
        if isinstance(r, Reject):
            return r
        if cmd.beacon_round != r.beacons[-1][0] + 1 or not cmd.beacon_signature:
            return Reject(codes.BAD_COMMAND, f"the next beacon is round {r.beacons[-1][0] + 1}")
        self._save(cmd.game)
        key = mixed_key(
            self._streams[cmd.game].seed, cmd.beacon_round, drand.randomness(cmd.beacon_signature)
        )
        r.beacons.append((cmd.beacon_round, len(r.candles), cmd.beacon_signature))
        self._use_key(r, key)
        return None

    def tick(self, cmd: ChartTick) -> Reject | None:
        stale = self.engine.fence(FENCE_ROLE, cmd.fence)
        if stale is not None:
            return stale
        r = self._open_round(cmd.game, cmd.round_no)
        if isinstance(r, Reject):
            return r
        gs = self.state[cmd.game]
        g = self.games[cmd.game]
        stream = self._streams[cmd.game]
        # A targeted undo (a whole-state copy per tick would cost more than the candle).
        position, key, count, candles, status = (
            stream.position,
            stream.seed,
            len(r.candles),
            r.candles,
            r.status,
        )

        def undo() -> None:
            del candles[count:]
            r.candles, r.status, r.stream_position = candles, status, position
            self._streams[r.game] = Stream.at(key, position)

        self.engine.on_rollback(undo)
        prev = r.candles[-1].close if r.candles else g.model.start_price_ticks
        candle = next_candle(stream, len(r.candles), prev, g.model)
        r.candles.append(candle)
        r.stream_position = stream.position
        self.engine.emit(CandleMade(cmd.seq, cmd.game, cmd.round_no, candle))
        self._bust(cmd, r, candle)
        if len(r.candles) == g.candles_per_round:
            self._settle_round(cmd, gs)
        return None

    def _bust(self, cmd: Command, r: Round, candle: Candle) -> None:
        for p in sorted(self._open_of(r.game, r.round_no), key=lambda p: p.position_id):
            if (p.side == "long" and candle.low <= p.bust_price) or (
                p.side == "short" and candle.high >= p.bust_price
            ):
                self._finish(cmd, p, p.bust_price, "busted", payout=0)

    def _settle_round(self, cmd: Command, gs: GameState) -> None:
        r = gs.round
        assert r is not None
        close = r.candles[-1].close
        for p in sorted(self._open_of(r.game, r.round_no), key=lambda p: p.position_id):
            self._finish(
                cmd, p, close, "settled", payout=payout_of(p.side, p.stake, p.leverage, p.entry_price, close)
            )
        r.status = "settled"
        self.engine.emit(RoundChanged(cmd.seq, self._round_view(r), r.seed, list(r.beacons), r.onchain))
        r.candles = r.candles[-1:]  # the next round starts fresh; the projection keeps them all

    # ---- positions -----------------------------------------------------------------------------------

    def open(self, cmd: ChartOpenPosition) -> ChartPositionView | Reject:
        g = self.games.get(cmd.game)
        if g is None:
            return Reject(codes.UNKNOWN_GAME, cmd.game)
        gs = self.state[cmd.game]
        r = gs.round
        if r is None or r.status != "open":
            return Reject(codes.ROUND_NOT_OPEN, "no open round")
        if cmd.owner.startswith("@") or not cmd.owner:
            return Reject(codes.BAD_OWNER)
        if cmd.side not in ("long", "short"):
            return Reject(codes.BAD_SIDE, "long or short")
        if not 1 <= cmd.leverage <= g.max_leverage:
            return Reject(codes.BAD_LEVERAGE, f"1..{g.max_leverage}")
        if not g.stake_min <= cmd.stake <= g.stake_max:
            return Reject(codes.BAD_STAKE, f"{g.stake_min}..{g.stake_max} minor units")
        if len(r.candles) >= g.candles_per_round - 1:
            return Reject(codes.ROUND_NOT_OPEN, "the round is ending")
        mine = [p for p in self._open_of(r.game, r.round_no) if p.owner == cmd.owner]
        if len(mine) >= g.positions_per_owner_max or len(self.positions) >= self.config.positions_max:
            return Reject(codes.TOO_MANY_POSITIONS, f"at most {g.positions_per_owner_max} per round")
        fee = cmd.stake * cmd.leverage * g.fee_bps // BPS
        user = self.ledger.by_key.get((cmd.owner, g.asset))
        if user is None or user.available < cmd.stake + fee:
            return Reject(codes.INSUFFICIENT_FUNDS, f"{g.asset} available is below stake + fee")
        escrow_acc = self._system(ESCROW, g.asset)
        house = self._system(HOUSE, g.asset)
        moved = self.ledger.move(user, escrow_acc, cmd.stake, "stake", cmd.seq)
        assert not isinstance(moved, str), moved
        if fee:
            moved = self.ledger.move(user, house, fee, "fee", cmd.seq)
            assert not isinstance(moved, str), moved
        entry = r.candles[-1].close if r.candles else g.model.start_price_ticks
        p = ChartPositionView(
            position_id=self.next_position_id,
            owner=cmd.owner,
            game=cmd.game,
            round_no=r.round_no,
            side=cmd.side,
            stake=cmd.stake,
            fee=fee,
            leverage=cmd.leverage,
            entry_price=entry,
            bust_price=bust_price(cmd.side, entry, cmd.leverage),
            opened_candle=len(r.candles),
        )
        self.next_position_id += 1
        self.positions[p.position_id] = p
        self.engine.on_rollback(lambda: self._undo_open(p))
        self.engine.emit(PositionChanged(cmd.seq, p))
        return p

    def close(self, cmd: ChartClosePosition) -> ChartPositionView | Reject:
        p = self.positions.get(cmd.position_id)
        if p is None or p.owner != cmd.owner:
            return Reject(codes.POSITION_NOT_FOUND, str(cmd.position_id))
        r = self.state[p.game].round
        assert r is not None and r.status == "open" and r.round_no == p.round_no
        exit_price = r.candles[-1].close if r.candles else p.entry_price
        return self._finish(
            cmd, p, exit_price, "closed", payout_of(p.side, p.stake, p.leverage, p.entry_price, exit_price)
        )

    def _finish(
        self, cmd: Command, p: ChartPositionView, exit_price: int, status: str, payout: int
    ) -> ChartPositionView:
        """Pay a position out: escrow returns the stake (or what is left of it), the house pays a
        profit or keeps a loss."""
        g = self.games[p.game]
        user = self.ledger.by_key[(p.owner, g.asset)]
        escrow_acc = self.ledger.by_key[(ESCROW, g.asset)]
        house = self._system(HOUSE, g.asset)
        to_user = min(payout, p.stake)
        for debit, credit, amount, code in (
            (escrow_acc, user, to_user, "payout"),
            (escrow_acc, house, p.stake - to_user, "pnl"),
            (house, user, payout - p.stake if payout > p.stake else 0, "payout"),
        ):
            if amount:
                moved = self.ledger.move(debit, credit, amount, code, cmd.seq)
                assert not isinstance(moved, str), moved
        done = msgspec.structs.replace(p, status=status, exit_price=exit_price, payout=payout)
        # Only open positions are state; a finished one lives on in the event and the projection.
        del self.positions[p.position_id]
        self.engine.on_rollback(lambda: self.positions.__setitem__(p.position_id, p))
        self.engine.emit(PositionChanged(cmd.seq, done))
        return done

    def _undo_open(self, p: ChartPositionView) -> None:
        del self.positions[p.position_id]
        self.next_position_id = p.position_id

    def _open_of(self, game: str, round_no: int) -> list[ChartPositionView]:
        return [p for p in self.positions.values() if p.game == game and p.round_no == round_no]

    def _system(self, owner: str, asset: str) -> Any:
        found = self.ledger.by_key.get((owner, asset))
        if found is not None:
            return found
        opened = self.ledger.open_account(owner, asset)
        assert not isinstance(opened, str), opened
        return opened

    def _round_view(self, r: Round) -> RoundView:
        return RoundView(
            game=r.game,
            round_no=r.round_no,
            status=r.status,
            start_ms=r.start_ms,
            beacon_round=r.beacon_round,
            chain_id=r.chain_id,
            chain_index=r.chain_index,
            candles=len(r.candles),
        )

    # ---- reconciliation and snapshots ------------------------------------------------------------------

    def reconcile(self) -> list[Check]:
        """The chart escrow holds exactly the stakes of the open positions."""
        checks = []
        for asset in sorted({g.asset for g in self.games.values()}):
            acc = self.ledger.by_key.get((ESCROW, asset))
            held = 0 if acc is None else acc.balance
            stakes = sum(p.stake for p in self.positions.values() if self.games[p.game].asset == asset)
            checks.append(check(f"chartgame escrow {asset} == stakes of open positions", stakes, held))
        return checks

    def snapshot_state(self) -> bytes:
        games = []
        for name in sorted(self.state):
            gs = self.state[name]
            if gs.round is not None and name in self._streams:
                gs.round.stream_position = self._streams[name].position
            games.append(gs)
        positions = [self.positions[i] for i in sorted(self.positions)]
        return _ENCODER.encode(ChartState(games, positions, self.next_position_id))

    def restore_state(self, data: bytes) -> None:
        state = _DECODER.decode(data)
        self.state = {gs.game: gs for gs in state.games}
        self.positions = {p.position_id: p for p in state.positions}
        self.next_position_id = state.next_position_id
        self._streams = {}
        for name, gs in self.state.items():
            if gs.round is not None and gs.round.status == "open":
                self._streams[name] = Stream.at(gs.round.stream_key, gs.round.stream_position)
