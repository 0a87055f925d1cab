"""HTTP requests that really overlap, through Litestar's test client."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from litestar.testing import AsyncTestClient


async def concurrently(
    client: AsyncTestClient[Any], posts: list[tuple[str, Any]], headers: dict[str, str] | None = None
) -> list[httpx.Response]:
    """POSTs that really overlap: the test client's transport runs one request at a time per
    calling thread, so each is sent from a thread of its own."""

    def one(path: str, body: Any) -> httpx.Response:
        request = httpx.Request("POST", f"http://testserver.local{path}", json=body, headers=headers)
        response: httpx.Response = client._transport.handle_request(request)
        response.read()
        return response

    return list(await asyncio.gather(*(asyncio.to_thread(one, path, body) for path, body in posts)))
