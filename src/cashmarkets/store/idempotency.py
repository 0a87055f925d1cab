"""Stored responses for `Idempotency-Key`: the first request with a key claims it (one INSERT that
only one concurrent request can win); a repeat with the same body gets the stored response, a
repeat with another body a 409, and a repeat while the first is still running a 409 too.

A claim is held by one request of one live process: it carries a short lease (`lease_s`, 3 s by
default) that the process renews every third of it while the request runs. A process that dies
(killed, crashed) stops renewing, so its claims are free again within the lease, not after the
longest a request could run. A release that fails (the store is down) is queued and retried in
the background until it succeeds, so an outage does not leave a key blocked past the outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from typing import Final, Literal

import msgspec
import structlog
from sqlalchemy import ColumnElement, and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from cashmarkets.store.tables import idempotency_keys

log = structlog.get_logger("cashmarkets.idempotency")

KEY_LENGTH_MAX = 128


def valid_key(key: object) -> bool:
    """An idempotency key is 1..KEY_LENGTH_MAX printable characters (HTTP header or socket field)."""
    return isinstance(key, str) and 0 < len(key) <= KEY_LENGTH_MAX and key.isprintable()


# Stored responses are kept this long; a retry after that is a new request.
RETENTION_S = 24 * 3600
# A failed release is tried again this often until it succeeds.
RELEASE_RETRY_S: Final = 0.5
# Claims are renewed this many times per lease (a renewal may be late by one store round trip).
RENEWALS_PER_LEASE: Final = 3

ScopeKey = tuple[str, str]


class Stored(msgspec.Struct, frozen=True):
    status_code: int
    content_type: str
    body: bytes


Claim = Literal["new", "in_progress", "mismatch"]


class IdempotencyStore:
    """`lease_s`: how long a claim whose process stopped renewing it blocks retries (409 in
    progress) before a retry may take it over. Claims made here are renewed while held."""

    def __init__(self, engine: AsyncEngine, *, lease_s: float = 3.0) -> None:
        self.engine = engine
        self.lease_s = lease_s
        self.lease_ns = int(lease_s * 1_000_000_000)
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self.process_id = uuid.uuid4().hex[:16]
        self._serial = itertools.count(1)
        # Claims of requests running in this process -> (claimant, claimed at, ns).
        self._held: dict[ScopeKey, tuple[str, int]] = {}
        self._unreleased: dict[ScopeKey, str] = {}  # releases that failed, to try again
        self._renewer: asyncio.Task[None] | None = None
        self._releaser: asyncio.Task[None] | None = None

    def _where(self, scope: str, key: str) -> ColumnElement[bool]:
        return and_(idempotency_keys.c.scope == scope, idempotency_keys.c.key == key)

    async def claim(self, scope: str, key: str, request_hash: str) -> Claim | Stored:
        now = time.time_ns()
        claimant = f"{self.process_id}:{next(self._serial)}"
        lease_until = now + self.lease_ns
        where = self._where(scope, key)
        async with self.engine.begin() as conn:
            expired = idempotency_keys.c.created_at_ns < now - RETENTION_S * 1_000_000_000
            await conn.execute(delete(idempotency_keys).where(and_(where, expired)))
            inserted = await conn.execute(
                self._insert(idempotency_keys)
                .values(
                    scope=scope,
                    key=key,
                    request_hash=request_hash,
                    created_at_ns=now,
                    claimant=claimant,
                    lease_until_ns=lease_until,
                )
                .on_conflict_do_nothing()
            )
            if inserted.rowcount == 1:
                return self._hold(scope, key, claimant, now)
            row = (await conn.execute(select(idempotency_keys).where(where))).first()
            if row is None:  # expired and deleted between the two statements: treat as new next time
                return "in_progress"
            if row.request_hash != request_hash:
                return "mismatch"
            if row.status_code is None:
                # Rows claimed before leases were renewed (0009) have none: created + lease.
                held_until = row.lease_until_ns or row.created_at_ns + self.lease_ns
                if held_until >= now:
                    return "in_progress"
                # The claimant's process died (a crash, a kill) or lost the store for a whole
                # lease: take the claim over, compare-and-set so one retry wins. The engine's
                # command-id dedup still gives the retry the first attempt's outcome if that one
                # reached the log.
                taken = await conn.execute(
                    update(idempotency_keys)
                    .where(
                        and_(
                            where,
                            idempotency_keys.c.created_at_ns == row.created_at_ns,
                            _same(idempotency_keys.c.claimant, row.claimant),
                            idempotency_keys.c.status_code.is_(None),
                        )
                    )
                    .values(created_at_ns=now, claimant=claimant, lease_until_ns=lease_until)
                )
                return self._hold(scope, key, claimant, now) if taken.rowcount == 1 else "in_progress"
        return Stored(int(row.status_code), str(row.content_type or ""), bytes(row.response_body or b""))

    def _hold(self, scope: str, key: str, claimant: str, now_ns: int) -> Claim:
        self._held[(scope, key)] = (claimant, now_ns)
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew(), name="idempotency-renew")
        return "new"

    def _ours(self, scope: str, key: str, claimant: str | None) -> ColumnElement[bool]:
        """Only the claim `claimant` holds for (scope, key): never one a retry took over."""
        return and_(
            self._where(scope, key),
            idempotency_keys.c.status_code.is_(None),
            _same(idempotency_keys.c.claimant, claimant),
        )

    def _let_go(self, scope: str, key: str) -> str | None:
        """This process no longer renews the claim: its claimant (None: not claimed here)."""
        held = self._held.pop((scope, key), None)
        return None if held is None else held[0]

    async def complete(self, scope: str, key: str, stored: Stored) -> None:
        """Store the answer. If the store cannot be reached the claim is released instead (queued
        until it can be): a retry then runs again, and the engine's command-id dedup answers it
        with the first outcome."""
        claimant = self._let_go(scope, key)
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    update(idempotency_keys)
                    .where(self._ours(scope, key, claimant))
                    .values(
                        status_code=stored.status_code,
                        content_type=stored.content_type,
                        response_body=stored.body,
                        claimant=None,
                        lease_until_ns=None,
                    )
                )
        except Exception as exc:
            self._release_soon(scope, key, claimant, exc)

    async def release(self, scope: str, key: str) -> None:
        """Forget a claim whose request failed on our side, so the client's retry can run. If the
        store cannot be reached, the release is queued and retried until it succeeds."""
        claimant = self._let_go(scope, key)
        try:
            await self._delete(scope, key, claimant)
        except Exception as exc:
            self._release_soon(scope, key, claimant, exc)

    async def _delete(self, scope: str, key: str, claimant: str | None) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(idempotency_keys).where(self._ours(scope, key, claimant)))

    def _release_soon(self, scope: str, key: str, claimant: str | None, exc: Exception) -> None:
        log.warning("idempotency claim not released; retrying in the background", error=repr(exc))
        if claimant is None:
            return
        self._unreleased[(scope, key)] = claimant
        if self._releaser is None or self._releaser.done():
            self._releaser = asyncio.get_running_loop().create_task(
                self._release_later(), name="idempotency-release"
            )

    async def _release_later(self) -> None:
        while self._unreleased:
            await asyncio.sleep(RELEASE_RETRY_S)
            for (scope, key), claimant in list(self._unreleased.items()):
                try:
                    await self._delete(scope, key, claimant)
                except Exception as exc:
                    log.debug("idempotency release still failing", error=repr(exc))
                    break  # the store is still down: wait before the next try
                self._unreleased.pop((scope, key), None)

    @property
    def unreleased(self) -> int:
        """Releases waiting for the store to come back."""
        return len(self._unreleased)

    async def _renew(self) -> None:
        """Every third of a lease, push the lease of every claim held here a lease ahead."""
        while self._held:
            await asyncio.sleep(self.lease_s / RENEWALS_PER_LEASE)
            now = time.time_ns()
            # Only claims held a while: most requests answer before their first renewal is due.
            due = now - self.lease_ns // RENEWALS_PER_LEASE
            held = [(sk, c) for sk, (c, since) in self._held.items() if since <= due]
            if not held:
                continue
            lease_until = now + self.lease_ns
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(
                        update(idempotency_keys)
                        .where(
                            and_(
                                idempotency_keys.c.status_code.is_(None),
                                or_(
                                    *(
                                        and_(self._where(s, k), idempotency_keys.c.claimant == c)
                                        for (s, k), c in held
                                    )
                                ),
                            )
                        )
                        .values(lease_until_ns=lease_until)
                    )
            except Exception as exc:  # the store is down: the claims lapse after their lease
                log.debug("idempotency claims not renewed", error=repr(exc))

    def abandon(self) -> None:
        """Stop renewing and releasing (shutdown; tests use it to play a process that died)."""
        self._held.clear()
        self._unreleased.clear()
        for task in (self._renewer, self._releaser):
            if task is not None:
                task.cancel()

    async def close(self) -> None:
        """Try the queued releases once more, then stop the background work."""
        for (scope, key), claimant in list(self._unreleased.items()):
            with contextlib.suppress(Exception):
                await self._delete(scope, key, claimant)
        self.abandon()


def _same(column: ColumnElement[str], value: str | None) -> ColumnElement[bool]:
    return column.is_(None) if value is None else column == value
