"""Passwords (argon2id), access tokens (short-lived HS256 JWTs) and who is calling.

A request is authenticated by `Authorization: Bearer <token>` or, for browsers, the `authToken`
cookie. Only HS256 is accepted (no `alg: none`, no key confusion); `exp`, `iat`, `sub`, `ver`, `sid`
and `typ=access` are required.

A valid signature is not enough: every use of a token is checked against the user's live state
(`UserStore.state`, at most `USER_STATE_TTL_S` = 1 s old; changes made in this process at once):
the account must be active, the token's `ver` must be the user's current token version (bumped
when the status changes), its sign-in (`sid`, the refresh token family) must not be revoked (sign
out, refresh token reuse), and the role that counts is the user's role now, not the token's.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal, TypeVar

import jwt
import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from cashmarkets.api.errors import ApiError
from cashmarkets.ops import metrics
from cashmarkets.store.users import UserState, UserStore

T = TypeVar("T")

Role = Literal["player", "operator", "admin", "auditor"]
ROLES: Final = ("player", "operator", "admin", "auditor")
AUTH_COOKIE: Final = "authToken"
JWT_ALGORITHM: Final = "HS256"
PASSWORD_LENGTH_MIN: Final = 8
PASSWORD_LENGTH_MAX: Final = 256

_hasher = PasswordHasher()  # argon2id, library defaults (t=3, m=64 MiB, p=4)
# Verified against when the email is unknown, so both answers take the same time.
_DUMMY_HASH: Final = _hasher.hash("not-a-password-" + secrets.token_hex(8))


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


def _check_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(password_hash: str | None, password: str) -> bool:
    return await asyncio.to_thread(_check_password, password_hash, password)


class PasswordHashing:
    """argon2 (about 64 MiB and a few hundred ms of CPU per hash) in worker threads, at most
    `concurrent` at once, so a flood of sign-ins cannot take every core from the other requests.
    At most `waiting_max` callers wait for a turn; beyond that the answer is at once a 503
    `password_hashing_busy` with Retry-After. A hash whose caller went away still holds its turn
    until its thread is done: the bound is on threads, not on callers. One per app (its loop)."""

    def __init__(self, concurrent: int = 1, waiting_max: int = 16) -> None:
        self.concurrent = max(1, concurrent)
        self.waiting_max = max(0, waiting_max)
        self._slots = asyncio.Semaphore(self.concurrent)
        self._waiting = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    async def hash(self, password: str) -> str:
        return await self._run(_hasher.hash, password)

    async def verify(
        self,
        password_hash: str | None,
        password: str,
        *,
        before: Callable[[], Awaitable[None]] | None = None,
    ) -> bool:
        """`before` runs once this caller has its turn, just before hashing; it may raise (a
        sign-in that got locked while it waited) and then no hash runs."""
        return await self._run(_check_password, password_hash, password, before=before)

    def admit(self) -> None:
        """503 password_hashing_busy now if a hash could not even wait for a turn: lets a route
        refuse before any other work (its store reads) when the queue is full."""
        if self._slots.locked() and self._waiting >= self.waiting_max:
            metrics.PASSWORD_HASHING_BUSY.inc()
            raise ApiError(
                503,
                "password_hashing_busy",
                "too many sign-ins at once; retry in a moment",
                headers={"Retry-After": "1"},
            )

    async def _run(
        self, fn: Callable[..., T], *args: Any, before: Callable[[], Awaitable[None]] | None = None
    ) -> T:
        self.admit()
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            if before is not None:
                await before()
            work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        except BaseException:
            self._slots.release()
            raise
        work.add_done_callback(lambda _: self._slots.release())
        return await asyncio.shield(work)


class AuthUser(msgspec.Struct, frozen=True):
    id: str
    role: str


class TokenClaims(msgspec.Struct, frozen=True):
    """A verified access token: whose (`id`), the role it was issued with (informational: the live
    role counts), the user's token version then, its sign-in (refresh family) and its expiry."""

    id: str
    role: str
    version: int
    session: str
    expires_at: int  # seconds since the epoch


# Access tokens verified recently, kept so a client's next requests skip the HMAC and JSON work
# (about 7 % of the API's CPU under load). A token's claims never change, so a hit needs only the
# expiry check. Oldest entries go first beyond this many.
VERIFIED_TOKENS_MAX: Final = 50_000
# Ours are about 250 characters; anything far longer is refused before any parsing.
TOKEN_LENGTH_MAX: Final = 2_048


