"""Runs a chart game's rounds: the clock and the randomness the engine may not have.

Per round: announce (start time and, by schedule, its drand round) -> wait for that beacon (and,
with a chain adapter, meanwhile publish the round's commitment and draw its on-chain seed) ->
begin with the chain's next seed -> one tick per candle interval, mixing each later beacon as it is
published (rolling entropy) -> the last tick settles -> a gap -> the next round. Everything goes
through the runtime as commands, so a restart continues from the log: an open round goes on with
the same candles (they derive from logged inputs only), an announced one begins.

One scheduler per deployment: it runs under a lease term (`fence`, store/leases.py), checks it
before each command or chain call, and stamps its token on each command; the engine refuses a
stale token, so a scheduler that lost its lease cannot act after its successor (decision 018).

Seed chains: the secret start of each chain is drawn here (`secrets`) and kept in
`<data dir>/chains/<game>.json` (0600); losing it only means the next round commits a new chain.
Beacons are checked (BLS) before they enter the log. With a chain adapter, each chain's commitment
is published on chain before the engine commits it; a chain secret written but never committed in
the log (a crash in between) is reused, so the on-chain record and the log agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import structlog

from cashmarkets.beacons.sources import BeaconSource, BeaconUnavailable
from cashmarkets.core import codes
from cashmarkets.core.products.chartgame import (
    PRODUCT,
    ChartAnnounceRound,
    ChartBeginRound,
    ChartCommitChain,
    ChartgameProduct,
    ChartMixBeacon,
    ChartTick,
    GameConfig,
    OnchainDraw,
)
from cashmarkets.core.results import Rejected
from cashmarkets.fairness import drand
from cashmarkets.fairness.chain import SEED_BYTES, SeedChain
from cashmarkets.onchain.adapter import ChainAdapter
from cashmarkets.ops import dependencies
from cashmarkets.ops.ids import new_id
from cashmarkets.store.leases import LeaseLost, StaleFence, Term

log = structlog.get_logger("cashmarkets.chartgame")

CHAIN_LENGTH: Final = 10_000  # rounds per committed chain
BEACON_RETRY_S: Final = 0.25


async def stop_schedulers(schedulers: list[ChartScheduler], tasks: list[asyncio.Task[None]]) -> None:
    """Stop the schedulers, wait for their tasks (bounded) and close their chain adapters."""
    for scheduler in schedulers:
        await scheduler.stop()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 5)
    adapters = {id(s.adapter): s.adapter for s in schedulers if s.adapter is not None}
    for adapter in adapters.values():
        await adapter.close()


class ChainStore:
    """Secret chain starts, one file per game."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def load(self, game: str, chain_id: int) -> SeedChain | None:
        path = self.directory / f"{game}.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        if data.get("chain_id") != chain_id:
            return None
        return SeedChain(bytes.fromhex(data["start"]), int(data["length"]))

    def create(self, game: str, chain_id: int, length: int) -> SeedChain:
        self.directory.mkdir(parents=True, exist_ok=True)
        start = secrets.token_bytes(SEED_BYTES)
        path = self.directory / f"{game}.json"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"chain_id": chain_id, "start": start.hex(), "length": length}, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)  # the secret is on disk before its commitment is in the log
        return SeedChain(start, length)


