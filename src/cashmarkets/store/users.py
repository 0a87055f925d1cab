"""Users, credentials, wallet identities, login nonces, magic links, refresh tokens, audit log.

Platform data, not money: it lives in SQL directly, not in the engine. Single-use things (nonces,
magic links, refresh tokens) are consumed with one conditional UPDATE, so two concurrent uses
cannot both succeed.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from typing import Any, Literal

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


class User(msgspec.Struct, frozen=True):
    id: str
    email: str | None
    role: str
    status: str
    created_at_ns: int


class EmailTaken(Exception):
    pass


RefreshOutcome = Literal["ok", "invalid", "expired", "reused"]


def token_hash(token: str) -> str:
    """Opaque tokens (refresh, magic link) are stored only as their sha256."""
    return hashlib.sha256(token.encode()).hexdigest()


def normalize_email(email: str) -> str:
    return email.strip().lower()


def _user(row: Any) -> User:
    return User(id=row.id, email=row.email, role=row.role, status=row.status, created_at_ns=row.created_at_ns)


class UserStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

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
        async with self.engine.begin() as conn:
            result = await conn.execute(update(users).where(users.c.id == user_id).values(role=role))
        return result.rowcount == 1

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

    async def rotate_refresh(self, token: str, ttl_s: int) -> tuple[RefreshOutcome, User | None, str | None]:
        """Replace a refresh token by a new one. A token used a second time means it leaked:
        the whole family (every token descended from one sign-in) is revoked."""
        now = time.time_ns()
        old_hash = token_hash(token)
        new_token = secrets.token_urlsafe(32)
        new_hash = token_hash(new_token)
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(select(refresh_tokens).where(refresh_tokens.c.token_hash == old_hash))
            ).first()
            if row is None:
                return "invalid", None, None
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
                return "reused", None, None
            if row.expires_at_ns <= now:
                return "expired", None, None
            claimed = await conn.execute(
                update(refresh_tokens)
                .where(and_(refresh_tokens.c.token_hash == old_hash, refresh_tokens.c.replaced_by.is_(None)))
                .values(replaced_by=new_hash)
            )
            if claimed.rowcount != 1:
                return "reused", None, None
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
        return "ok", None if user_row is None else _user(user_row), new_token

    async def revoke_refresh(self, token: str) -> None:
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    select(refresh_tokens.c.family_id).where(refresh_tokens.c.token_hash == token_hash(token))
                )
            ).first()
            if row is not None:
                await conn.execute(
                    update(refresh_tokens)
                    .where(refresh_tokens.c.family_id == row.family_id)
                    .values(revoked_at_ns=time.time_ns())
                )

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
