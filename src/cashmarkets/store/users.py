"""Users, credentials, wallet identities, login nonces, magic links, refresh tokens, audit log.

Platform data, not money: it lives in SQL directly, not in the engine. Single-use things (nonces,
magic links, refresh tokens) are consumed with one conditional UPDATE, so two concurrent uses
cannot both succeed.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Iterable
from typing import Any, Final, Literal

import msgspec
from sqlalchemy import and_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from cashmarkets.store.tables import (
    audit_log,
    credentials,
    login_nonces,
    magic_links,
    refresh_tokens,
    users,
    wallet_identities,
)

NS_PER_S = 1_000_000_000

# How long a user's live state (role, status, token version, revoked sign-ins) is trusted from
# memory before it is read again: the most a change made by another process (another API
# process, the CLI) takes to reach this one. Changes made through this process's own UserStore
# reach it at once. Checked states kept in memory: the oldest go first beyond this many.
USER_STATE_TTL_S: Final = 1.0
USER_STATES_MAX: Final = 100_000
# Users whose state is read in one query (the gateway's revalidation sweep reads many at once).
STATE_BATCH: Final = 500


class User(msgspec.Struct, frozen=True):
    id: str
    email: str | None
    role: str
    status: str
    created_at_ns: int
    token_version: int = 0


class UserState(msgspec.Struct, frozen=True):
    """What an access token is checked against on every use: the user's role and status now, the
    token version (bumped when the status changes: tokens issued before are refused), and the
    sign-ins (refresh token families) revoked recently enough for their access tokens to live."""

    role: str
    status: str
    token_version: int
    revoked_sessions: frozenset[str]


class EmailTaken(Exception):
    pass


RefreshOutcome = Literal["ok", "invalid", "expired", "reused"]


def token_hash(token: str) -> str:
    """Opaque tokens (refresh, magic link) are stored only as their sha256."""
    return hashlib.sha256(token.encode()).hexdigest()


def normalize_email(email: str) -> str:
    return email.strip().lower()


def _user(row: Any) -> User:
    return User(
        id=row.id,
        email=row.email,
        role=row.role,
        status=row.status,
        created_at_ns=row.created_at_ns,
        token_version=row.token_version,
    )


class UserStore:
    """`session_window_s`: how far back a revoked sign-in still matters, the access tokens' lifetime
    (plus a margin for clocks): an access token of a sign-in revoked longer ago has expired."""

    def __init__(
        self, engine: AsyncEngine, *, session_window_s: float = 3600.0, state_ttl_s: float = USER_STATE_TTL_S
    ) -> None:
        self.engine = engine
        self.session_window_s = session_window_s
        self.state_ttl_s = state_ttl_s
        # user id -> (monotonic time until which it is trusted, its state; None: no such user)
        self._states: dict[str, tuple[float, UserState | None]] = {}
        self._loading: dict[str, asyncio.Task[UserState | None]] = {}
        self._generation: dict[str, int] = {}  # bumped by forget(): a load begun before is not kept

    # ---- live state (checked on every authenticated request and socket command) -------------------

    def cached_state(self, user_id: str) -> tuple[bool, UserState | None]:
        """(known, state) from memory only: `known` is False when it must be read."""
        hit = self._states.get(user_id)
        if hit is not None and time.monotonic() < hit[0]:
            return True, hit[1]
        return False, None

    async def state(self, user_id: str) -> UserState | None:
        """The user's live state, at most `state_ttl_s` old; None if there is no such user. A
        cache hit is a dict lookup and a clock comparison; a miss reads the store once however
        many requests wait for it."""
        hit = self._states.get(user_id)
        if hit is not None and time.monotonic() < hit[0]:
            return hit[1]
        loading = self._loading.get(user_id)
        if loading is None:
            # A task of its own: a waiter that goes away (a client hanging up) does not cancel
            # the read the others wait for.
            loading = asyncio.get_running_loop().create_task(self._load_one(user_id))
            self._loading[user_id] = loading
            loading.add_done_callback(functools.partial(self._loaded, user_id))
        return await asyncio.shield(loading)

    async def _load_one(self, user_id: str) -> UserState | None:
        return (await self.load_states([user_id]))[user_id]

    def _loaded(self, user_id: str, task: asyncio.Task[UserState | None]) -> None:
        if self._loading.get(user_id) is task:
            del self._loading[user_id]
        if not task.cancelled():
            task.exception()  # retrieved here, whether or not a waiter is left to see it

    async def load_states(self, user_ids: Iterable[str]) -> dict[str, UserState | None]:
        """Read these users' states from the store now (whatever the cache holds) and keep them."""
        ids = list(dict.fromkeys(user_ids))
        found: dict[str, UserState | None] = {}
        for start in range(0, len(ids), STATE_BATCH):
            batch = ids[start : start + STATE_BATCH]
            generations = {u: self._generation.get(u, 0) for u in batch}
            began = time.monotonic()
            since_ns = time.time_ns() - int(self.session_window_s * NS_PER_S)
            async with self.engine.connect() as conn:
                rows = (
                    await conn.execute(
                        select(users.c.id, users.c.role, users.c.status, users.c.token_version).where(
                            users.c.id.in_(batch)
                        )
                    )
                ).all()
                revoked = (
                    await conn.execute(
                        select(refresh_tokens.c.user_id, refresh_tokens.c.family_id)
                        .where(
                            and_(
                                refresh_tokens.c.user_id.in_(batch),
                                refresh_tokens.c.revoked_at_ns > since_ns,
                            )
                        )
                        .distinct()
                    )
                ).all()
            sessions: dict[str, set[str]] = {}
            for r in revoked:
                sessions.setdefault(r.user_id, set()).add(r.family_id)
            for user_id in batch:
                found[user_id] = None
            for row in rows:
                found[row.id] = UserState(
                    role=row.role,
                    status=row.status,
                    token_version=row.token_version,
                    revoked_sessions=frozenset(sessions.get(row.id, ())),
                )
            # Trusted for state_ttl_s from when the read began (it may have waited for the store),
            # and not kept at all if a change was made here meanwhile.
            until = began + self.state_ttl_s
            for user_id in batch:
                if self._generation.get(user_id, 0) == generations[user_id]:
                    self._keep(user_id, until, found[user_id])
        return found

    def _keep(self, user_id: str, until: float, state: UserState | None) -> None:
        self._states.pop(user_id, None)
        if len(self._states) >= USER_STATES_MAX:
            del self._states[next(iter(self._states))]
        self._states[user_id] = (until, state)

    def forget(self, user_id: str) -> None:
        """A change to this user was made: the next check reads the store (at once, in this
        process; other processes see it within `state_ttl_s`)."""
        self._states.pop(user_id, None)
        self._loading.pop(user_id, None)  # a read begun before the change is not joined any more
        self._generation[user_id] = self._generation.get(user_id, 0) + 1
        if len(self._generation) > USER_STATES_MAX:
            del self._generation[next(iter(self._generation))]

    async def create(
        self, *, email: str | None, role: str = "player", password_hash: str | None = None
    ) -> User:
        now = time.time_ns()
        user = User(id=uuid.uuid4().hex, email=email, role=role, status="active", created_at_ns=now)
        try:
            async with self.engine.begin() as conn:
                await conn.execute(users.insert().values(msgspec.structs.asdict(user)))
                if password_hash is not None:
                    await conn.execute(
                        credentials.insert().values(
                            user_id=user.id, password_hash=password_hash, updated_at_ns=now
                        )
                    )
        except IntegrityError as exc:
            raise EmailTaken(email) from exc
        return user

    async def by_email(self, email: str) -> tuple[User, str | None] | None:
        query = (
            select(users, credentials.c.password_hash)
            .select_from(users.outerjoin(credentials, credentials.c.user_id == users.c.id))
            .where(users.c.email == email)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else (_user(row), row.password_hash)

    async def by_id(self, user_id: str) -> User | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
        return None if row is None else _user(row)

    async def set_role(self, user_id: str, role: str) -> bool:
        """The new role holds for tokens already issued too (the role is read live, not from the
        token): a demoted admin's next request is refused."""
        async with self.engine.begin() as conn:
            result = await conn.execute(update(users).where(users.c.id == user_id).values(role=role))
        self.forget(user_id)
        return result.rowcount == 1

    async def set_status(self, user_id: str, status: str) -> bool:
        """`active` or `disabled`. A change bumps the token version: every access token issued
        before is refused from now on, also after the account is enabled again. False if there
        is no such user."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(users)
                .where(and_(users.c.id == user_id, users.c.status != status))
                .values(status=status, token_version=users.c.token_version + 1)
            )
            found = result.rowcount == 1
            if not found:  # unchanged, or no such user
                found = (
                    await conn.execute(select(users.c.id).where(users.c.id == user_id))
                ).first() is not None
        self.forget(user_id)
        return found

    # ---- refresh tokens (rotating, with reuse detection) ------------------------------------------

    async def issue_refresh(self, user_id: str, ttl_s: int, family_id: str | None = None) -> str:
        token = secrets.token_urlsafe(32)
        now = time.time_ns()
        async with self.engine.begin() as conn:
            await conn.execute(
                refresh_tokens.insert().values(
                    token_hash=token_hash(token),
                    user_id=user_id,
                    family_id=family_id or uuid.uuid4().hex,
                    created_at_ns=now,
                    expires_at_ns=now + ttl_s * NS_PER_S,
                )
            )
        return token

    async def rotate_refresh(
        self, token: str, ttl_s: int
    ) -> tuple[RefreshOutcome, User | None, str | None, str | None]:
        """Replace a refresh token by a new one: (outcome, user, new token, family id). A token used
        a second time means it leaked: the whole family (every token descended from one sign-in,
        and the access tokens issued with them) is revoked."""
        now = time.time_ns()
        old_hash = token_hash(token)
        new_token = secrets.token_urlsafe(32)
        new_hash = token_hash(new_token)
        reused_by: str | None = None
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(select(refresh_tokens).where(refresh_tokens.c.token_hash == old_hash))
            ).first()
            if row is None:
                return "invalid", None, None, None
            if row.revoked_at_ns is not None or row.replaced_by is not None:
                await conn.execute(
                    update(refresh_tokens)
                    .where(
                        and_(
                            refresh_tokens.c.family_id == row.family_id,
                            refresh_tokens.c.revoked_at_ns.is_(None),
                        )
                    )
                    .values(revoked_at_ns=now)
                )
                reused_by = row.user_id
            elif row.expires_at_ns <= now:
                return "expired", None, None, None
            else:
                claimed = await conn.execute(
                    update(refresh_tokens)
                    .where(
                        and_(refresh_tokens.c.token_hash == old_hash, refresh_tokens.c.replaced_by.is_(None))
                    )
                    .values(replaced_by=new_hash)
                )
                if claimed.rowcount != 1:
                    return "reused", None, None, None
                await conn.execute(
                    refresh_tokens.insert().values(
                        token_hash=new_hash,
                        user_id=row.user_id,
                        family_id=row.family_id,
                        created_at_ns=now,
                        expires_at_ns=now + ttl_s * NS_PER_S,
                    )
                )
                user_row = (await conn.execute(select(users).where(users.c.id == row.user_id))).first()
        if reused_by is not None:
            self.forget(reused_by)
            return "reused", None, None, None
        return "ok", None if user_row is None else _user(user_row), new_token, str(row.family_id)

    async def revoke_refresh(self, token: str) -> None:
        """Sign out: revoke the refresh token's family, and with it the access tokens of that
        sign-in (they carry the family id)."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    select(refresh_tokens.c.family_id, refresh_tokens.c.user_id).where(
                        refresh_tokens.c.token_hash == token_hash(token)
                    )
                )
            ).first()
            if row is not None:
                await conn.execute(
                    update(refresh_tokens)
                    .where(
                        and_(
                            refresh_tokens.c.family_id == row.family_id,
                            refresh_tokens.c.revoked_at_ns.is_(None),
                        )
                    )
                    .values(revoked_at_ns=time.time_ns())
                )
        if row is not None:
            self.forget(row.user_id)

    # ---- wallet sign-in nonces ----------------------------------------------------------------------

    async def create_nonce(self, chain: str, address: str, ttl_s: int) -> tuple[str, int]:
        nonce = secrets.token_hex(16)
        expires_at_ns = time.time_ns() + ttl_s * NS_PER_S
        async with self.engine.begin() as conn:
            await conn.execute(
                login_nonces.insert().values(
                    nonce=nonce, chain=chain, address=address, expires_at_ns=expires_at_ns
                )
            )
        return nonce, expires_at_ns

    async def consume_nonce(self, nonce: str, chain: str, address: str) -> bool:
        """True once for a nonce issued to this chain and address and not yet expired."""
        now = time.time_ns()
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(login_nonces)
                .where(
                    and_(
                        login_nonces.c.nonce == nonce,
                        login_nonces.c.chain == chain,
                        login_nonces.c.address == address,
                        login_nonces.c.used_at_ns.is_(None),
                        login_nonces.c.expires_at_ns > now,
                    )
                )
                .values(used_at_ns=now)
            )
        return result.rowcount == 1

    async def user_for_wallet(self, chain: str, address: str) -> tuple[User, bool]:
        """The user owning this wallet identity, created on first sign-in; (user, created)."""
        query = (
            select(users)
            .select_from(users.join(wallet_identities, wallet_identities.c.user_id == users.c.id))
            .where(and_(wallet_identities.c.chain == chain, wallet_identities.c.address == address))
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is not None:
            return _user(row), False
        user = await self.create(email=None)
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    wallet_identities.insert().values(
                        chain=chain, address=address, user_id=user.id, created_at_ns=time.time_ns()
                    )
                )
        except IntegrityError:
            # A concurrent first sign-in won the race: use its user.
            async with self.engine.connect() as conn:
                row = (await conn.execute(query)).first()
            assert row is not None
            return _user(row), False
        return user, True

    # ---- magic links ----------------------------------------------------------------------------------

    async def create_magic_link(self, email: str, ttl_s: int) -> str:
        token = secrets.token_urlsafe(32)
        async with self.engine.begin() as conn:
            await conn.execute(
                magic_links.insert().values(
                    token_hash=token_hash(token), email=email, expires_at_ns=time.time_ns() + ttl_s * NS_PER_S
                )
            )
        return token

    async def consume_magic_link(self, token: str) -> str | None:
        now = time.time_ns()
        digest = token_hash(token)
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(magic_links)
                .where(
                    and_(
                        magic_links.c.token_hash == digest,
                        magic_links.c.used_at_ns.is_(None),
                        magic_links.c.expires_at_ns > now,
                    )
                )
                .values(used_at_ns=now)
            )
            if result.rowcount != 1:
                return None
            row = (
                await conn.execute(select(magic_links.c.email).where(magic_links.c.token_hash == digest))
            ).first()
        return None if row is None else str(row.email)

    async def magic_link_email(self, token: str) -> str | None:
        """The email of a link that is still usable, without using it (the confirmation page)."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(magic_links.c.email).where(
                        and_(
                            magic_links.c.token_hash == token_hash(token),
                            magic_links.c.used_at_ns.is_(None),
                            magic_links.c.expires_at_ns > time.time_ns(),
                        )
                    )
                )
            ).first()
        return None if row is None else str(row.email)

    # ---- audit ------------------------------------------------------------------------------------------

    async def audit(
        self, *, actor: str, action: str, target: str, detail: dict[str, Any], request_id: str | None
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                audit_log.insert().values(
                    ts_ns=time.time_ns(),
                    actor=actor,
                    action=action,
                    target=target,
                    detail=json.dumps(detail, sort_keys=True),
                    request_id=request_id,
                )
            )
