"""The API's edge, one raw ASGI middleware: request id, latency metric, rate limits, and
Idempotency-Key replay, in that order. Raw ASGI so that it also sees the responses of errors.

One middleware rather than four: each ASGI layer wraps `send` in a closure and adds coroutine
frames to every request, and the four layers cost about a quarter of the API's CPU under load
(measured with `cashmarkets bench leverage --mode embedded`: 1,483 trades/s with them as four,
1,965 without any).
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from typing import Any, Final

import msgspec
from litestar.types import ASGIApp

from cashmarkets.api.context import SANE_REQUEST_ID
from cashmarkets.api.csrf import csrf_refusal
from cashmarkets.api.errors import PROBLEM_JSON
from cashmarkets.api.ratelimit import (
    CHARGED_USER,
    RateLimiter,
    RedisTokenBuckets,
    TokenBuckets,
    ip_key,
    take,
    user_key,
)
from cashmarkets.api.security import live_user
from cashmarkets.ops import metrics
from cashmarkets.ops.ids import new_id
from cashmarkets.ops.logging import REQUEST_ID
from cashmarkets.ops.nesting import NESTING_DEPTH_MAX, json_depth_within
from cashmarkets.store.idempotency import KEY_LENGTH_MAX, IdempotencyStore, Stored, valid_key

# Raw ASGI: Litestar's TypedDicts for these are stricter than the protocol needs here.
Scope = Any
Message = Any
Receive = Any
Send = Any

# Requests whose body the edge reads first (size, nesting depth, Idempotency-Key digest).
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Methods whose requests an Idempotency-Key makes replayable (GET needs none).
IDEMPOTENT_METHODS: Final = frozenset({"POST", "DELETE"})

# Routes whose answers carry credentials (access and refresh tokens): never kept in the
# idempotency store, so an Idempotency-Key there is ignored and a retry runs again. They are safe
# to retry as they are: a sign-in again signs in; a sign-up again answers 409 email_taken (then
# sign in); a refresh again with the same refresh token revokes that sign-in (sign in again).
SIGNIN_PATHS: Final = frozenset(
    {
        "/api/v1/signup",
        "/api/v1/signin",
        "/api/v1/signin/link",
        "/api/v1/token/refresh",
        "/api/v1/auth/wallet",
    }
)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _send_problem(
    send: Send,
    scope: Scope,
    status: int,
    code: str,
    detail: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    request_id = scope.get("state", {}).get("request_id", "")
    body = msgspec.json.encode(
        {
            "type": f"urn:cashmarkets:error:{code}",
            "title": code.replace("_", " "),
            "status": status,
            "code": code,
            "detail": detail,
            "instance": scope.get("path", ""),
            "requestId": request_id,
        }
    )
    start_headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": start_headers + (headers or [])})
    await send({"type": "http.response.body", "body": body})


async def _rate_limited(scope: Scope, send: Send) -> bool:
    """Answer 429 and return True when the caller's IP or user is over its limit."""
    limits: dict[str, RateLimiter] = scope["app"].state.rate_limits
    client = scope.get("client")
    kind, wait = "ip", await take(limits["ip"], ip_key(client[0] if client else "?"))
    user_id = await _token_subject(scope)
    if user_id is not None:
        user_wait = await take(limits["user"], user_key(user_id))
        scope["state"][CHARGED_USER] = user_id  # /api/v3 does not charge this user again
        if user_wait > wait:
            kind, wait = "user", user_wait
    if wait <= 0:
        return False
    metrics.RATE_LIMITED.labels(kind).inc()
    retry = str(max(1, math.ceil(wait)))
    await _send_problem(
        send,
        scope,
        429,
        "rate_limited",
        f"too many requests per {kind}; retry later",
        [(b"retry-after", retry.encode())],
    )
    return True


async def _token_subject(scope: Scope) -> str | None:
    """The user id of a valid access token in the request, if any (verified and checked against
    the user's live state once per request: the result is kept in the scope for the other
    middleware and the route)."""
    state = scope.setdefault("state", {})
    if "auth_user" in state:
        cached = state["auth_user"]
        return None if cached is None else str(cached.id)
    services = scope["app"].state.services
    header = _header(scope, b"authorization") or ""
    token = header[7:].strip() if header[:7].lower() == "bearer " else None
    if not token:
        cookie = _header(scope, b"cookie") or ""
        for part in cookie.split(";"):
            name, _, value = part.strip().partition("=")
            if name == "authToken":
                token = value
    user = await live_user(services.tokens, services.users, token) if token else None
    state["auth_user"] = user
    return None if user is None else str(user.id)


async def _read_body(scope: Scope, receive: Receive, send: Send) -> bytes | None:
    """The whole request body, checked for size and nesting depth; None when the request was
    answered here (413, 400) or the client went away."""
    body_max: int = scope["app"].state.request_body_max_bytes
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > body_max:
            await _send_problem(
                send, scope, 413, "payload_too_large", f"request bodies are at most {body_max} bytes"
            )
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    body = b"".join(chunks)
    # Form bodies (the Binance routes) are flat; anything else may be parsed as JSON.
    if not _is_form(scope) and not json_depth_within(body):
        await _send_problem(
            send, scope, 400, "bad_request", f"the body nests deeper than {NESTING_DEPTH_MAX} levels"
        )
        return None
    return body


