"""Request ids: taken from `X-Request-Id` when sane, else made (by the edge middleware); bound to
every log line of the request, returned in the response header and in error bodies."""

from __future__ import annotations

import re
from typing import Any

from litestar import Request

from cashmarkets.ops.ids import new_id

REQUEST_ID_HEADER = "x-request-id"
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def request_id_of(request: Request[Any, Any, Any]) -> str:
    found = request.scope.get("state", {}).get("request_id")
    if not found:
        # Routing errors (404, 405) are answered before any middleware runs: give them an id here.
        found = new_id()
        state = request.scope.setdefault("state", {})
        state["request_id"] = found
        state["request_id_needs_header"] = True
    return str(found)
