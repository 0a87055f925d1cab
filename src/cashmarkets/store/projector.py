"""The projector: engine events -> SQL rows, exactly once.

It follows the command log with its own engine replica (deterministic: the same log gives the
same events), so it needs nothing from the live engine and can run in another process. Each batch
of rows is written in one transaction together with the projector's checkpoint (seq and log
position), so a crash between batches neither drops nor duplicates a row: on restart the replica
is rebuilt up to the checkpoint (from the newest engine snapshot at or below it, then the log) and
projection resumes right after it.

One projector per store: it holds the "projector" lease (store/leases.py) and writes its token on
the checkpoint row, in each batch's transaction, only if no higher token is there: a projector
that lost its lease (paused, cut off, the database restarted) has its late batch refused
(docs/decisions/018).

    accounts          one row per ledger account, totals copied from the replica per batch
    ledger_transfers  one row per executed transfer (COPY on PostgreSQL)
    withdrawals       from WithdrawalRequested / WithdrawalResolved
    positions         from PositionOpened (inserted open) / PositionClosed (closed in place)
    position_events   one row per opened/closed event
    spot_*            orders, trades and candles (see `spot_projection`)
    chart_*           chains, rounds, candles, positions (see `chart_projection`)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
import structlog
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cashmarkets.core.engine import Engine
from cashmarkets.core.events import AccountCreated, WithdrawalRequested, WithdrawalResolved
from cashmarkets.core.ledger import Transfer
from cashmarkets.core.products.chartgame import CandleMade, ChainCommitted, PositionChanged, RoundChanged
from cashmarkets.core.products.leverage import PositionClosed, PositionOpened
from cashmarkets.core.products.spot import SpotOrderUpdated, SpotTrade
from cashmarkets.log.base import CommandLog, LogCorrupted, Position
from cashmarkets.ops import dependencies, metrics
from cashmarkets.ops.backoff import Backoff
from cashmarkets.runtime.runner import replay
from cashmarkets.store.chart_projection import ChartBatch
from cashmarkets.store.leases import DEFAULT_TTL_S, Lease, LeaseLost, StaleFence, Term, hold
from cashmarkets.store.snapshots import SnapshotStore
from cashmarkets.store.spot_projection import SpotBatch
from cashmarkets.store.tables import accounts, ledger_transfers, positions, projector_checkpoints, withdrawals
from cashmarkets.store.tables import position_events as position_events_table

log = structlog.get_logger("cashmarkets.projector")

NAME: Final = "ledger"
NAME_LOCK: Final = "projector"
# Log records per SQL transaction (default; Settings.projector_batch_records).
BATCH_RECORDS_MAX: Final = 2_000
IDLE_POLL_S: Final = 0.05
# Once caught up, wait this long for more records before the next transaction: a transaction per
# tiny batch cost ~40 % of the embedded server's CPU under load (py-spy, bench http).
COALESCE_S: Final = 0.05
RETRY_DELAY_S: Final = 1.0

_SPOT_EVENTS: Final = frozenset({SpotOrderUpdated, SpotTrade})
_CHART_EVENTS: Final = frozenset({CandleMade, RoundChanged, PositionChanged, ChainCommitted})
_TRANSFER_COLUMNS: Final = (
    "transfer_id",
    "seq",
    "ts_ns",
    "kind",
    "debit_account_id",
    "credit_account_id",
    "asset",
    "amount",
    "code",
    "pending_id",
)


class Projector:
    def __init__(
        self,
        db: AsyncEngine,
        log_backend: CommandLog,
        snapshots: SnapshotStore,
        *,
        # Required: the replica must run exactly the live engine's products, or it diverges.
        engine_factory: Callable[[], Engine],
        batch_records: int = BATCH_RECORDS_MAX,
        head_seq: Callable[[], Awaitable[int | None]] | None = None,
        lease_ttl_s: float = DEFAULT_TTL_S,
    ) -> None:
        self.db = db
        self.log = log_backend
        self.snapshots = snapshots
        self.engine: Engine = engine_factory()
        self._engine_factory = engine_factory
        self.position: Position | None = None
        self.committed_seq = 0
        self._wake = asyncio.Event()
        self._insert = postgresql.insert if db.dialect.name == "postgresql" else sqlite.insert
        self.rows_written = 0
        self.batch_records = batch_records
        # Where the engine is, for the lag metric (embedded: the runtime; distributed: its heartbeat).
        self.head_seq = head_seq
        self._candle_partitions: frozenset[str] = frozenset()
        self.lease_ttl_s = lease_ttl_s
        # The lease term this projector writes under; None: unfenced (token 0, tests and tools).
        self.term: Term | None = None
        self._down: set[str] = set()  # dependencies this projector is waiting for

    @property
    def seq(self) -> int:
        """The last seq whose rows are committed (the replica itself may be a batch ahead)."""
        return self.committed_seq

    def notify(self) -> None:
        """New records are in the log (embedded mode calls this after each batch)."""
        self._wake.set()

    async def restore(self) -> None:
        """Rebuild the replica up to the checkpoint, writing nothing."""
        async with self.db.connect() as conn:
            row = (
                await conn.execute(select(projector_checkpoints).where(projector_checkpoints.c.name == NAME))
            ).first()
        checkpoint_seq = 0 if row is None else int(row.seq)
        self.engine = self._engine_factory()
        after: Position | None = None
        snapshot = await self.snapshots.newest_intact(max_seq=checkpoint_seq) if checkpoint_seq else None
        if snapshot is not None:
            self.engine.restore(snapshot.data)
            after = snapshot.position
        _, after = await replay(self.engine, self.log, after, until_seq=checkpoint_seq)
        if self.engine.seq != checkpoint_seq:
            raise LogCorrupted(
                f"projector checkpoint {checkpoint_seq} is past the end of the log ({self.engine.seq})"
            )
        self.position = after
        self.committed_seq = checkpoint_seq
        log.info("projector restored", seq=checkpoint_seq)

    async def step(self) -> int:
        """Project the next batch of log records; return how many were projected."""
        page = await self.log.read_from(self.position, self.batch_records)
        if not page:
            return 0
        decode = self.engine.codec.command_decoder.decode
        transfers: list[tuple[Any, ...]] = []
        created: list[dict[str, Any]] = []
        requested: list[dict[str, Any]] = []
        resolved: list[dict[str, Any]] = []
        opened: list[dict[str, Any]] = []
        closed: list[dict[str, Any]] = []
        position_events: list[dict[str, Any]] = []
        touched: set[int] = set()
        spot = SpotBatch()
        chart = ChartBatch()
        for record in page:
            cmd = decode(record.data)
            expected = self.engine.seq + 1
            if cmd.seq == 0:
                cmd.seq = expected
            elif cmd.seq != expected:
                raise LogCorrupted(f"record at {record.position} has seq {cmd.seq}, expected {expected}")
            cmd.ts_ns = max(cmd.ts_ns, self.engine.ts_ns)
            _, events = self.engine.apply(cmd)
            ts_ns = cmd.ts_ns
            for event in events:
                if isinstance(event, Transfer):
                    transfers.append(
                        (
                            event.id,
                            event.seq,
                            ts_ns,
                            int(event.kind),
                            event.debit_account_id,
                            event.credit_account_id,
                            event.asset,
                            event.amount,
                            event.code,
                            event.pending_id,
                        )
                    )
                    touched.add(event.debit_account_id)
                    touched.add(event.credit_account_id)
                elif isinstance(event, AccountCreated):
                    created.append(
                        {
                            "account_id": event.account_id,
                            "owner": event.owner,
                            "asset": event.asset,
                            "flags": int(event.flags),
                            "debits_posted": 0,
                            "credits_posted": 0,
                            "debits_pending": 0,
                            "credits_pending": 0,
                            "updated_seq": event.seq,
                        }
                    )
                elif isinstance(event, WithdrawalRequested):
                    requested.append(
                        {
                            "hold_id": event.hold_id,
                            "owner": event.owner,
                            "asset": event.asset,
                            "amount": event.amount,
                            "destination": event.destination,
                            "status": "pending",
                            "reference": "",
                            "requested_seq": event.seq,
                            "requested_ts_ns": ts_ns,
                        }
                    )
                elif isinstance(event, PositionOpened):
                    row = msgspec.structs.asdict(event.position)
                    row["status"] = "open"
                    opened.append(row)
                    position_events.append(
                        {
                            "position_id": row["position_id"],
                            "seq": event.seq,
                            "ts_ns": ts_ns,
                            "kind": "opened",
                            "reason": None,
                            "price": row["entry_price"],
                        }
                    )
                elif isinstance(event, PositionClosed):
                    closed.append(
                        {
                            "b_position_id": event.position_id,
                            "status": "closed",
                            "close_reason": event.reason,
                            "exit_price": event.exit_price,
                            "pnl": event.pnl,
                            "payout": event.payout,
                            "closed_seq": event.seq,
                            "closed_ts_ns": ts_ns,
                        }
                    )
                    position_events.append(
                        {
                            "position_id": event.position_id,
                            "seq": event.seq,
                            "ts_ns": ts_ns,
                            "kind": "closed",
                            "reason": event.reason,
                            "price": event.exit_price,
                        }
                    )
                elif type(event) in _SPOT_EVENTS:
                    spot.add(event, ts_ns)
                elif type(event) in _CHART_EVENTS:
                    chart.add(event, ts_ns)
                elif isinstance(event, WithdrawalResolved):
                    resolved.append(
                        {
                            "b_hold_id": event.hold_id,
                            "status": event.status,
                            "reference": event.reference,
                            "resolved_ts_ns": ts_ns,
                        }
                    )
        position = page[-1].position
        fence = 0 if self.term is None else self.term.token
        if self.term is not None:
            self.term.check()
        async with self.db.begin() as conn:
            # The checkpoint first: it also opens the transaction on the server, which the asyncpg
            # adapter does lazily; a COPY sent before any statement would run in autocommit and
            # survive a crash without its checkpoint (rows projected twice on restart).
            # Fenced: refused (and the whole batch with it) when a newer holder has claimed the row.
            checkpoint = {
                "name": NAME,
                "seq": self.engine.seq,
                "position": position,
                "updated_at_ns": time.time_ns(),
                "fence": fence,
            }
            upsert = self._insert(projector_checkpoints).values(checkpoint)
            written = await conn.execute(
                upsert.on_conflict_do_update(
                    index_elements=[projector_checkpoints.c.name],
                    set_={
                        "seq": upsert.excluded.seq,
                        "position": upsert.excluded.position,
                        "updated_at_ns": upsert.excluded.updated_at_ns,
                        "fence": upsert.excluded.fence,
                    },
                    where=projector_checkpoints.c.fence <= fence,
                ).returning(projector_checkpoints.c.name)
            )
            if written.first() is None:
                raise StaleFence(f"projector token {fence} is stale: a newer projector holds the store")
            if created:
                await conn.execute(self._insert(accounts).on_conflict_do_nothing(), created)
            if transfers:
                await self._insert_transfers(conn, transfers)
            if touched:
                ledger = self.engine.ledger
                rows = []
                for account_id in sorted(touched):
                    acc = ledger.accounts[account_id]
                    rows.append(
                        {
                            "b_account_id": account_id,
                            "debits_posted": acc.debits_posted,
                            "credits_posted": acc.credits_posted,
                            "debits_pending": acc.debits_pending,
                            "credits_pending": acc.credits_pending,
                            "updated_seq": self.engine.seq,
                        }
                    )
                await conn.execute(
                    update(accounts).where(accounts.c.account_id == bindparam("b_account_id")),
                    rows,
                )
            if opened:
                await conn.execute(self._insert(positions).on_conflict_do_nothing(), opened)
            if closed:  # after the inserts: a position may open and close in one batch
                await conn.execute(
                    update(positions).where(positions.c.position_id == bindparam("b_position_id")), closed
                )
            if position_events:
                await conn.execute(position_events_table.insert(), position_events)
            if requested:
                await conn.execute(self._insert(withdrawals).on_conflict_do_nothing(), requested)
            partitions = await spot.write(conn, self._insert, self._candle_partitions) if spot else set()
            if chart:
                partitions |= await chart.write(conn, self._insert, self._candle_partitions)
            if resolved:
                await conn.execute(
                    update(withdrawals).where(withdrawals.c.hold_id == bindparam("b_hold_id")),
                    resolved,
                )
        self.position = position
        self.committed_seq = self.engine.seq
        self._candle_partitions |= partitions
        self.rows_written += len(transfers)
        return len(page)

    async def _insert_transfers(self, conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
        if self.db.dialect.name == "postgresql":
            # COPY is ~4x faster than a multi-row INSERT; it runs inside this transaction.
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None and driver.is_in_transaction(), "COPY outside the batch's transaction"
            await driver.copy_records_to_table(
                "ledger_transfers", records=rows, columns=list(_TRANSFER_COLUMNS)
            )
        else:
            await conn.execute(
                ledger_transfers.insert(), [dict(zip(_TRANSFER_COLUMNS, r, strict=True)) for r in rows]
            )

    async def run(self) -> None:
        """Hold the store's projector lease, restore, then project forever (until cancelled). A
        lost lease stops projecting at once; then it waits to hold the lease again."""
        await hold(Lease(self.db, NAME_LOCK, ttl_s=self.lease_ttl_s), self._term, floor=self._fence_floor)

    async def _term(self, term: Term) -> None:
        self.term = term
        try:
            await self.claim(term.token)
            await self._run()
        finally:
            self.term = None

    async def claim(self, token: int) -> None:
        """Write `token` on the checkpoint row (before restoring from it): from now on a batch
        carrying a lower token is refused."""
        row = {"name": NAME, "seq": 0, "position": None, "updated_at_ns": time.time_ns(), "fence": token}
        upsert = self._insert(projector_checkpoints).values(row)
        async with self.db.begin() as conn:
            claimed = await conn.execute(
                upsert.on_conflict_do_update(
                    index_elements=[projector_checkpoints.c.name],
                    set_={"fence": upsert.excluded.fence},
                    where=projector_checkpoints.c.fence <= token,
                ).returning(projector_checkpoints.c.name)
            )
            if claimed.first() is None:
                raise StaleFence(f"projector token {token} is below the checkpoint's")

    async def _fence_floor(self) -> int:
        """The next token is above the checkpoint's, even if the lease row was lost."""
        row = projector_checkpoints.c
        async with self.db.connect() as conn:
            seen = (await conn.execute(select(func.max(row.fence)).where(row.name == NAME))).scalar()
        return int(seen or 0) + 1

    async def _run(self) -> None:
        # Redis errors are always redis-py's own; a bare OSError or TimeoutError comes from
        # asyncpg (connecting to PostgreSQL), hence the POSTGRES default below.
        await self._restore_when_reachable()
        backoff = Backoff()
        while True:
            try:
                projected = await self.step()
            except (asyncio.CancelledError, LogCorrupted, LeaseLost):
                raise
            except Exception as exc:
                if (name := dependencies.dependency_down(exc, dependencies.POSTGRES)) is not None:
                    # Redis or PostgreSQL down: wait and go on from the checkpoint (a lost lease
                    # meanwhile cancels this term; hold() campaigns again once the store is back).
                    self._waiting(name, exc, "projecting a batch")
                    await backoff.sleep()
                else:
                    log.error("projector batch failed; restoring from the checkpoint", error=repr(exc))
                    await asyncio.sleep(RETRY_DELAY_S)
                if self.engine.seq != self.committed_seq:  # the replica is ahead of what committed
                    await self._restore_when_reachable()
                continue
            backoff.reset()
            self._recovered()
            await self._report_lag()
            if 0 < projected < self.batch_records:
                await asyncio.sleep(COALESCE_S)
            elif projected == 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL_S)
                except TimeoutError:
                    pass

    async def _restore_when_reachable(self) -> None:
        """Restore from the checkpoint, waiting out Redis or PostgreSQL outages (a half-done
        restore is started over: the replica is rebuilt from scratch each time)."""
        backoff = Backoff()
        while True:
            try:
                await self.restore()
                return
            except Exception as exc:
                name = dependencies.dependency_down(exc, dependencies.POSTGRES)
                if name is None:
                    raise  # a corrupted log, a checkpoint past the log's end: fatal
                self._waiting(name, exc, "restoring from the checkpoint")
                await backoff.sleep()

    def _waiting(self, name: str, exc: BaseException, doing: str) -> None:
        self._down.add(name)
        dependencies.watch(name).down(exc, doing)

    def _recovered(self) -> None:
        for name in self._down:
            dependencies.watch(name).up()
        self._down.clear()

    async def _report_lag(self) -> None:
        if self.head_seq is None:
            return
        try:
            head = await self.head_seq()
        except Exception as exc:
            if dependencies.dependency_down(exc, dependencies.REDIS) is None:
                raise
            return  # the engine's heartbeat is in Redis: no lag figure while it is down
        if head is not None:
            metrics.PROJECTOR_LAG.set(max(0, head - self.seq))
