"""Cross-site request forgery: what the edge middleware refuses before any route runs.

A browser attaches the `authToken` cookie to requests that another site makes it send (SameSite=Lax
stops cross-*site* POSTs, not those from a sibling subdomain or another port of the same host).
Three rules, for POST, PUT, PATCH and DELETE:

1. Body types (415 `unsupported_media_type`). A request with a body declares `application/json`;
   under `/api/v3/` (Binance's API, HMAC-signed with an API key) `application/x-www-form-urlencoded`
   instead. A request without a body (no `Content-Length`, or 0, and no `Transfer-Encoding`: a
   DELETE, a body-less POST) passes whatever it declares: there is nothing to misread, and the
   routes that need a body answer 400 without one. An HTML form or a `no-cors` fetch can send only
   form, multipart or text/plain bodies; `application/json` from another origin needs a CORS
   preflight, which this server never grants.
2. Cookie sessions (403 `csrf_failed`). A request that carries the `authToken` cookie and no
   `Authorization: Bearer` header needs an `Origin` on the allowlist (`Settings.origins`:
   CASHMARKETS_ALLOWED_ORIGINS, default the public URL's origin), or an `X-CSRF-Token` header
   equal to the `csrfToken` cookie set at sign-in (readable by scripts; double submit). The token
   is an HMAC of the access token under a key derived from the JWT secret, so a cookie planted
   from a sibling subdomain, or one issued to the attacker's own session, does not fit the
   victim's. Bearer tokens and API keys (`/api/v3`, which reads no cookie) are exempt: a browser
   never attaches them by itself.
3. Sign-in routes that set the cookie (403 `csrf_failed`): an `Origin` header, when present, is on
   the allowlist (login CSRF). Clients that are not browsers send none. They take credentials
   from the body and never read the cookie, so rule 2 does not apply to them: a client that
   still holds an old session cookie can sign in again.

Safe methods (GET, HEAD, OPTIONS) change nothing and are not checked. The WebSocket gateway takes
tokens only, never cookies; the planned Socket.IO endpoint will use the websocket transport only
(no long-polling POSTs), so none of this applies there.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any, Final

import structlog

log = structlog.get_logger("cashmarkets.api.csrf")

UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
AUTH_COOKIE: Final = "authToken"  # the same as security.AUTH_COOKIE (not imported: no cycle)
CSRF_COOKIE: Final = "csrfToken"
CSRF_HEADER: Final = "X-CSRF-Token"
_CSRF_HEADER_KEY: Final = CSRF_HEADER.lower().encode()
JSON_MEDIA: Final = "application/json"
FORM_MEDIA: Final = "application/x-www-form-urlencoded"
BINANCE_PREFIX: Final = "/api/v3/"
# The routes that take their credentials from the body (and hand out or clear the session
# cookie): rule 3. Sign-out is one: it names the sign-in by its refresh token, not the cookie.
SIGNIN_PATHS: Final = frozenset(
    {
        "/api/v1/signup",
        "/api/v1/signin",
        "/api/v1/signin/link",
        "/api/v1/token/refresh",
        "/api/v1/auth/wallet",
        "/api/v1/signout",
    }
)
CSRF_FAILED: Final = "csrf_failed"
UNSUPPORTED_MEDIA_TYPE: Final = "unsupported_media_type"

Headers = dict[bytes, list[bytes]]  # lower-case name -> every value, in order
Refusal = tuple[int, str, str]  # (status, code, detail) for the middleware's problem+json


class CsrfGuard:
    """The allowed origins and the key of the double-submit tokens (`app.state.csrf`)."""

    def __init__(self, origins: frozenset[str], jwt_secret: str) -> None:
        self.origins = origins
        self._key = hmac.new(jwt_secret.encode(), b"cashmarkets csrf v1", hashlib.sha256).digest()

    def token_for(self, access_token: str) -> str:
        """The CSRF token that goes with this session cookie (the `csrfToken` cookie's value)."""
        mac = hmac.new(self._key, access_token.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def refusal(self, scope: Any) -> Refusal | None:
        """None when the request may go on; else why not."""
        method = scope["method"]
        if method not in UNSAFE_METHODS:
            return None
        path: str = scope["path"]
        headers = _headers(scope)
        binance = path.startswith(BINANCE_PREFIX)
        if _has_body(headers):
            media = _media_type(headers.get(b"content-type", [b""])[-1])
            wanted = FORM_MEDIA if binance else JSON_MEDIA
            if media != wanted:
                detail = f"{method} {path} takes a {wanted} body, not {media or 'one without a type'}"
                return _refused(415, UNSUPPORTED_MEDIA_TYPE, detail)
        if binance:
            return None
        origin = _latin1(headers.get(b"origin", [b""])[-1]).strip()
        if path in SIGNIN_PATHS:
            # Credentials come in the body; a session cookie the client still holds is not read.
            if origin and origin.lower() not in self.origins:
                return _refused(403, CSRF_FAILED, f"cannot sign in from origin {origin[:100]!r}")
            return None
        cookies = _cookies(headers)
        sessions = {v for v in cookies.get(AUTH_COOKIE, ()) if v}
        if sessions and not _bearer(headers):
            return self._session_refusal(headers, cookies, sessions, origin)
        return None

    def _session_refusal(
        self, headers: Headers, cookies: dict[str, list[str]], sessions: set[str], origin: str
    ) -> Refusal | None:
        """Rule 2. An Origin, when the browser sends one, decides; without one, the token does."""
        if origin:
            if origin.lower() in self.origins:
                return None
            return _refused(403, CSRF_FAILED, f"a cookie session cannot be used from origin {origin[:100]!r}")
        given = _latin1(headers.get(_CSRF_HEADER_KEY, [b""])[-1]).strip()
        if not given:
            return _refused(403, CSRF_FAILED, f"a cookie session needs an allowed Origin or {CSRF_HEADER}")
        # Every session cookie sent must be the one the token was made for (two different authToken
        # cookies: one was planted), and the browser must hold the token as its csrfToken cookie.
        fits = all(hmac.compare_digest(given, self.token_for(s)) for s in sessions)
        held = any(hmac.compare_digest(given, h) for h in cookies.get(CSRF_COOKIE, ()))
        if fits and held:
            return None
        return _refused(403, CSRF_FAILED, f"{CSRF_HEADER} does not match this session's {CSRF_COOKIE}")


def _refused(status: int, code: str, detail: str) -> Refusal:
    log.info("request refused", status=status, code=code, detail=detail)
    return status, code, detail


def _latin1(raw: bytes) -> str:
    return raw.decode("latin-1")


def _headers(scope: Any) -> Headers:
    found: Headers = {}
    for name, value in scope["headers"]:
        found.setdefault(name.lower(), []).append(value)
    return found


def _has_body(headers: Headers) -> bool:
    if b"transfer-encoding" in headers:
        return True
    for value in headers.get(b"content-length", ()):
        try:
            if int(value) != 0:
                return True
        except ValueError:
            return True  # unreadable: assume a body (the server refuses the request anyway)
    return False


def _media_type(raw: bytes) -> str:
    return _latin1(raw).split(";", 1)[0].strip().lower()


def _bearer(headers: Headers) -> bool:
    """The request authenticates with a bearer token, which then wins over any cookie (as in
    `security.bearer_token` and the middleware's `_token_subject`)."""
    value = _latin1(headers.get(b"authorization", [b""])[0])
    return value[:7].lower() == "bearer " and bool(value[7:].strip())


def _cookies(headers: Headers) -> dict[str, list[str]]:
    """Every value of every cookie (a name can come twice: one of them may have been planted)."""
    found: dict[str, list[str]] = {}
    for raw in headers.get(b"cookie", ()):
        for part in _latin1(raw).split(";"):
            name, sep, value = part.strip().partition("=")
            if sep:
                found.setdefault(name, []).append(value.strip())
    return found


def csrf_refusal(scope: Any) -> Refusal | None:
    """For the edge middleware: the app's guard on this request."""
    guard: CsrfGuard = scope["app"].state.csrf
    return guard.refusal(scope)


__all__ = ["CSRF_COOKIE", "CSRF_HEADER", "CsrfGuard", "csrf_refusal"]
