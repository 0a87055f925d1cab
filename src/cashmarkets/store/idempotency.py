"""Stored responses for `Idempotency-Key`: the first request with a key claims it (one INSERT that
only one concurrent request can win); a repeat with the same body gets the stored response, a
repeat with another body a 409, and a repeat while the first is still running a 409 too."""

from __future__ import annotations

import time
from typing import Literal

import msgspec
from sqlalchemy import and_, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from cashmarkets.store.tables import idempotency_keys

KEY_LENGTH_MAX = 128


def valid_key(key: object) -> bool:
    """An idempotency key is 1..KEY_LENGTH_MAX printable characters (HTTP header or socket field)."""
    return isinstance(key, str) and 0 < len(key) <= KEY_LENGTH_MAX and key.isprintable()


# Stored responses are kept this long; a retry after that is a new request.
RETENTION_S = 24 * 3600


class Stored(msgspec.Struct, frozen=True):
    status_code: int
    content_type: str
    body: bytes


Claim = Literal["new", "in_progress", "mismatch"]


class IdempotencyStore:
    """`lease_s`: how long a claim without an answer blocks retries (409 in progress) before a
    retry may take it over; longer than any request runs (the command timeout and then some)."""

    def __init__(self, engine: AsyncEngine, *, lease_s: float = 30.0) -> None:
        self.engine = engine
        self.lease_ns = int(lease_s * 1_000_000_000)
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    async def claim(self, scope: str, key: str, request_hash: str) -> Claim | Stored:
        now = time.time_ns()
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(idempotency_keys).where(
                    and_(
                        idempotency_keys.c.scope == scope,
                        idempotency_keys.c.key == key,
                        idempotency_keys.c.created_at_ns < now - RETENTION_S * 1_000_000_000,
                    )
                )
            )
            inserted = await conn.execute(
                self._insert(idempotency_keys)
                .values(scope=scope, key=key, request_hash=request_hash, created_at_ns=now)
                .on_conflict_do_nothing()
            )
            if inserted.rowcount == 1:
                return "new"
            row = (
                await conn.execute(
                    select(idempotency_keys).where(
                        and_(idempotency_keys.c.scope == scope, idempotency_keys.c.key == key)
                    )
                )
            ).first()
            if row is None:  # expired and deleted between the two statements: treat as new next time
                return "in_progress"
            if row.request_hash != request_hash:
                return "mismatch"
            if row.status_code is None:
                if row.created_at_ns >= now - self.lease_ns:
                    return "in_progress"
                # The claimant died (a crash, a kill) without answering or releasing: take the claim
                # over, compare-and-set so one retry wins. The engine's command-id dedup still
                # gives the retry the first attempt's outcome if that one reached the log.
                taken = await conn.execute(
                    update(idempotency_keys)
                    .where(
                        and_(
                            idempotency_keys.c.scope == scope,
                            idempotency_keys.c.key == key,
                            idempotency_keys.c.created_at_ns == row.created_at_ns,
                            idempotency_keys.c.status_code.is_(None),
                        )
                    )
                    .values(created_at_ns=now)
                )
                return "new" if taken.rowcount == 1 else "in_progress"
        return Stored(int(row.status_code), str(row.content_type or ""), bytes(row.response_body or b""))

    async def complete(self, scope: str, key: str, stored: Stored) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(idempotency_keys)
                .where(and_(idempotency_keys.c.scope == scope, idempotency_keys.c.key == key))
                .values(
                    status_code=stored.status_code,
                    content_type=stored.content_type,
                    response_body=stored.body,
                )
            )

    async def release(self, scope: str, key: str) -> None:
        """Forget a claim whose request failed on our side, so the client's retry can run."""
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(idempotency_keys).where(
                    and_(idempotency_keys.c.scope == scope, idempotency_keys.c.key == key)
                )
            )
