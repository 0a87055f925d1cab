"""uvicorn's httptools protocol with two guards for the descriptors a connection holds.

uvicorn closes an idle kept-alive connection (`timeout_keep_alive`, 5 s), but nothing else: a
connection that sends part of a request header, or nothing, stays open for ever. Some thousand
of them exhaust the process's file descriptors (issue 15). `GuardedHttpToolsProtocol` adds:

- a header timeout: from the connection's start, and from the first byte of each later request
  on a kept-alive connection, the request's headers must be complete within `header_timeout_s`,
  else the connection is closed (with a 408 if part of a request came). While an earlier request
  of the connection is still being answered, the timeout waits (reading is paused by uvicorn's
  flow control then; the time is the server's, not the client's).
- a limit of open connections per TCP peer address (`PerIpConnections`: the peer holds the
  descriptor, not whatever X-Forwarded-For claims; trusted proxies are not limited). A connection
  over the limit gets a 503 and is closed at once, before anything is read.

Timers: between requests only uvicorn's keep-alive timer runs (it is cancelled by the next
request's first bytes, which start the header timer); between the headers and the response's
end, neither (the application's own timeouts apply).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cashmarkets.ops import metrics
from cashmarkets.ops.limits import PerIpConnections, peer_ip

TOO_MANY = b"too many connections from this address\n"


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Set `header_timeout_s` and `per_ip` on a subclass (`guarded_protocol` makes one per server)."""

    header_timeout_s: ClassVar[float] = 10.0
    per_ip: ClassVar[PerIpConnections] = PerIpConnections(0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._peer: str | None = None  # counted in per_ip while set
        self._request_begun = False

    # ---- connection --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ip = peer_ip(transport)
        if not self.per_ip.admit(ip):
            metrics.CONNECTIONS_CLOSED.labels("http", "per_ip_limit").inc()
            self._refuse(503, b"Service Unavailable", TOO_MANY)
            return
        self._peer = ip
        metrics.HTTP_CONNECTIONS.inc()
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        self._release_peer()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        # The transport moves to the WebSocket protocol, whose close never reaches connection_lost
        # here: give the slot back now. (The API serves no WebSocket route; the gateway does.)
        self._cancel_header_timer()
        self._release_peer()
        super().handle_websocket_upgrade()

    def _release_peer(self) -> None:
        if self._peer is not None:
            self.per_ip.release(self._peer)
            self._peer = None
            metrics.HTTP_CONNECTIONS.dec()

    # ---- the header timer ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        if self._header_timer is None:  # a new request on a kept-alive connection
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        self._request_begun = False
        super().on_headers_complete()

    def _arm_header_timer(self) -> None:
        if self.header_timeout_s <= 0:
            return
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.pipeline or (self.cycle is not None and not self.cycle.response_complete):
            # An earlier request is still being answered: wait for it.
            self._arm_header_timer()
            return
        metrics.CONNECTIONS_CLOSED.labels("http", "header_timeout").inc()
        if self._request_begun:
            self._refuse(408, b"Request Timeout", b"request headers not received in time\n")
        else:
            self.transport.close()

    def _refuse(self, status: int, phrase: bytes, body: bytes) -> None:
        head = [b"HTTP/1.1 %d %s\r\n" % (status, phrase)]
        for name, value in self.server_state.default_headers:
            head.append(b"%s: %s\r\n" % (name, value))
        head.append(b"content-type: text/plain; charset=utf-8\r\n")
        head.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def guarded_protocol(
    *, header_timeout_s: float, connections_per_ip: int, trusted_proxies: str = ""
) -> type[GuardedHttpToolsProtocol]:
    """A protocol class for `uvicorn.run(http=...)`, with its own per-address counts."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "header_timeout_s": header_timeout_s,
            "per_ip": PerIpConnections(connections_per_ip, trusted_proxies),
        },
    )
