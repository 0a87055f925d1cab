"""The runtime around the pure engine: sequencer, group commit, apply, snapshots, recovery.

    submit(cmd) ──> pending ──> writer task: stamp seq/ts_ns, encode, append batch (one fsync)
                                   └─> apply each in order ──> resolve the submitter's future
                                                          └─> publish events to the bus
    snapshot task: every interval or N commands, state bytes ──> store (on its own thread)
    start(): newest intact snapshot ──> replay the log after its position ──> check ──> serve

A command is acknowledged (its future resolved) only after its batch is durable *and* applied.
Commands that arrive while a batch is being written form the next batch: under load one fsync
covers many commands, and with a single client a command waits for at most one fsync.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import msgspec
import structlog

from cashmarkets.core.commands import COMMAND_ID_LENGTH_MAX, Command
from cashmarkets.core.engine import Engine, Result, snapshot_hash
from cashmarkets.core.results import Rejected
from cashmarkets.log.base import APPEND_BATCH_RECORDS_MAX, CommandLog, LogCorrupted, LogRecord, Position
from cashmarkets.ops import dependencies, gcpolicy, metrics
from cashmarkets.ops.backoff import Backoff
from cashmarkets.runtime import forksnap
from cashmarkets.store.snapshots import SnapshotRecord, SnapshotStore

log = structlog.get_logger("cashmarkets.runtime")

# Commands waiting for the writer; past this, submit() refuses at once (back-pressure).
PENDING_COMMANDS_MAX: Final = 100_000
# Records per page when replaying the log.
REPLAY_PAGE_RECORDS: Final = 10_000
# A following engine waits this long for new records per read (then simply reads again).
FOLLOW_BLOCK_MS: Final = 1_000


class RuntimeConfig(msgspec.Struct, frozen=True, kw_only=True):
    snapshot_interval_s: float = 10.0
    snapshot_every_commands: int = 100_000
    batch_records_max: int = 1024
    # Serialize snapshots in a forked child (see forksnap.py); inline where fork does not exist.
    snapshot_fork: bool = forksnap.supported()
    # Drop log records below the previous snapshot once a newer one is durable. Off by default:
    # the full log lets `cashmarkets replay --verify` rebuild everything from the first command.
    trim_log: bool = False
    # A read-only follower (a gateway's replica) takes no snapshots: the engine process owns them.
    snapshots: bool = True
    # On an empty log, log each product's rules first (SetRules, decision 023). Replicas and
    # tools that only read the log turn this off.
    genesis: bool = True


# Follow mode: called with each applied batch (record, stamped command, result), in log order.
Replier = Callable[[list[tuple[LogRecord, Command, Result]]], Awaitable[None]]


class Overloaded(Exception):
    """The pending queue is full; the caller should retry later."""


class BadCommandError(ValueError):
    """A command that cannot be encoded into the log; nothing was logged or applied."""


class SnapshotStoreDown(Exception):
    """A snapshot was not saved because the store (PostgreSQL) is down; the next one retries."""


class RuntimeFailed(Exception):
    """The log could not be written; the process must restart and recover from the log."""


class Runtime:
    """One engine driven by one command log; the only writer of both."""

    def __init__(
        self,
        engine: Engine,
        log_backend: CommandLog,
        snapshots: SnapshotStore,
        config: RuntimeConfig | None = None,
        *,
        scratch_dir: Path,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.engine = engine
        self.log = log_backend
        self.snapshots = snapshots
        self.config = config or RuntimeConfig()
        self.scratch_dir = scratch_dir  # forked snapshot children write here
        self.codec = engine.codec
        self.position: Position | None = None  # log position of the last applied command
        self._pending: list[tuple[Command, asyncio.Future[Result]]] = []
        self._inflight: list[tuple[Command, asyncio.Future[Result]]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._snapshotter: asyncio.Task[None] | None = None
        self._last_ts_ns = 0
        # Embedded mode: engine time is this clock, read as a batch is appended (decision 022).
        self._clock_ns = clock_ns
        self._failed: BaseException | None = None
        self._snapshot_seq = 0
        self._snapshotting = False
        self._snapshot_lock = asyncio.Lock()  # one snapshot at a time
        self._snapshot_position: Position | None = None
        self._subscribers: list[Callable[[list[Any]], None]] = []
        self.recovered_from_seq = 0
        self.replayed = 0
        self.stats = {"submitted": 0, "applied": 0, "rejected": 0, "batches": 0, "snapshots": 0}

    # ---- lifecycle ------------------------------------------------------------------------------

    async def start(self, *, follow: Replier | None = None) -> None:
        """Recover state (snapshot + replay), then start accepting commands.

        With `follow`, the runtime is a distributed engine instead: it takes no submissions but
        tails the log (which API processes append to), applies every record in log order, and
        hands each batch of results to `follow` (which publishes the replies)."""
        await self.log.open()
        warn = getattr(self.log, "durability_warning", None)
        if warn is not None and (message := await warn()):
            log.warning("command log durability", detail=message)
        await self.snapshots.open()
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        if self.config.snapshots:
            # Only the snapshot taker cleans up: a replica (gateway, chartgame) sharing the data
            # directory must not delete the engine process's snapshot being written.
            forksnap.remove_leftovers(self.scratch_dir)
        gcpolicy.tune()
        await self.recover(on_replayed=follow)
        gcpolicy.freeze_survivors()
        empty = self.position is None and self.engine.seq == 0
        if follow is None:
            self._writer = asyncio.create_task(self._write_loop(), name="runtime-writer")
        else:
            self._writer = asyncio.create_task(self._follow_loop(follow), name="runtime-follower")
        self._snapshotter = asyncio.create_task(self._snapshot_loop(), name="runtime-snapshots")
        if empty and self.config.genesis:
            await self._log_genesis(follow is not None)

    async def _log_genesis(self, following: bool) -> None:
        """A new log starts with each product's rules (decision 023). The follower appends them
        for the tail it reads (API processes may have appended first: a genesis after those
        still pins rules equal to the ones in force)."""
        genesis = self.engine.genesis_commands()
        if not genesis:
            return
        if following:
            await self.log.append([self.codec.encoder.encode(cmd) for cmd in genesis])
            return
        for result in await asyncio.gather(*(self.submit(cmd) for cmd in genesis)):
            if isinstance(result, Rejected):
                raise RuntimeFailed(f"genesis refused: {result.code} {result.detail}")

    async def stop(self, *, snapshot: bool = True) -> None:
        """Drain pending commands, take a last snapshot, close the log."""
        for task in (self._snapshotter,):
            if task is not None:
                task.cancel()
        if self._writer is not None:
            self._wake.set()
            while self._pending and self._failed is None:
                await asyncio.sleep(0.001)
            self._writer.cancel()
            try:
                await self._writer
            except (asyncio.CancelledError, Exception):
                pass
        if snapshot and self._failed is None and self.engine.seq > self._snapshot_seq:
            # wait=True: a snapshot still being written must not make the last one be skipped
            try:
                await self.take_snapshot(wait=True)
            except SnapshotStoreDown:
                log.warning("no last snapshot: the store is down; the next start replays more log")
        await self.log.close()
        await self.snapshots.close()

    async def recover(self, *, on_replayed: Replier | None = None) -> None:
        record = await self.snapshots.newest_intact()
        after: Position | None = None
        if record is not None:
            self.engine.restore(record.data)
            after = record.position
            self._snapshot_seq, self._snapshot_position = record.seq, record.position
            self.recovered_from_seq = record.seq
        self.position = after
        replayed: list[tuple[LogRecord, Command, Result]] | None = [] if on_replayed else None
        self.replayed, self.position = await replay(self.engine, self.log, after, applied=replayed)
        if on_replayed is not None and replayed:
            # Results of commands applied before a crash may never have reached their callers:
            # publish them again (callers that gave up find them by command id).
            await on_replayed(replayed)
        self.engine.ledger.check_invariants()
        for problem in self.engine.rules_problems():
            # `replay --verify` fails on this; the engine runs on the rules the log pins.
            log.error("rules version differs from the log's", detail=problem)
        self._last_ts_ns = self.engine.ts_ns
        log.info(
            "recovered",
            snapshot_seq=self.recovered_from_seq,
            replayed=self.replayed,
            seq=self.engine.seq,
            state_hash=self.engine.state_hash(),
            # the C hot paths (decision 016); false means the slower pure-Python paths run
            native=self.engine.native,
        )

    # ---- commands -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._writer is not None and not self._writer.done() and self._failed is None

    def subscribe(self, fn: Callable[[list[Any]], None]) -> None:
        """Call fn with the events of each applied batch (in order, on the event loop)."""
        self._subscribers.append(fn)

    async def submit(self, cmd: Command) -> Result:
        """Append cmd to the log and apply it; return its result once durable and applied."""
        return await self.enqueue(cmd)

    def enqueue(self, cmd: Command) -> asyncio.Future[Result]:
        """Queue cmd for the next batch; the future resolves once it is durable and applied.
        Cancelling the future only stops waiting: the command is still logged and applied."""
        if self._failed is not None:
            raise RuntimeFailed(str(self._failed))
        if not 0 < len(cmd.command_id) <= COMMAND_ID_LENGTH_MAX:
            raise BadCommandError(f"command_id must be 1..{COMMAND_ID_LENGTH_MAX} characters")
        if len(self._pending) >= PENDING_COMMANDS_MAX:
            raise Overloaded(f"{PENDING_COMMANDS_MAX} commands already waiting")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((cmd, future))
        self.stats["submitted"] += 1
        self._wake.set()
        return future

    async def _write_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._pending:
                    limit = min(self.config.batch_records_max, APPEND_BATCH_RECORDS_MAX)
                    batch = self._pending[:limit]
                    del self._pending[:limit]
                    self._inflight = batch
                    await self._write_batch(batch)
                    self._inflight = []
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            # A failed append leaves the log's tail uncertain: stop taking commands; a restart
            # recovers from whatever the log holds.
            self._failed = exc
            log.error("runtime stopped: log append or apply failed", error=repr(exc))
            for _, future in self._inflight + self._pending:
                if not future.done():
                    future.set_exception(RuntimeFailed(repr(exc)))
            self._pending.clear()
            self._inflight = []
            raise

    async def _write_batch(self, batch: list[tuple[Command, asyncio.Future[Result]]]) -> None:
        # The submitter's ts_ns is overwritten: time comes from where commands are ordered.
        ts_ns = max(self._last_ts_ns, self._clock_ns())
        self._last_ts_ns = ts_ns
        seq = self.engine.seq
        encode = self.codec.encoder.encode
        records = []
        logged = []
        for cmd, future in batch:
            cmd.seq = seq + 1
            cmd.ts_ns = ts_ns
            try:
                records.append(encode(cmd))
            except (OverflowError, TypeError, ValueError, msgspec.EncodeError) as exc:
                # One unloggable command (a caller's bug) must not stop the runtime for all.
                if not future.done():  # its caller may have stopped waiting (cancelled)
                    future.set_exception(BadCommandError(f"cannot log command: {exc}"))
                continue
            seq += 1
            logged.append((cmd, future))
        batch = logged
        if not batch:
            return
        started = time.perf_counter()
        try:
            positions = await self.log.append(records)
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(RuntimeFailed(repr(exc)))
            raise
        metrics.APPEND_SECONDS.observe(time.perf_counter() - started)
        cmds = [cmd for cmd, _ in batch]
        self._log_time(cmds, positions)
        results, batch_events = self._apply_all(cmds)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
        self.position = positions[-1]
        self._after_batch(batch_events)

    def _log_time(self, cmds: list[Command], positions: list[Position]) -> None:
        """Where the log keeps its own time (Redis), apply each command at that time, as every
        replay will (stamp_next), not at the clock read before the append."""
        previous_ts_ns = self.engine.ts_ns
        for cmd, position in zip(cmds, positions, strict=True):
            log_ts_ns = self.log.record_time_ns(position)
            if log_ts_ns is None:
                return
            cmd.ts_ns = previous_ts_ns = max(log_ts_ns, previous_ts_ns)
        self._last_ts_ns = previous_ts_ns

    def _apply_all(self, cmds: list[Command]) -> tuple[list[Result], list[Any]]:
        """Apply a batch in order; count outcomes per command type, time the batch."""
        apply = self.engine.apply
        results: list[Result] = []
        batch_events: list[Any] = []
        outcomes: dict[tuple[str, bool], int] = {}
        started = time.perf_counter()
        for cmd in cmds:
            result, events = apply(cmd)
            results.append(result)
            if events:
                batch_events.extend(events)
            key = (cmd.__class__.__name__, result.__class__ is Rejected)
            outcomes[key] = outcomes.get(key, 0) + 1
        metrics.APPLY_SECONDS.observe((time.perf_counter() - started) / len(cmds))
        for (kind, rejected), count in outcomes.items():
            metrics.COMMANDS.labels(kind, "rejected" if rejected else "accepted").inc(count)
            if rejected:
                self.stats["rejected"] += count
        self.stats["applied"] += len(cmds)
        self.stats["batches"] += 1
        return results, batch_events

    def _after_batch(self, batch_events: list[Any]) -> None:
        for fn in self._subscribers:
            fn(batch_events)
        if self.engine.seq - self._snapshot_seq >= self.config.snapshot_every_commands:
            asyncio.get_running_loop().create_task(self._snapshot_logged())

    async def _follow_loop(self, reply: Replier) -> None:
        read_blocking = getattr(self.log, "read_blocking", None)
        if read_blocking is None:
            raise TypeError(f"{type(self.log).__name__} cannot be tailed; follow mode needs the Redis log")
        decode = self.codec.command_decoder.decode
        limit = min(self.config.batch_records_max, APPEND_BATCH_RECORDS_MAX)
        redis_dep = dependencies.watch(dependencies.REDIS)
        backoff = Backoff()
        try:
            while True:
                try:
                    records = await read_blocking(self.position, limit, FOLLOW_BLOCK_MS)
                    if backoff.attempts:  # back after an outage: nothing lost meanwhile?
                        await self._check_log_kept()
                except Exception as exc:
                    # Redis down: wait, then read again after the last applied record (a read
                    # changes nothing, so nothing is applied twice or skipped). Anything else is fatal.
                    if dependencies.dependency_down(exc, dependencies.REDIS) is None:
                        raise
                    redis_dep.down(exc, "tailing the command log")
                    await backoff.sleep()
                    continue
                redis_dep.up()
                backoff.reset()
                if not records:
                    continue
                cmds: list[Command] = []
                for record in records:
                    cmd = decode(record.data)
                    # Stamped one by one: each seq and ts_ns follows from the previous command's.
                    stamp_next(cmd, self.engine.seq + len(cmds), self._last_ts_ns, record)
                    self._last_ts_ns = cmd.ts_ns
                    cmds.append(cmd)
                results, batch_events = self._apply_all(cmds)
                self.position = records[-1].position
                await _deliver(reply, list(zip(records, cmds, results, strict=True)), redis_dep)
                self._after_batch(batch_events)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._failed = exc
            log.error("engine stopped: reading or applying the log failed", error=repr(exc))
            raise

    async def _check_log_kept(self) -> None:
        """After an outage: Redis must still hold the last record applied. A Redis that came back
        without its data (no AOF, a failover to a replica that lagged) lost acknowledged commands,
        and applying whatever is appended next would fork the state: fatal (LogCorrupted)."""
        has_record = getattr(self.log, "has_record", None)
        if self.position is None or has_record is None:
            return
        if not await has_record(self.position):
            raise LogCorrupted(
                f"the command log came back without record {self.position}, the last one applied: "
                "Redis lost acknowledged commands (restarted without its AOF?)"
            )

    # ---- snapshots ------------------------------------------------------------------------------

    async def _snapshot_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.snapshot_interval_s)
            if self.engine.seq > self._snapshot_seq and self._failed is None:
                await self._snapshot_logged()

    async def _snapshot_logged(self) -> None:
        """A snapshot whose failure is logged, not raised: the runtime goes on without it."""
        try:
            await self.take_snapshot()
        except SnapshotStoreDown:
            pass  # logged once by the dependency watch; the next interval tries again
        except Exception as exc:
            log.error("snapshot failed", error=repr(exc))

    async def take_snapshot(self, *, wait: bool = False) -> SnapshotRecord | None:
        """Capture the state between two batches, then write it on the store's thread. While one
        is being written another is skipped (the periodic triggers), or with `wait` taken after
        it (stop)."""
        if not self.config.snapshots or (self._snapshot_lock.locked() and not wait):
            return None
        async with self._snapshot_lock:
            if self.position is None or self.engine.seq <= self._snapshot_seq:
                return None
            self._snapshotting = True
            try:
                return await self._take_snapshot()
            finally:
                self._snapshotting = False

    async def _take_snapshot(self) -> SnapshotRecord:
        assert self.position is not None
        # seq, position and the state are one consistent cut: no await until the capture began
        # (inline: the bytes exist; fork: the child holds a copy-on-write image of this instant).
        seq, position, ts_ns = self.engine.seq, self.position, self.engine.ts_ns
        previous, previous_seq = self._snapshot_position, self._snapshot_seq
        self._snapshot_seq = seq
        if self.config.snapshot_fork:
            data = await forksnap.capture(self.engine.snapshot, self.scratch_dir, str(seq))
        else:
            data = self.engine.snapshot()
        record = SnapshotRecord(
            seq=seq, position=position, state_hash=snapshot_hash(data), ts_ns=ts_ns, data=data
        )
        # What survived until now is long-lived state: keep the collector from walking it again.
        gcpolicy.freeze_survivors()
        on_postgres = str(getattr(self.snapshots, "url", "")).startswith("postgresql")
        store = dependencies.watch(dependencies.POSTGRES) if on_postgres else None
        try:
            await self.snapshots.save(record)
        except Exception as exc:
            # Not saved: the next interval tries again. Only the store's own errors count as the
            # store being down (a failed fork or scratch file is the engine's problem, not PostgreSQL's).
            self._snapshot_seq = previous_seq
            if (
                store is not None
                and dependencies.dependency_down(exc, dependencies.POSTGRES) == dependencies.POSTGRES
            ):
                store.down(exc, "saving a snapshot")
                raise SnapshotStoreDown(repr(exc)) from exc
            raise
        if store is not None:
            store.up()
        self._snapshot_position = record.position
        self.stats["snapshots"] += 1
        if self.config.trim_log and previous is not None:
            await self.log.trim_below(previous)
        return record


async def _deliver(
    reply: Replier, applied: list[tuple[LogRecord, Command, Result]], redis_dep: dependencies.Dependency
) -> None:
    """Hand an applied batch to `reply` (publish its results), retrying while Redis is down: the
    batch is applied once, its results are published once Redis is back."""
    backoff = Backoff()
    while True:
        try:
            await reply(applied)
            return
        except Exception as exc:
            if dependencies.dependency_down(exc, dependencies.REDIS) is None:
                raise
            redis_dep.down(exc, "publishing results")
            await backoff.sleep()


def _stamp(cmd: Command, engine: Engine, record: LogRecord) -> None:
    """Give a decoded record its seq and ts_ns, the same way live and in every replay."""
    stamp_next(cmd, engine.seq, engine.ts_ns, record)


def stamp_next(cmd: Command, previous_seq: int, previous_ts_ns: int, record: LogRecord) -> None:
    """Stamp a decoded record after (previous_seq, previous_ts_ns): the engine, its replicas and
    every replay call this, so they all see the same seq and time for each record."""
    expected = previous_seq + 1
    if cmd.seq == 0:
        cmd.seq = expected
    elif cmd.seq != expected:
        raise LogCorrupted(f"record at {record.position} has seq {cmd.seq}, expected {expected}")
    # The log's own time when it keeps one (a Redis entry id): what the appending host wrote into
    # the command is ignored, so one host's fast clock cannot move engine time (decision 022).
    # Engine time never goes back: a clock step back (or an older entry's time) holds it still.
    ts_ns = cmd.ts_ns if record.log_ts_ns is None else record.log_ts_ns
    cmd.ts_ns = max(ts_ns, previous_ts_ns)


async def replay(
    engine: Engine,
    log_backend: CommandLog,
    after: Position | None,
    *,
    until_seq: int | None = None,
    applied: list[tuple[LogRecord, Command, Result]] | None = None,
) -> tuple[int, Position | None]:
    """Apply every log record after `after` (up to `until_seq` when set); return how many, and
    the position of the last one applied. `until_seq=None` replays to the end.

    A record that carries a seq must be the next one; a record without (written by a
    distributed API process) gets the next seq here, the same on every replay.
    """
    decode = engine.codec.command_decoder.decode
    count = 0
    while True:
        page = await log_backend.read_from(after, REPLAY_PAGE_RECORDS)
        if not page:
            return count, after
        for record in page:
            if until_seq is not None and engine.seq >= until_seq:
                return count, after
            try:
                cmd = decode(record.data)
            except msgspec.DecodeError as exc:
                raise LogCorrupted(f"record at {record.position} does not decode: {exc}") from exc
            _stamp(cmd, engine, record)
            result, _ = engine.apply(cmd)
            if applied is not None:
                applied.append((record, cmd, result))
            count += 1
            after = record.position