class TokenService:
    def __init__(self, secret: str, access_ttl_s: int) -> None:
        if len(secret) < 32:
            raise ValueError("the JWT secret must be at least 32 characters")
        self._secret = secret
        self.access_ttl_s = access_ttl_s
        self._verified: dict[str, TokenClaims] = {}

    def issue(
        self, user_id: str, role: str, *, session: str, version: int = 0, now_s: int | None = None
    ) -> str:
        """An access token of one sign-in (`session`: its refresh token family) at the user's
        token version `version`."""
        now = int(time.time()) if now_s is None else now_s
        claims = {
            "sub": user_id,
            "role": role,
            "typ": "access",
            "ver": version,
            "sid": session,
            "iat": now,
            "exp": now + self.access_ttl_s,
        }
        return jwt.encode(claims, self._secret, algorithm=JWT_ALGORITHM)

    def verify(self, token: str) -> TokenClaims | None:
        """The claims of a well-signed, unexpired access token (not yet checked against the user's
        live state: see `live_user`)."""
        if len(token) > TOKEN_LENGTH_MAX:
            return None
        cached = self._verified.get(token)
        if cached is not None:
            if time.time() < cached.expires_at:
                return cached
            del self._verified[token]
            return None
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[JWT_ALGORITHM],
                options={"require": ["exp", "iat", "sub", "typ", "ver", "sid"]},
            )
        except (jwt.PyJWTError, RecursionError):  # a deeply nested header or payload: not ours
            return None
        version, session = claims.get("ver"), claims.get("sid")
        if (
            claims.get("typ") != "access"
            or claims.get("role") not in ROLES
            or not isinstance(version, int)
            or not isinstance(session, str)
            or not session
        ):
            return None
        verified = TokenClaims(
            id=str(claims["sub"]),
            role=str(claims["role"]),
            version=version,
            session=session,
            expires_at=int(claims["exp"]),
        )
        if len(self._verified) >= VERIFIED_TOKENS_MAX:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = verified
        return verified


def admit(claims: TokenClaims, state: UserState | None) -> AuthUser | None:
    """The caller with their live role, if the token still stands against the user's state."""
    if (
        state is None
        or state.status != "active"
        or state.token_version != claims.version
        or claims.session in state.revoked_sessions
    ):
        return None
    return AuthUser(id=claims.id, role=state.role)


async def live_user(tokens: TokenService, users: UserStore, token: str) -> AuthUser | None:
    """The caller of an access token, checked against the user's live state; None if refused."""
    claims = tokens.verify(token)
    if claims is None:
        return None
    known, state = users.cached_state(claims.id)  # the usual case: no coroutine, no store
    if not known:
        state = await users.state(claims.id)
    return admit(claims, state)


class Sessions:
    """Access tokens and the users' live state together: what the WebSocket gateway checks
    sockets with (at sign-in, before each command, and on its revalidation sweep)."""

    def __init__(self, tokens: TokenService, users: UserStore) -> None:
        self.tokens = tokens
        self.users = users

    def verify(self, token: str) -> TokenClaims | None:
        return self.tokens.verify(token)

    def cached(self, claims: TokenClaims) -> tuple[bool, AuthUser | None]:
        """(known, user) from memory only; known is False when the store must be read."""
        known, state = self.users.cached_state(claims.id)
        return known, admit(claims, state) if known else None

    async def check(self, claims: TokenClaims) -> AuthUser | None:
        return admit(claims, await self.users.state(claims.id))

    async def still_valid(self, claims: list[TokenClaims]) -> list[bool]:
        """Whether each token still stands, against its user's state read now (one read for
        many users: the gateway's sweep)."""
        states = await self.users.load_states([c.id for c in claims])
        return [admit(c, states[c.id]) is not None for c in claims]


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return connection.cookies.get(AUTH_COOKIE) or None


async def request_user(connection: ASGIConnection[Any, Any, Any, Any]) -> AuthUser | None:
    """The caller, checked live once per request: the edge middleware usually did it already
    (the result is kept in the scope's state, `auth_user`)."""
    state = connection.scope.setdefault("state", {})
    if "auth_user" not in state:
        token = bearer_token(connection)
        svc = connection.app.state.services
        state["auth_user"] = await live_user(svc.tokens, svc.users, token) if token else None
    user: AuthUser | None = state["auth_user"]
    return user


def authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> AuthUser | None:
    """The caller as `request_user` found them (guards and dependencies run it first)."""
    user: AuthUser | None = connection.scope.get("state", {}).get("auth_user")
    return user


async def current_user(request: Request[Any, Any, Any]) -> AuthUser:
    """Dependency: the authenticated caller, or 401."""
    user = await request_user(request)
    if user is None:
        raise ApiError(
            401, "unauthorized", "a valid access token is required", headers={"WWW-Authenticate": "Bearer"}
        )
    return user


def require_roles(*roles: str) -> Any:
    """Guard: the caller must be authenticated with one of these roles, as they are now (403
    otherwise)."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        user = await request_user(connection)
        if user is None:
            raise ApiError(401, "unauthorized", "a valid access token is required")
        if user.role not in roles:
            raise ApiError(403, "forbidden", f"requires role {' or '.join(roles)}")

    return guard