class ChartScheduler:
    def __init__(
        self,
        runtime: Any,
        game: GameConfig,
        beacons: BeaconSource,
        chains: ChainStore,
        *,
        rolling: bool = True,
        commit_ms: int = 1_000,
        gap_ms: int = 2_000,
        chain_length: int = CHAIN_LENGTH,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        adapter: ChainAdapter | None = None,
        fence: Term | None = None,
    ) -> None:
        self.runtime = runtime
        self.game = game
        self.beacons = beacons
        self.chains = chains
        self.rolling = rolling
        self.commit_ms = commit_ms
        self.gap_ms = gap_ms
        self.chain_length = chain_length
        self.clock_ms = clock_ms
        self.adapter = adapter
        self.fence = fence  # None: unfenced (token 0)
        self._stop = asyncio.Event()
        self._run_id = new_id()
        self._n = 0

    @property
    def product(self) -> ChartgameProduct:
        found: ChartgameProduct = self.runtime.engine.products[PRODUCT]
        return found

    async def run(self) -> None:
        log.info("chart game running", game=self.game.game)
        while not self._stop.is_set():
            try:
                await self.play_round()
            except (asyncio.CancelledError, LeaseLost):
                raise  # a lost lease ends this scheduler's term at once
            except Exception as exc:  # a failed round must not stop the game
                if (name := dependencies.dependency_down(exc)) is not None:
                    # Redis (or the store) down: the round pauses, and goes on from the engine's
                    # state once commands get through again (docs/decisions/019).
                    dependencies.watch(name).down(exc, f"running chart game {self.game.game}")
                else:
                    log.warning("chart round failed", game=self.game.game, error=repr(exc))
                await self._sleep_until(self.clock_ms() + 1_000)
            await self._sleep_until(self.clock_ms() + self.gap_ms)

    async def stop(self) -> None:
        self._stop.set()

    async def play_round(self) -> None:
        """Play (or finish, after a restart) one round."""
        g = self.game
        state = self.product.state[g.game]
        r = state.round
        chain: SeedChain | None
        if r is None or r.status == "settled":
            chain = await self._chain()
            start_ms = self.clock_ms() + self.commit_ms
            await self._submit(
                ChartAnnounceRound(
                    command_id=self._cid(), game=g.game, round_no=state.last_round_no + 1, start_ms=start_ms
                )
            )
            r = self.product.state[g.game].round
        else:
            chain = self._known_chain()
        assert r is not None
        if r.status == "announced":
            chain_state = self.product.state[g.game].chain
            assert chain is not None and chain_state is not None, "an announced round without its secret"
            waiting = asyncio.ensure_future(self._beacon(r.beacon_round))
            try:  # the draw while the beacon is awaited; a failed draw stops the wait too
                onchain = await self._draw(r.round_no, chain_state.last_link)
                beacon = await waiting
            finally:
                waiting.cancel()
            seed = chain.seed(chain_state.used + 1)
            await self._submit(
                ChartBeginRound(
                    command_id=self._cid(),
                    game=g.game,
                    round_no=r.round_no,
                    seed=seed,
                    beacon_signature=beacon.signature,
                    onchain=onchain,
                )
            )
            r = self.product.state[g.game].round
            assert r is not None
        opened_ms = self.clock_ms() - len(r.candles) * g.candle_interval_ms
        while r.status == "open" and not self._stop.is_set():
            index = len(r.candles)
            await self._sleep_until(opened_ms + (index + 1) * g.candle_interval_ms)
            if self.rolling:
                await self._mix_due(r)
            await self._submit(ChartTick(command_id=self._cid(), game=g.game, round_no=r.round_no))
            r = self.product.state[g.game].round
            assert r is not None

    async def _mix_due(self, r: Any) -> None:
        """Mix the next beacon once drand has published it (never waits for one)."""
        g = self.game
        next_round = r.beacons[-1][0] + 1
        if self.clock_ms() < drand.round_time_ms(next_round, g.beacon_genesis_s, g.beacon_period_s):
            return
        try:
            beacon = await self.beacons.fetch(next_round)
        except BeaconUnavailable:
            return  # try again at the next candle
        await self._submit(
            ChartMixBeacon(
                command_id=self._cid(),
                game=g.game,
                round_no=r.round_no,
                beacon_round=next_round,
                beacon_signature=beacon.signature,
            )
        )

    async def _draw(self, round_no: int, commitment: bytes) -> OnchainDraw | None:
        """The round's on-chain seed, drawn after its commitment is on chain (adapter only)."""
        if self.adapter is None:
            return None
        self._check_fence()
        return await self.adapter.draw_seed(self.game.game, round_no, commitment)

    async def _beacon(self, round_no: int) -> Any:
        """The beacon of `round_no`, waiting for its publication time and for the source."""
        g = self.game
        await self._sleep_until(drand.round_time_ms(round_no, g.beacon_genesis_s, g.beacon_period_s))
        while True:
            try:
                return await self.beacons.fetch(round_no)
            except BeaconUnavailable as exc:
                log.info("waiting for beacon", round=round_no, why=str(exc))
                await asyncio.sleep(BEACON_RETRY_S)

    def _known_chain(self) -> SeedChain | None:
        chain = self.product.state[self.game.game].chain
        return None if chain is None else self.chains.load(self.game.game, chain.chain_id)

    async def _chain(self) -> SeedChain:
        """The chain the next round uses; a new one is committed when there is none with seeds left
        (or its secret is lost)."""
        g = self.game
        state = self.product.state[g.game].chain
        if state is not None and state.used < state.length:
            known = self.chains.load(g.game, state.chain_id)
            if known is not None and known.commitment == state.commitment:
                return known
        chain_id = (state.chain_id if state is not None else 0) + 1
        # A secret written for this id but never committed in the log (a crash in between) is
        # reused: its commitment may already be on chain.
        chain = self.chains.load(g.game, chain_id) or self.chains.create(g.game, chain_id, self.chain_length)
        onchain_txn = ""
        if self.adapter is not None:
            self._check_fence()
            onchain_txn = await self.adapter.commit_chain(g.game, chain_id, chain.commitment, chain.length)
        await self._submit(
            ChartCommitChain(
                command_id=self._cid(),
                game=g.game,
                chain_id=chain_id,
                commitment=chain.commitment,
                length=chain.length,
                onchain_txn=onchain_txn,
            )
        )
        log.info("seed chain committed", game=g.game, chain_id=chain_id, commitment=chain.commitment.hex())
        return chain

    def _check_fence(self) -> None:
        if self.fence is not None:
            self.fence.check()

    async def _submit(self, cmd: Any) -> Any:
        if self.fence is not None:
            self.fence.check()
            cmd.fence = self.fence.token
        result = await self.runtime.submit(cmd)
        if isinstance(result, Rejected):
            if result.code == codes.STALE_FENCE:
                raise StaleFence(f"{type(cmd).__name__} refused: {result.detail}")
            raise RuntimeError(f"{type(cmd).__name__} rejected: {result.code} {result.detail}")
        return result

    async def _sleep_until(self, t_ms: int) -> None:
        delay = (t_ms - self.clock_ms()) / 1000
        if delay > 0:
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except TimeoutError:
                pass

    def _cid(self) -> str:
        self._n += 1
        return f"chart:{self._run_id}:{self._n}"
