"""One holder at a time for a store-wide role (the projector): a second projector on the same store
would write batches the first already wrote and move the checkpoint backwards.

SQLite: an exclusive `flock` on `<store file>.<name>.lock` (released by the kernel when the holder
dies, even by SIGKILL). PostgreSQL: a session advisory lock on a connection held open for as long
as the role runs (released when that connection closes, e.g. when the holder dies).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger("cashmarkets.locks")

POLL_S: Final = 0.1
LOG_EVERY_POLLS: Final = 100  # while waiting: a warning at once, then every 10 s


def _advisory_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock."""
    return int.from_bytes(
        hashlib.blake2b(f"cashmarkets:{name}".encode(), digest_size=8).digest(), "big", signed=True
    )


@contextlib.asynccontextmanager
async def exclusive(db: AsyncEngine, name: str) -> AsyncIterator[None]:
    """Hold the store-wide lock `name` for the body; waits (logging now and then) while another
    process holds it."""
    if db.dialect.name == "sqlite":
        database = db.url.database
        assert database, "an in-memory SQLite store has no other process to exclude"
        async with _file_lock(Path(f"{database}.{name}.lock"), name):
            yield
        return
    async with db.connect() as conn:
        key = _advisory_key(name)
        polls = 0
        while not (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})).scalar():
            if polls % LOG_EVERY_POLLS == 0:
                log.warning("waiting for another holder of the lock", lock=name)
            polls += 1
            await asyncio.sleep(POLL_S)
        await conn.commit()  # the lock is per session: no transaction needs to stay open
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})


@contextlib.asynccontextmanager
async def _file_lock(path: Path, name: str) -> AsyncIterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        polls = 0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if polls % LOG_EVERY_POLLS == 0:
                    log.warning("waiting for another holder of the lock", lock=name, path=str(path))
                polls += 1
                await asyncio.sleep(POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
