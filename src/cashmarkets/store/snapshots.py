"""Engine snapshots in the store: the state bytes, the seq and log position they stand for, and
their sha256, so a damaged snapshot is detected and skipped in favour of an older one.

The embedded store is a SQLite file in the data directory (`store.db`). Writes run on their own
thread so that saving a snapshot never stalls command processing.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

import msgspec

# How many snapshots to keep; older ones are deleted after a newer one is durable.
SNAPSHOTS_KEPT: Final = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS engine_snapshots (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    seq        INTEGER NOT NULL,
    position   TEXT NOT NULL,
    state_hash TEXT NOT NULL,
    ts_ns      INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    data       BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS engine_snapshots_seq ON engine_snapshots (seq);
"""


class SnapshotRecord(msgspec.Struct, frozen=True):
    seq: int
    position: str
    state_hash: str
    ts_ns: int
    data: bytes

    def intact(self) -> bool:
        return hashlib.sha256(self.data).hexdigest() == self.state_hash


class SqliteSnapshotStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshots")

    def open_sync(self) -> None:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            self._db = db

    def save_sync(self, record: SnapshotRecord) -> None:
        db = self._require()
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO engine_snapshots (seq, position, state_hash, ts_ns, size_bytes, data)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (record.seq, record.position, record.state_hash, record.ts_ns, len(record.data), record.data),
        )
        db.execute(
            "DELETE FROM engine_snapshots WHERE id NOT IN"
            " (SELECT id FROM engine_snapshots ORDER BY seq DESC, id DESC LIMIT ?)",
            (SNAPSHOTS_KEPT,),
        )
        db.execute("COMMIT")

    def list_sync(self) -> list[SnapshotRecord]:
        """Every kept snapshot, newest first."""
        rows = self._require().execute(
            "SELECT seq, position, state_hash, ts_ns, data FROM engine_snapshots ORDER BY seq DESC, id DESC"
        )
        return [SnapshotRecord(int(r[0]), str(r[1]), str(r[2]), int(r[3]), bytes(r[4])) for r in rows]

    def newest_intact_sync(self) -> SnapshotRecord | None:
        for record in self.list_sync():
            if record.intact():
                return record
        return None

    def close_sync(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("snapshot store is not open")
        return self._db

    async def save(self, record: SnapshotRecord) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self.save_sync, record)
