"""Sign-up and sign-in: email + password, magic links, and wallets (Ethereum, Solana, Aptos).

Every successful sign-in answers `{token, refreshToken, user}` and sets the `authToken` cookie
(HttpOnly) and its `csrfToken` cookie (readable by scripts, sent back as `X-CSRF-Token`; api/csrf.py).
Wrong password and unknown email get the same 401 (and take the same time); a magic link request
gets the same 202 whether or not the email is known.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from litestar import Controller, MediaType, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, QueryParameter

from cashmarkets.api.csrf import CSRF_COOKIE, CsrfGuard
from cashmarkets.api.errors import ApiError
from cashmarkets.api.schemas import (
    MagicLinkConfirm,
    MagicLinkSent,
    RefreshRequest,
    SigninRequest,
    SignupDone,
    SignupRequest,
    TokenPair,
    UserView,
    WalletNonce,
    WalletSigninRequest,
)
from cashmarkets.api.security import AUTH_COOKIE, AuthUser, current_user
from cashmarkets.api.services import Services, services
from cashmarkets.api.signin_page import HEADERS as SIGNIN_PAGE_HEADERS
from cashmarkets.api.signin_page import confirmation_page
from cashmarkets.auth.wallets import WalletAuthError, normalize_address, verify
from cashmarkets.core.commands import Deposit
from cashmarkets.integrations.email import magic_link_message
from cashmarkets.ops import metrics
from cashmarkets.store.users import EmailTaken, User, normalize_email


def user_view(user: User) -> UserView:
    return UserView(
        id=user.id, email=user.email, role=user.role, status=user.status, created_at_ns=user.created_at_ns
    )


def auth_cookie(svc: Services, token: str, csrf: CsrfGuard) -> list[Cookie]:
    """The session cookies: `authToken` (HttpOnly) and `csrfToken`, its double-submit token.
    SameSite as configured; Secure when configured or, by default, when the public URL is https."""
    samesite: Literal["lax", "strict"] = "strict" if svc.settings.cookie_samesite == "strict" else "lax"
    return [
        Cookie(
            key=name,
            value=value,
            max_age=svc.tokens.access_ttl_s,
            httponly=name == AUTH_COOKIE,
            samesite=samesite,
            secure=svc.settings.secure_cookies,
            path="/",
        )
        for name, value in ((AUTH_COOKIE, token), (CSRF_COOKIE, csrf.token_for(token)))
    ]


def session_cookies(request: Request[Any, Any, Any], token: str) -> list[Cookie]:
    return auth_cookie(services(request), token, request.app.state.csrf)


def cleared_cookies() -> list[Cookie]:
    return [Cookie(key=name, value="", max_age=0, path="/") for name in (AUTH_COOKIE, CSRF_COOKIE)]


async def token_pair(svc: Services, user: User) -> TokenPair:
    if user.status != "active":
        raise ApiError(403, "account_disabled", "this account is disabled")
    # The access token names its sign-in (the refresh family): signing out revokes both.
    session = uuid.uuid4().hex
    refresh = await svc.users.issue_refresh(user.id, svc.settings.refresh_token_ttl_s, family_id=session)
    access = svc.tokens.issue(user.id, user.role, session=session, version=user.token_version)
    return TokenPair(token=access, refresh_token=refresh, user=user_view(user))


async def welcome(svc: Services, user: User) -> None:
    """New users start with the demo balance when the faucet is on (dev and embedded)."""
    if not svc.settings.faucet_enabled:
        return
    usdc = svc.asset("USDC")
    amount = usdc.parse(svc.settings.demo_balance)
    await svc.execute(
        Deposit(command_id=f"welcome:{user.id}", owner=user.id, asset="USDC", amount=amount, code="faucet")
    )


async def refuse_if_locked(svc: Services, email: str) -> None:
    """429 too_many_failed_signins (Retry-After) while the account is locked after failures."""
    wait_s = await svc.signin_throttle.locked_for_s(email, time.time_ns())
    if wait_s > 0:
        metrics.SIGNIN_LOCKED.inc()
        raise ApiError(
            429,
            "too_many_failed_signins",
            f"too many failed sign-ins for this account; retry in {math.ceil(wait_s)} s",
            headers={"Retry-After": str(math.ceil(wait_s))},
        )


def wallet_domain(svc: Services) -> str:
    return urlsplit(svc.settings.base_url).netloc


class AuthController(Controller):
    path = "/api/v1"
    tags = ["auth"]

    @post("/signup", status_code=201)
    async def signup(
        self, request: Request[Any, Any, Any], data: JSONBody[SignupRequest]
    ) -> Response[SignupDone]:
        """Create an account with email and password; 409 if the email is taken."""
        svc = services(request)
        email = normalize_email(data.email)
        try:
            user = await svc.users.create(email=email, password_hash=await svc.passwords.hash(data.password))
        except EmailTaken:
            raise ApiError(409, "email_taken", "an account with this email exists") from None
        await welcome(svc, user)
        pair = await token_pair(svc, user)
        body = SignupDone(user=pair.user, token=pair.token, refresh_token=pair.refresh_token)
        return Response(body, status_code=201, cookies=session_cookies(request, pair.token))

    @post(
        "/signin",
        status_code=200,
        responses={
            202: ResponseSpec(MagicLinkSent, description="Sign-in link sent (email without password)")
        },
    )
    async def signin(self, request: Request[Any, Any, Any], data: JSONBody[SigninRequest]) -> Response[Any]:
        """Email + password -> tokens. Email alone -> a sign-in link by email (202)."""
        svc = services(request)
        email = normalize_email(data.email)
        if data.password is None:
            token = await svc.users.create_magic_link(email, svc.settings.magic_link_ttl_s)
            link = f"{svc.settings.base_url}/api/v1/signin/post?token={token}"
            message = magic_link_message(  # the schema's email grammar is stricter than the mailer's
                to=email,
                link=link,
                from_address=svc.settings.mail_from,
                expires_minutes=max(1, svc.settings.magic_link_ttl_s // 60),
            )
            await svc.mailer.send(message)
            return Response(MagicLinkSent(sent=True), status_code=202)
        svc.passwords.admit()  # a full hashing queue: 503 before any store read
        await refuse_if_locked(svc, email)  # before any hashing: a locked account costs no CPU
        found = await svc.users.by_email(email)
        ok = await svc.passwords.verify(
            found[1] if found else None, data.password, before=lambda: refuse_if_locked(svc, email)
        )
        if found is None or not ok:
            if found is not None and found[1] is not None:
                await svc.signin_throttle.failed(found[0].id, time.time_ns())
            raise ApiError(401, "invalid_credentials", "email or password is wrong")
        await svc.signin_throttle.succeeded(found[0].id)
        pair = await token_pair(svc, found[0])
        return Response(pair, cookies=session_cookies(request, pair.token))

    @get("/signin/post", media_type=MediaType.HTML)
    async def signin_link_page(
        self, request: Request[Any, Any, Any], token: Annotated[str, QueryParameter(max_length=256)]
    ) -> Response[str]:
        """The link from the email: a page that asks to confirm (its button posts the token to
        /signin/link). Opening the link signs nobody in and leaves it usable."""
        svc = services(request)
        email = await svc.users.magic_link_email(token)
        if email is None:
            raise ApiError(401, "link_invalid", "this sign-in link is unknown, used or expired")
        page = confirmation_page(email=email, token=token, next_url=f"{svc.settings.base_url}/")
        return Response(page, media_type=MediaType.HTML, headers=SIGNIN_PAGE_HEADERS)

    @post("/signin/link", status_code=200)
    async def signin_link(
        self, request: Request[Any, Any, Any], data: JSONBody[MagicLinkConfirm]
    ) -> Response[TokenPair]:
        """Use an emailed sign-in link (posted by its page): tokens and the session cookies."""
        svc = services(request)
        email = await svc.users.consume_magic_link(data.token)
        if email is None:
            raise ApiError(401, "link_invalid", "this sign-in link is unknown, used or expired")
        found = await svc.users.by_email(email)
        if found is not None:
            user = found[0]
        else:
            try:
                user = await svc.users.create(email=email)
                await welcome(svc, user)
            except EmailTaken:  # created concurrently by another link
                again = await svc.users.by_email(email)
                assert again is not None
                user = again[0]
        pair = await token_pair(svc, user)
        return Response(pair, cookies=session_cookies(request, pair.token))

    @post("/token/refresh", status_code=200)
    async def refresh(
        self, request: Request[Any, Any, Any], data: JSONBody[RefreshRequest]
    ) -> Response[TokenPair]:
        """Rotate the refresh token; a reused one revokes every token of its sign-in."""
        svc = services(request)
        outcome, user, new_refresh, session = await svc.users.rotate_refresh(
            data.refresh_token, svc.settings.refresh_token_ttl_s
        )
        if outcome != "ok" or user is None or new_refresh is None or session is None:
            raise ApiError(401, f"refresh_{outcome}", "sign in again")
        if user.status != "active":
            raise ApiError(403, "account_disabled", "this account is disabled")
        access = svc.tokens.issue(user.id, user.role, session=session, version=user.token_version)
        pair = TokenPair(token=access, refresh_token=new_refresh, user=user_view(user))
        return Response(pair, cookies=session_cookies(request, access))

    @post("/signout", status_code=200)
    async def signout(
        self, request: Request[Any, Any, Any], data: JSONBody[RefreshRequest]
    ) -> Response[dict[str, bool]]:
        """Revoke the refresh token's whole sign-in (its access tokens too) and clear the cookies."""
        await services(request).users.revoke_refresh(data.refresh_token)
        return Response({"signedOut": True}, cookies=cleared_cookies())

    @get("/me", dependencies={"user": current_user})
    async def me(self, request: Request[Any, Any, Any], user: NamedDependency[AuthUser]) -> UserView:
        found = await services(request).users.by_id(user.id)
        if found is None:
            raise ApiError(404, "not_found", "user not found")
        return user_view(found)

    @get("/auth/nonce")
    async def wallet_nonce(
        self,
        request: Request[Any, Any, Any],
        chain: Annotated[str, QueryParameter(max_length=16)],
        address: Annotated[str, QueryParameter(min_length=1, max_length=128)],
    ) -> WalletNonce:
        """A single-use nonce for a wallet sign-in message (expires after wallet_nonce_ttl_s)."""
        svc = services(request)
        try:
            normalized = normalize_address(chain, address)
        except WalletAuthError as exc:
            raise ApiError(400, exc.code, exc.detail) from None
        nonce, expires_at_ns = await svc.users.create_nonce(
            chain, normalized, svc.settings.wallet_nonce_ttl_s
        )
        return WalletNonce(
            nonce=nonce,
            domain=wallet_domain(svc),
            uri=svc.settings.base_url,
            chain=chain,
            address=normalized,
            expires_at_ns=expires_at_ns,
        )

    @post("/auth/wallet", status_code=200)
    async def wallet_signin(
        self, request: Request[Any, Any, Any], data: JSONBody[WalletSigninRequest]
    ) -> Response[TokenPair]:
        """Sign in with a signed EIP-4361-style message (Ethereum, Solana or Aptos)."""
        svc = services(request)
        try:
            message = verify(
                data.message,
                data.signature,
                expected_domain=wallet_domain(svc),
                expected_origin=svc.settings.base_url,
                now_ns=time.time_ns(),
                public_key=data.public_key,
            )
            address = normalize_address(message.chain, message.address)
        except WalletAuthError as exc:
            raise ApiError(401, exc.code, exc.detail) from None
        if not await svc.users.consume_nonce(message.nonce, message.chain, address):
            raise ApiError(401, "nonce_invalid", "the nonce is unknown, used, expired or for another address")
        user, created = await svc.users.user_for_wallet(message.chain, address)
        if created:
            await welcome(svc, user)
        pair = await token_pair(svc, user)
        return Response(pair, cookies=session_cookies(request, pair.token))
