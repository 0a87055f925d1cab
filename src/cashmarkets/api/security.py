"""Passwords (argon2id), access tokens (short-lived HS256 JWTs) and who is calling.

A request is authenticated by `Authorization: Bearer <token>` or, for browsers, the `authToken`
cookie. Only HS256 is accepted (no `alg: none`, no key confusion); `exp`, `iat`, `sub` and
`typ=access` are required.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any, Final, Literal

import jwt
import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from cashmarkets.api.errors import ApiError

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


async def verify_password(password_hash: str | None, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


class AuthUser(msgspec.Struct, frozen=True):
    id: str
    role: str


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
        self._verified: dict[str, tuple[AuthUser, int]] = {}

    def issue(self, user_id: str, role: str, *, now_s: int | None = None) -> str:
        now = int(time.time()) if now_s is None else now_s
        claims = {"sub": user_id, "role": role, "typ": "access", "iat": now, "exp": now + self.access_ttl_s}
        return jwt.encode(claims, self._secret, algorithm=JWT_ALGORITHM)

    def verify(self, token: str) -> AuthUser | None:
        if len(token) > TOKEN_LENGTH_MAX:
            return None
        cached = self._verified.get(token)
        if cached is not None:
            if time.time() < cached[1]:
                return cached[0]
            del self._verified[token]
            return None
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[JWT_ALGORITHM],
                options={"require": ["exp", "iat", "sub", "typ"]},
            )
        except (jwt.PyJWTError, RecursionError):  # a deeply nested header or payload: not ours
            return None
        if claims.get("typ") != "access" or claims.get("role") not in ROLES:
            return None
        user = AuthUser(id=str(claims["sub"]), role=str(claims["role"]))
        if len(self._verified) >= VERIFIED_TOKENS_MAX:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (user, int(claims["exp"]))
        return user


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return connection.cookies.get(AUTH_COOKIE) or None


def authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> AuthUser | None:
    state = connection.scope.get("state", {})
    if "auth_user" in state:  # already verified by the middleware for this request
        cached: AuthUser | None = state["auth_user"]
        return cached
    tokens: TokenService = connection.app.state.tokens
    token = bearer_token(connection)
    return tokens.verify(token) if token else None


async def current_user(request: Request[Any, Any, Any]) -> AuthUser:
    """Dependency: the authenticated caller, or 401."""
    user = authenticate(request)
    if user is None:
        raise ApiError(
            401, "unauthorized", "a valid access token is required", headers={"WWW-Authenticate": "Bearer"}
        )
    return user


def require_roles(*roles: str) -> Any:
    """Guard: the caller must be authenticated with one of these roles (403 otherwise)."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        user = authenticate(connection)
        if user is None:
            raise ApiError(401, "unauthorized", "a valid access token is required")
        if user.role not in roles:
            raise ApiError(403, "forbidden", f"requires role {' or '.join(roles)}")

    return guard
