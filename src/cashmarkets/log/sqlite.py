"""The embedded command log: a SQLite journal in the data directory.

One table, one row per command: `pos` (the position, equal to the command's seq), the encoded
command, and a 16-byte hash chain `chain = blake2b(previous chain || data)`. The chain makes the
journal tamper-evident: changing, dropping or reordering any record breaks every chain value after
it, and readers check it as they go.

Durability: WAL mode with `synchronous=FULL`, so a COMMIT returns only after the WAL is fsynced.
A batch is one transaction (one fsync); the runtime builds batches from the commands that arrive
while the previous write is in flight (group commit).

SQLite calls block, so they run on one dedicated thread: the event loop keeps accepting commands
while a batch is being written.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

from cashmarkets.log.base import APPEND_BATCH_RECORDS_MAX, LogCorrupted, LogRecord, Position

JOURNAL_FORMAT_VERSION: Final = 1
CHAIN_BYTES: Final = 16
GENESIS_CHAIN: Final = b"\x00" * CHAIN_BYTES

_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    pos   INTEGER PRIMARY KEY,
    data  BLOB NOT NULL,
    chain BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS journal_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def chain_next(previous: bytes, data: bytes) -> bytes:
    """The hash chain link of a record that follows `previous`."""
    return hashlib.blake2b(previous + data, digest_size=CHAIN_BYTES).digest()


class SqliteJournal:
    """CommandLog on a SQLite file; positions are the decimal row ids 1, 2, 3, ..."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._last_pos = 0
        self._last_chain = GENESIS_CHAIN

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    # ---- the blocking side (journal thread only) ----------------------------------------------

    def open_sync(self) -> None:
        if self._db is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        db.executescript(_SCHEMA)
        row = db.execute("SELECT value FROM journal_meta WHERE key='format'").fetchone()
        if row is None:
            db.execute("INSERT INTO journal_meta VALUES ('format', ?)", (str(JOURNAL_FORMAT_VERSION),))
        elif int(row[0]) != JOURNAL_FORMAT_VERSION:
            raise LogCorrupted(f"journal format {row[0]}, this build reads {JOURNAL_FORMAT_VERSION}")
        last = db.execute("SELECT pos, chain FROM journal ORDER BY pos DESC LIMIT 1").fetchone()
        if last is not None:
            self._last_pos, self._last_chain = int(last[0]), bytes(last[1])
        self._db = db

    def _append_sync(self, records: Sequence[bytes]) -> list[Position]:
        db = self._require()
        pos, chain = self._last_pos, self._last_chain
        rows = []
        for data in records:
            pos += 1
            chain = chain_next(chain, data)
            rows.append((pos, data, chain))
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT INTO journal (pos, data, chain) VALUES (?, ?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        first = self._last_pos + 1
        self._last_pos, self._last_chain = pos, chain
        return [str(p) for p in range(first, pos + 1)]

    def _read_sync(self, after: Position | None, limit: int) -> list[LogRecord]:
        db = self._require()
        start = int(after) if after is not None else 0
        if start > 0:
            prev = db.execute("SELECT chain FROM journal WHERE pos = ?", (start,)).fetchone()
            if prev is None:
                raise LogCorrupted(f"record {start} is missing: the journal was trimmed past it")
            chain = bytes(prev[0])
        else:
            chain = self._trimmed_chain(db)
        out: list[LogRecord] = []
        # From the very start of a trimmed journal the first row may be any position.
        expected: int | None = start + 1 if start > 0 else None
        for pos, data, stored in db.execute(
            "SELECT pos, data, chain FROM journal WHERE pos > ? ORDER BY pos LIMIT ?", (start, limit)
        ):
            if expected is not None and pos != expected:
                raise LogCorrupted(f"journal gap: expected record {expected}, found {pos}")
            expected = pos + 1
            chain = chain_next(chain, bytes(data))
            if chain != bytes(stored):
                raise LogCorrupted(f"journal record {pos} fails its hash chain: altered or corrupted")
            out.append(LogRecord(str(pos), bytes(data)))
        return out

    def _trimmed_chain(self, db: sqlite3.Connection) -> bytes:
        row = db.execute("SELECT value FROM journal_meta WHERE key='trimmed_chain'").fetchone()
        return bytes.fromhex(row[0]) if row else GENESIS_CHAIN

    def _trim_sync(self, position: Position) -> int:
        db = self._require()
        below = int(position)
        prev = db.execute("SELECT chain FROM journal WHERE pos = ?", (below - 1,)).fetchone()
        if prev is None:
            return 0
        db.execute("BEGIN IMMEDIATE")
        cur = db.execute("DELETE FROM journal WHERE pos < ?", (below,))
        db.execute("INSERT OR REPLACE INTO journal_meta VALUES ('trimmed_chain', ?)", (bytes(prev[0]).hex(),))
        db.execute("COMMIT")
        return cur.rowcount

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("journal is not open")
        return self._db

    def _close_sync(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # ---- the CommandLog interface ----------------------------------------------------------------

    async def open(self) -> None:
        await self._run(self.open_sync)

    async def close(self) -> None:
        await self._run(self._close_sync)

    async def append(self, records: Sequence[bytes]) -> list[Position]:
        if not records:
            return []
        if len(records) > APPEND_BATCH_RECORDS_MAX:
            raise ValueError(f"batch of {len(records)} exceeds {APPEND_BATCH_RECORDS_MAX} records")
        result: list[Position] = await self._run(self._append_sync, records)
        return result

    async def read_from(self, after: Position | None, limit: int) -> list[LogRecord]:
        result: list[LogRecord] = await self._run(self._read_sync, after, limit)
        return result

    async def last_position(self) -> Position | None:
        return str(self._last_pos) if self._last_pos else None

    async def trim_below(self, position: Position) -> int:
        result: int = await self._run(self._trim_sync, position)
        return result

    def record_time_ns(self, position: Position) -> int | None:
        return None  # the runtime stamps each command's time into its bytes as it appends
