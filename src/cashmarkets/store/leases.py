"""Fenced singletons: a lease per "one per deployment" role (projector, chartgame, ...), with a
fencing token that only grows (docs/decisions/018).

A holder acts only while its term is valid, and stamps its token on what it does; the engine
(`Engine.fence`) and the projector's checkpoint refuse a token lower than one they have seen. So a
holder that lost its lease (paused, cut off from the store, the store restarted) cannot act after
its successor has claimed: at worst its in-flight work is refused.

PostgreSQL: a row per role in `leases` (holder, token, expiry on the database server's clock).
A holder renews every `ttl/5`; it stops acting `ttl/5` before the server-side expiry of its last
renewal, measured on its own monotonic clock from when that renewal was sent, so it has stopped
before anyone can take the lease. Another process takes the row only once it has expired, with
token + 1. A clean stop expires the row at once.

SQLite (embedded, one machine): an exclusive `flock` beside the store file decides (the kernel
releases it when the holder dies, and a living holder cannot lose it); the row only counts tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Final

import structlog
from sqlalchemy import BigInteger, case, cast, extract, func, literal, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from cashmarkets.ops import dependencies
from cashmarkets.ops.backoff import Backoff
from cashmarkets.ops.ids import new_id
from cashmarkets.store.tables import leases

log = structlog.get_logger("cashmarkets.leases")

DEFAULT_TTL_S: Final = 5.0
LOG_EVERY_POLLS: Final = 50  # while waiting: a warning at once, then now and then
RELEASE_TIMEOUT_S: Final = 2.0

Floor = Callable[[], Awaitable[int]]


class LeaseLost(Exception):
    """This process no longer holds its role's lease: it must stop acting."""


class StaleFence(LeaseLost):
    """The engine or the store refused our token: a newer holder has claimed the role."""


class Term:
    """One holding of a lease: the token to stamp, and whether this process may still act."""

    def __init__(self, role: str, token: int, holder: str, deadline: float) -> None:
        self.role = role
        self.token = token
        self.holder = holder
        self.lost = asyncio.Event()
        self.why = ""
        self._deadline = deadline  # time.monotonic(); inf on SQLite
        self._fd: int | None = None
        self._keeper: asyncio.Task[None] | None = None

    def valid(self) -> bool:
        return not self.lost.is_set() and time.monotonic() < self._deadline

    def check(self) -> None:
        """Raise LeaseLost unless this term may still act: call it before each action."""
        if not self.valid():
            self.lose(self.why or "the lease expired")
            raise LeaseLost(f"{self.role}: lease (token {self.token}) lost: {self.why}")

    def lose(self, why: str) -> None:
        if not self.lost.is_set():
            self.why = why
            self.lost.set()
            log.warning("lease lost: stop acting", role=self.role, token=self.token, why=why)


