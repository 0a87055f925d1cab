"""Request ids: taken from `X-Request-Id` when sane, else made; bound to every log line of the
request, returned in the response header and in error bodies."""

from __future__ import annotations

import re
import uuid
from typing import Any

import structlog
from litestar import Request
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def request_id_of(request: Request[Any, Any, Any]) -> str:
    found = request.scope.get("state", {}).get("request_id")
    if not found:
        # Routing errors (404, 405) are answered before any middleware runs: give them an id here.
        found = uuid.uuid4().hex
        state = request.scope.setdefault("state", {})
        state["request_id"] = found
        state["request_id_needs_header"] = True
    return str(found)


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if _SANE_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            await app(scope, receive, send_with_id)

    return middleware
