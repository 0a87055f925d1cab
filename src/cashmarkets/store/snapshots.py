"""Engine snapshots in the store: the state bytes, the seq and log position they stand for, and
their sha256, so a damaged snapshot is detected and skipped in favour of an older one.

One table (`engine_snapshots`) on SQLite (embedded) or PostgreSQL (distributed). The engine
process writes; the projector reads (to rebuild its replica up to its checkpoint).
"""

from __future__ import annotations

import hashlib

import msgspec
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cashmarkets.store.db import create_engine
from cashmarkets.store.tables import engine_snapshots

# How many snapshots to keep; older ones are deleted after a newer one is durable.
SNAPSHOTS_KEPT = 3


class SnapshotRecord(msgspec.Struct, frozen=True):
    seq: int
    position: str
    state_hash: str
    ts_ns: int
    data: bytes

    def intact(self) -> bool:
        return hashlib.sha256(self.data).hexdigest() == self.state_hash


class SnapshotStore:
    """Snapshots through SQLAlchemy; `open()` brings the schema to the newest migration first
    unless `migrate=False` (distributed processes expect `cashmarkets migrate` to have run)."""

    def __init__(self, url: str, *, migrate: bool = True, engine: AsyncEngine | None = None) -> None:
        self.url = url
        self.migrate = migrate
        self._engine = engine
        self._owns_engine = engine is None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("snapshot store is not open")
        return self._engine

    async def open(self) -> None:
        if self.migrate:
            from cashmarkets.store.migrate import upgrade

            await upgrade(self.url)
        if self._engine is None:
            self._engine = create_engine(self.url)

    async def close(self) -> None:
        if self._engine is not None and self._owns_engine:
            await self._engine.dispose()
            self._engine = None

    async def save(self, record: SnapshotRecord) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                engine_snapshots.insert().values(
                    seq=record.seq,
                    position=record.position,
                    state_hash=record.state_hash,
                    ts_ns=record.ts_ns,
                    size_bytes=len(record.data),
                    data=record.data,
                )
            )
            keep = (
                select(engine_snapshots.c.id)
                .order_by(engine_snapshots.c.seq.desc(), engine_snapshots.c.id.desc())
                .limit(SNAPSHOTS_KEPT)
                .scalar_subquery()
            )
            await conn.execute(delete(engine_snapshots).where(engine_snapshots.c.id.not_in(keep)))

    async def list(self, *, max_seq: int | None = None) -> list[SnapshotRecord]:
        """Kept snapshots, newest first (only those at or below `max_seq` when given)."""
        query = select(
            engine_snapshots.c.seq,
            engine_snapshots.c.position,
            engine_snapshots.c.state_hash,
            engine_snapshots.c.ts_ns,
            engine_snapshots.c.data,
        ).order_by(engine_snapshots.c.seq.desc(), engine_snapshots.c.id.desc())
        if max_seq is not None:
            query = query.where(engine_snapshots.c.seq <= max_seq)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            SnapshotRecord(int(r.seq), str(r.position), str(r.state_hash), int(r.ts_ns), bytes(r.data))
            for r in rows
        ]

    async def newest_intact(self, *, max_seq: int | None = None) -> SnapshotRecord | None:
        for record in await self.list(max_seq=max_seq):
            if record.intact():
                return record
        return None
