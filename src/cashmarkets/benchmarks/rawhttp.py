"""A minimal HTTP/1.1 keep-alive client for load generation: one request at a time per connection,
requests pre-encoded by the caller, responses parsed just enough (status, Content-Length, body).

Why not httpx: on this 2-core host httpx spends ~1 ms of client CPU per request, so the client
saturates its core long before the server does and the bench measures the client. This one costs
a few tens of microseconds per request. It speaks only what our server answers: Content-Length
bodies (no chunked encoding), no redirects, no TLS.
"""

from __future__ import annotations

import asyncio
from typing import Final

HEADER_END: Final = b"\r\n\r\n"
READ_LIMIT_BYTES: Final = 1 << 20  # a response head or body larger than this is a protocol error


class HttpError(Exception):
    """The connection broke or the server answered something this client does not parse."""


def encode_request(
    method: str, path: str, host: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    """The bytes of one HTTP/1.1 request (keep-alive, JSON body when given)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection:
    """One keep-alive connection; `request` sends one request and returns (status, body)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(
            self.host, self.port, limit=READ_LIMIT_BYTES
        )

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, OSError):
                pass
            self._reader = self._writer = None

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self._writer is None or self._reader is None:
            await self.open()
        assert self._writer is not None and self._reader is not None
        try:
            self._writer.write(data)
            head = await self._reader.readuntil(HEADER_END)
            status, length, close = _parse_head(head)
            body = await self._reader.readexactly(length) if length else b""
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError) as exc:
            await self.close()
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc
        if close:
            await self.close()
        return status, body


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, content length, connection: close) of a response head."""
    try:
        status_line, _, rest = head.partition(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
    except (IndexError, ValueError) as exc:
        raise HttpError(f"bad status line: {head[:80]!r}") from exc
    length = 0
    close = False
    for line in rest.split(b"\r\n"):
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"content-length":
            length = int(value.strip())
            if length > READ_LIMIT_BYTES:
                raise HttpError(f"body of {length} bytes")
        elif lowered == b"transfer-encoding":
            raise HttpError("chunked responses are not supported")
        elif lowered == b"connection" and value.strip().lower() == b"close":
            close = True
    return status, length, close
