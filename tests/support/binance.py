"""Binance-style signed requests (HMAC-SHA256 of the query string) for the /api/v3 tests."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any
from urllib.parse import urlencode


def signed(secret: str, **params: Any) -> str:
    params.setdefault("timestamp", time.time_ns() // 1_000_000)
    query = urlencode(params)
    return query + "&signature=" + hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