class Lease:
    """The lease of `role` in the store `db`; `acquire` it for a Term, `release` the Term."""

    def __init__(
        self,
        db: AsyncEngine,
        role: str,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        holder: str | None = None,
    ) -> None:
        assert 0 < len(role) <= 64
        self.db = db
        self.role = role
        self.ttl_s = ttl_s
        self.renew_s = ttl_s / 5
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{new_id()[:8]}"[:128]
        self._sqlite = db.dialect.name == "sqlite"
        self._insert: Any = sqlite.insert if self._sqlite else postgresql.insert

    # ---- acquiring -------------------------------------------------------------------------------

    async def acquire(self, stop: asyncio.Event | None = None, floor: Floor | None = None) -> Term | None:
        """Wait until the lease is ours (None if `stop` is set first). The token is the last one
        plus 1, and at least `floor()` (the highest the fenced resource has seen, plus 1: tokens
        keep growing even if the lease table was lost)."""
        polls = 0
        while stop is None or not stop.is_set():
            try:
                term = await self._try(floor)
            except Exception as exc:  # the store is down or restarting: keep trying
                # asyncpg's connect raises bare OSErrors: from here, those are the store's.
                if (name := dependencies.dependency_down(exc, dependencies.POSTGRES)) is not None:
                    dependencies.watch(name).down(exc, f"campaigning for the {self.role} lease")
                else:
                    log.warning("lease store unavailable", role=self.role, error=repr(exc))
                term = None
            else:
                if not self._sqlite:
                    dependencies.watch(dependencies.POSTGRES).up()
            if term is not None:
                log.info("lease acquired", role=self.role, token=term.token, holder=self.holder)
                return term
            if polls % LOG_EVERY_POLLS == 0:
                log.warning("waiting for another holder of the lease", role=self.role)
            polls += 1
            if stop is None:
                await asyncio.sleep(self.renew_s)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.renew_s)
        return None

    async def _try(self, floor: Floor | None) -> Term | None:
        fd = self._flock() if self._sqlite else None
        if self._sqlite and fd is None:
            return None
        try:
            minimum = await floor() if floor is not None else 1
            sent = time.monotonic()
            token = await self._take(max(1, minimum))
        except BaseException:
            if fd is not None:
                _unlock(fd)
            raise
        if token is None:
            return None
        if fd is not None:
            term = Term(self.role, token, self.holder, float("inf"))
            term._fd = fd
            return term
        term = Term(self.role, token, self.holder, sent + self.ttl_s - self.renew_s)
        term._keeper = asyncio.create_task(self._keep(term), name=f"lease-{self.role}")
        return term

    def _now_ms(self) -> Any:
        if self._sqlite:  # one machine: its clock
            return literal(time.time_ns() // 1_000_000, BigInteger)
        # The database server's clock, the same for every contender.
        return cast(extract("epoch", func.statement_timestamp()) * 1000, BigInteger)

    async def _take(self, minimum: int) -> int | None:
        now = self._now_ms()
        ttl_ms = int(self.ttl_s * 1000)
        stmt = self._insert(leases).values(
            role=self.role,
            holder=self.holder,
            token=minimum,
            expires_at_ms=now + ttl_ms,
            acquired_at_ms=now,
        )
        following = leases.c.token + 1
        stmt = stmt.on_conflict_do_update(
            index_elements=[leases.c.role],
            set_={
                "holder": stmt.excluded.holder,
                "token": case((following > minimum, following), else_=minimum),
                "expires_at_ms": stmt.excluded.expires_at_ms,
                "acquired_at_ms": stmt.excluded.acquired_at_ms,
            },
            # SQLite: the flock already decided.
            where=None if self._sqlite else leases.c.expires_at_ms < stmt.excluded.acquired_at_ms,
        ).returning(leases.c.token)
        async with self.db.begin() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else int(row.token)

    def _flock(self) -> int | None:
        database = self.db.url.database
        assert database, "an in-memory SQLite store has no other process to exclude"
        path = Path(f"{database}.{self.role}.lease")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    # ---- holding -----------------------------------------------------------------------------------

    async def _keep(self, term: Term) -> None:
        """Renew every renew_s; lose the term at its deadline if no renewal got through by then,
        or at once if another holder has the row."""
        next_renew = time.monotonic() + self.renew_s
        while not term.lost.is_set():
            now = time.monotonic()
            if now >= term._deadline:
                term.lose("not renewed in time (the store is unreachable or slow)")
                return
            wake = min(next_renew, term._deadline)
            if wake > now:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(term.lost.wait(), wake - now)
                continue
            sent = time.monotonic()
            try:
                async with asyncio.timeout(max(0.01, term._deadline - sent)):
                    ours = await self._renew(term)
            except Exception as exc:
                if (name := dependencies.dependency_down(exc, dependencies.POSTGRES)) is not None:
                    dependencies.watch(name).down(exc, f"renewing the {self.role} lease")
                else:
                    log.warning(
                        "lease not renewed; retrying", role=self.role, token=term.token, error=repr(exc)
                    )
                next_renew = time.monotonic() + min(self.renew_s, 0.2)
                continue
            if not ours:
                term.lose("another holder has the lease")
                return
            term._deadline = max(term._deadline, sent + self.ttl_s - self.renew_s)
            next_renew = sent + self.renew_s

    def _ours(self, term: Term) -> tuple[Any, ...]:
        return (leases.c.role == self.role, leases.c.token == term.token, leases.c.holder == term.holder)

    async def _renew(self, term: Term) -> bool:
        stmt = (
            update(leases)
            .where(*self._ours(term))
            .values(expires_at_ms=self._now_ms() + int(self.ttl_s * 1000))
            .returning(leases.c.token)
        )
        async with self.db.begin() as conn:
            return (await conn.execute(stmt)).first() is not None

    async def release(self, term: Term) -> None:
        """Stop holding: the next holder may take the lease at once."""
        still_ours = term.valid()
        term.why = term.why or "released"
        term.lost.set()
        if term._keeper is not None:
            term._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await term._keeper
        if term._fd is not None:
            _unlock(term._fd)
            term._fd = None
            return
        if still_ours:
            stmt = update(leases).where(*self._ours(term)).values(expires_at_ms=0)
            try:
                async with asyncio.timeout(RELEASE_TIMEOUT_S), self.db.begin() as conn:
                    await conn.execute(stmt)
            except Exception as exc:  # it expires on its own
                log.warning("lease not released; it expires by itself", role=self.role, error=repr(exc))


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


async def hold(
    lease: Lease,
    body: Callable[[Term], Coroutine[Any, Any, None]],
    stop: asyncio.Event | None = None,
    floor: Floor | None = None,
) -> None:
    """Run `body(term)` for every term of `lease` until `stop` is set or `body` returns: wait for
    the lease, run, and when the term is lost cancel the body at once, then wait again. A body that
    raises LeaseLost (e.g. StaleFence), or fails because Redis or PostgreSQL is down, ends its
    term; any other error ends `hold` with it."""
    backoff = Backoff()
    while stop is None or not stop.is_set():
        term = await lease.acquire(stop, floor)
        if term is None:
            return
        task = asyncio.create_task(body(term), name=f"{lease.role}-term-{term.token}")
        watchers = [asyncio.create_task(term.lost.wait())]
        if stop is not None:
            watchers.append(asyncio.create_task(stop.wait()))
        try:
            await asyncio.wait([task, *watchers], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (*watchers, task):
                waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.gather(*watchers, return_exceptions=True)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            await lease.release(term)
        if task.cancelled():
            continue  # lost or stopped
        error = task.exception()
        if error is None:
            return
        if isinstance(error, LeaseLost):
            log.warning("term ended", role=lease.role, token=term.token, why=str(error))
            continue
        if (name := dependencies.dependency_down(error, dependencies.POSTGRES)) is not None:
            # Redis or PostgreSQL down mid-term (the claim, a command): not a reason to exit.
            # Stop acting (done: the term is released), wait, then campaign again.
            log.warning("term ended: dependency down", role=lease.role, dependency=name, error=repr(error))
            await backoff.sleep()
            continue
        raise error
