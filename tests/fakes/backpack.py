"""A local WebSocket server that speaks Backpack Exchange's public stream protocol, for tests.

`FakeBackpack` (websockets.serve on 127.0.0.1 with a free port) answers SUBSCRIBE with
`{"id": N, "result": null}`, streams book tickers only to connections subscribed to them, can
ping, and can drop every connection abruptly (TCP abort, no close frame). `ThreadedBackpack` runs
one on its own event loop in a thread, for synchronous tests that drive server processes.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

BTC_STREAM = "bookTicker.BTC_USDC_PERP"
ETH_STREAM = "bookTicker.ETH_USDC_PERP"
SOL_STREAM = "bookTicker.SOL_USDC_PERP"
FEED_SYMBOL = {BTC_STREAM: "BTC_USDC_PERP", ETH_STREAM: "ETH_USDC_PERP", SOL_STREAM: "SOL_USDC_PERP"}
E0 = 1757143198737843


async def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def book(
    stream: str,
    update_id: int,
    bid: str = "65432.1",
    ask: str = "65432.2",
    bid_qty: str = "1.5",
    ask_qty: str = "0.25",
    **overrides: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "e": "bookTicker",
        "E": E0 + update_id,
        "T": E0 + update_id - 1000,
        "s": FEED_SYMBOL[stream],
        "a": ask,
        "A": ask_qty,
        "b": bid,
        "B": bid_qty,
        "u": update_id,
    }
    data.update(overrides)
    return data


class FakeBackpack:
    def __init__(self) -> None:
        self.server: Server | None = None
        self.port = 0
        self.live: dict[ServerConnection, set[str]] = {}
        self.requests: list[dict[str, Any]] = []  # every JSON request received, in order
        self.subscribed_at: list[float] = []
        self.connected_at: list[float] = []
        self.reply: Callable[[dict[str, Any]], dict[str, Any]] = lambda msg: {
            "id": msg.get("id"),
            "result": None,
        }

    async def start(self, port: int = 0) -> None:
        self.server = await serve(self._handler, "127.0.0.1", port, ping_interval=None, compression=None)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def subscriptions(self) -> list[list[str]]:
        return [r["params"] for r in self.requests if r.get("method") == "SUBSCRIBE"]

    async def _handler(self, ws: ServerConnection) -> None:
        self.connected_at.append(time.monotonic())
        self.live[ws] = set()
        try:
            async for raw in ws:
                msg = json.loads(raw)
                self.requests.append(msg)
                if msg.get("method") == "SUBSCRIBE":
                    self.live[ws].update(msg["params"])
                    self.subscribed_at.append(time.monotonic())
                    await ws.send(json.dumps(self.reply(msg)))
        except ConnectionClosed:
            pass
        finally:
            self.live.pop(ws, None)

    async def wait_subscribed(self, count: int = 1, timeout: float = 3.0) -> None:
        await wait_until(lambda: len(self.subscribed_at) >= count and bool(self.live), timeout)

    async def publish(self, stream: str, data: dict[str, Any]) -> None:
        """Send a stream message to the connections subscribed to it."""
        text = json.dumps({"stream": stream, "data": data})
        for ws, streams in list(self.live.items()):
            if stream in streams:
                await ws.send(text)

    async def send_raw(self, message: str | bytes) -> None:
        """Send anything to every connection, subscribed or not."""
        for ws in list(self.live):
            await ws.send(message)

    def drop(self) -> None:
        """Abort every connection: no close frame, the TCP connection just goes away."""
        for ws in list(self.live):
            ws.transport.abort()

    async def ping_all(self, timeout: float = 1.0) -> int:
        """Ping every connection; returns how many answered with a pong in time."""
        answered = 0
        for ws in list(self.live):
            pong = await ws.ping()
            await asyncio.wait_for(pong, timeout)
            answered += 1
        return answered


class ThreadedBackpack:
    """A FakeBackpack on its own loop in a daemon thread; `publish` blocks until sent."""

    def __init__(self) -> None:
        self.fake = FakeBackpack()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-backpack", daemon=True)
        self._update_id = 0

    def __enter__(self) -> ThreadedBackpack:
        self.thread.start()
        self._call(self.fake.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self.fake.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def url(self) -> str:
        return self.fake.url

    def wait_subscribed(self, count: int = 1, timeout: float = 30.0) -> None:
        self._call(self.fake.wait_subscribed(count, timeout), timeout + 1)

    def quote(self, stream: str, bid: str, ask: str) -> int:
        """Publish a book ticker with the next update id; returns that id."""
        self._update_id += 1
        self._call(self.fake.publish(stream, book(stream, self._update_id, bid=bid, ask=ask)))
        return self._update_id