def _is_form(scope: Scope) -> bool:
    content_type = _header(scope, b"content-type") or ""
    return content_type.split(";", 1)[0].strip().lower() == "application/x-www-form-urlencoded"


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body read already, then the real channel (disconnect)."""
    sent_body = False

    async def replay_receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay_receive


async def _idempotent(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, key: str, body: bytes
) -> None:
    """Same key + same request -> the stored response; same key + another request -> 409;
    a repeat while the first is still running -> 409. Keys are scoped per user (or per IP)."""
    if not valid_key(key):
        await _send_problem(
            send, scope, 400, "bad_idempotency_key", f"1..{KEY_LENGTH_MAX} printable characters"
        )
        return
    state = scope["app"].state
    user_id = await _token_subject(scope)
    client = scope.get("client")
    owner = f"user:{user_id}" if user_id else f"ip:{client[0] if client else '?'}"
    digest = hashlib.sha256(
        b"\0".join([scope["method"].encode(), scope["path"].encode(), scope.get("query_string", b""), body])
    ).hexdigest()
    store: IdempotencyStore = state.services.idempotency
    claim = await store.claim(owner, key, digest)
    if isinstance(claim, Stored):
        headers = [
            (b"content-type", claim.content_type.encode()),
            (b"content-length", str(len(claim.body)).encode()),
            (b"idempotent-replayed", b"true"),
        ]
        await send({"type": "http.response.start", "status": claim.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": claim.body})
        return
    if claim == "mismatch":
        await _send_problem(
            send, scope, 409, "idempotency_key_reused", "this key was used for a different request"
        )
        return
    if claim == "in_progress":
        await _send_problem(
            send, scope, 409, "idempotency_key_in_use", "a request with this key is still running"
        )
        return

    status = 500
    content_type = ""
    held: list[Message] = []

    async def capture(message: Message) -> None:
        nonlocal status, content_type
        if message["type"] == "http.response.start":
            status = message["status"]
            for name, value in message.get("headers", []):
                if name.lower() == b"content-type":
                    content_type = value.decode("latin-1")
        held.append(message)

    try:
        await app(scope, receive, capture)
    except BaseException:
        await store.release(owner, key)
        raise
    # The answer is stored before the client sees it: a retry that follows the answer must
    # find it stored, never "still in progress". A 5xx frees the key for a retry instead (the
    # engine's own command-id dedup still guarantees a single effect). Neither raises: with the
    # store down, the claim is released in the background once it is back (store/idempotency).
    if status < 500:
        body_out = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
        await store.complete(owner, key, Stored(status, content_type, body_out))
    else:
        await store.release(owner, key)
    for message in held:
        await send(message)


def edge_middleware(app: ASGIApp) -> ASGIApp:
    """Request id (from `X-Request-Id` when sane, else made; in the response header and every log
    line), latency histogram by route, rate limits on /api/, Idempotency-Key on POST and DELETE
    (not on the sign-in routes, `SIGNIN_PATHS`)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        start = time.perf_counter()
        incoming = idempotency_key = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
            elif name == b"idempotency-key":
                idempotency_key = value.decode("latin-1")
        request_id = incoming if incoming is not None and SANE_REQUEST_ID.match(incoming) else new_id()
        scope.setdefault("state", {})["request_id"] = request_id
        added = [(b"x-request-id", request_id.encode())]
        if scope["method"] == "GET" and scope["path"].startswith("/api/"):
            # Reads are served from the projection (distributed: all of them): say how stale.
            projection = getattr(scope["app"].state, "projection", None)
            lag = projection.header() if projection is not None else None
            if lag is not None:
                added.append(lag)
        status = 500

        async def edge_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *added]
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            if scope["path"].startswith("/api/") and await _rate_limited(scope, edge_send):
                return
            if (refused := csrf_refusal(scope)) is not None:  # body types, Origin, CSRF token
                await _send_problem(edge_send, scope, *refused)
                return
            if scope["method"] in _BODY_METHODS:
                body = await _read_body(scope, receive, edge_send)
                if body is None:
                    return
                receive = _replaying(body, receive)
                if (
                    idempotency_key is not None
                    and scope["method"] in IDEMPOTENT_METHODS  # (all of them read their body)
                    # Routed already (Litestar runs this after routing): the template, not the raw path.
                    and scope.get("path_template") not in SIGNIN_PATHS
                ):
                    await _idempotent(app, scope, receive, edge_send, idempotency_key, body)
                    return
            await app(scope, receive, edge_send)
        finally:
            REQUEST_ID.reset(token)
            route = scope.get("path_template") or "unmatched"
            _latency(route, scope["method"], status).observe(time.perf_counter() - start)

    return middleware


@functools.cache
def _latency(route: str, method: str, status: int) -> Any:
    """The histogram child of one label set (labels() costs a lock and a dict build per call).
    Routes are templates and methods/statuses few: the cache stays small."""
    return metrics.HTTP_LATENCY.labels(route, method, str(status))


__all__ = [
    "RedisTokenBuckets",
    "TokenBuckets",
    "edge_middleware",
]
