"""API keys: created by a signed-in user, used to sign Binance-style requests (HMAC-SHA256).

Checking an HMAC needs the secret itself, so it cannot be stored as a hash: it is sealed with NaCl's
secretbox (XSalsa20-Poly1305) under the deployment's key and shown to the user once, at creation.
Opened secrets are cached in memory for `CACHE_TTL_S` (a revoked key stops working within it).
"""

from __future__ import annotations

import secrets
import string
import time
from typing import Any, Final

import nacl.secret
import nacl.utils
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cashmarkets.store.tables import api_keys

KEY_LENGTH: Final = 64
KEYS_PER_USER_MAX: Final = 10
LABEL_LENGTH_MAX: Final = 64
CACHE_TTL_S: Final = 10.0
CACHE_ENTRIES_MAX: Final = 10_000
_ALPHABET: Final = string.ascii_letters + string.digits


def _token() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(KEY_LENGTH))


class TooManyKeys(Exception):
    pass


class ApiKeyStore:
    def __init__(self, db: AsyncEngine, master_key: bytes) -> None:
        if len(master_key) != nacl.secret.SecretBox.KEY_SIZE:
            raise ValueError(f"the API key master key is {nacl.secret.SecretBox.KEY_SIZE} bytes")
        self.db = db
        self._box = nacl.secret.SecretBox(master_key)
        self._cache: dict[str, tuple[float, str, str]] = {}  # api key -> (expires, user id, secret)

    async def create(self, user_id: str, label: str) -> tuple[str, str]:
        """A new (api key, secret) for the user; the secret is not retrievable later."""
        api_key, secret = _token(), _token()
        async with self.db.begin() as conn:
            count = (
                await conn.execute(
                    select(func.count())
                    .select_from(api_keys)
                    .where(api_keys.c.user_id == user_id, api_keys.c.revoked_at_ns.is_(None))
                )
            ).scalar_one()
            if count >= KEYS_PER_USER_MAX:
                raise TooManyKeys
            await conn.execute(
                api_keys.insert().values(
                    api_key=api_key,
                    user_id=user_id,
                    label=label,
                    sealed_secret=bytes(self._box.encrypt(secret.encode())),
                    created_at_ns=time.time_ns(),
                )
            )
        return api_key, secret

    async def lookup(self, api_key: str) -> tuple[str, str] | None:
        """(user id, secret) of an active key, or None."""
        now = time.monotonic()
        hit = self._cache.get(api_key)
        if hit is not None and hit[0] > now:
            return hit[1], hit[2]
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    select(api_keys.c.user_id, api_keys.c.sealed_secret).where(
                        api_keys.c.api_key == api_key, api_keys.c.revoked_at_ns.is_(None)
                    )
                )
            ).first()
        if row is None:
            self._cache.pop(api_key, None)
            return None
        secret = self._box.decrypt(bytes(row.sealed_secret)).decode()
        if len(self._cache) >= CACHE_ENTRIES_MAX:
            self._cache.clear()
        self._cache[api_key] = (now + CACHE_TTL_S, row.user_id, secret)
        return row.user_id, secret

    async def revoke(self, user_id: str, api_key: str) -> bool:
        async with self.db.begin() as conn:
            done = await conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.api_key == api_key,
                    api_keys.c.user_id == user_id,
                    api_keys.c.revoked_at_ns.is_(None),
                )
                .values(revoked_at_ns=time.time_ns())
            )
        self._cache.pop(api_key, None)
        return bool(done.rowcount)

    async def list(self, user_id: str) -> list[Any]:
        async with self.db.connect() as conn:
            return list(
                (
                    await conn.execute(
                        select(api_keys.c.api_key, api_keys.c.label, api_keys.c.created_at_ns)
                        .where(api_keys.c.user_id == user_id, api_keys.c.revoked_at_ns.is_(None))
                        .order_by(api_keys.c.created_at_ns)
                    )
                ).all()
            )
