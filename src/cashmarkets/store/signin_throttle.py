"""Failed password sign-ins per account, kept in `credentials` (so every API process sees them).

After `failures_free` failures in a row, each further failure locks the account's password
sign-in for a growing delay: 1 s, 2 s, 4 s, ... up to `lockout_max_s`. While locked, sign-in is
refused before any password is hashed; a successful sign-in resets the count. Unknown emails have
no row and are never locked (they are bounded by the hashing gate and the rate limits).
"""

from __future__ import annotations

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cashmarkets.store.tables import credentials, users

NS_PER_S = 1_000_000_000


def lockout_s(failures: int, failures_free: int, lockout_max_s: float) -> float:
    """The delay after the `failures`-th failure in a row: 0 up to `failures_free - 1`, then
    1 s doubling per failure, at most `lockout_max_s`."""
    if failures < failures_free:
        return 0.0
    return float(min(lockout_max_s, 2.0 ** min(failures - failures_free, 62)))


class SigninThrottle:
    def __init__(self, engine: AsyncEngine, *, failures_free: int, lockout_max_s: float) -> None:
        self.engine = engine
        self.failures_free = max(0, failures_free)
        self.lockout_max_s = max(0.0, lockout_max_s)

    async def locked_for_s(self, email: str, now_ns: int) -> float:
        """Seconds until the account of `email` may try a password again (0: now). The same one
        query whether or not the email is known."""
        query = (
            select(credentials.c.locked_until_ns)
            .select_from(users.join(credentials, credentials.c.user_id == users.c.id))
            .where(users.c.email == email)
        )
        async with self.engine.connect() as conn:
            until = (await conn.execute(query)).scalar()
        if until is None or until <= now_ns:
            return 0.0
        return (int(until) - now_ns) / NS_PER_S

    async def failed(self, user_id: str, now_ns: int) -> float:
        """Count a failure (one row lock: concurrent failures all count); the lockout it starts, s."""
        async with self.engine.begin() as conn:
            failures = (
                await conn.execute(
                    update(credentials)
                    .where(credentials.c.user_id == user_id)
                    .values(failed_signins=credentials.c.failed_signins + 1)
                    .returning(credentials.c.failed_signins)
                )
            ).scalar()
            if failures is None:
                return 0.0
            delay_s = lockout_s(int(failures), self.failures_free, self.lockout_max_s)
            if delay_s > 0:
                await conn.execute(
                    update(credentials)
                    .where(credentials.c.user_id == user_id)
                    .values(locked_until_ns=now_ns + int(delay_s * NS_PER_S))
                )
        return delay_s

    async def succeeded(self, user_id: str) -> None:
        """Reset the count (a write only when there is something to reset)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(credentials)
                .where(
                    and_(
                        credentials.c.user_id == user_id,
                        or_(credentials.c.failed_signins != 0, credentials.c.locked_until_ns.is_not(None)),
                    )
                )
                .values(failed_signins=0, locked_until_ns=None)
            )
