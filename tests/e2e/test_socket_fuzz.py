"""Black-box fuzzing of the WebSocket gateway of a real `cashmarkets serve` (issue 15).

Random and hostile frames on both codecs, from a fixed seed: random JSON requests (any method,
any params, any id), random text, truncated JSON, deeply nested JSON and MessagePack, random
MessagePack payloads behind valid and invalid headers, truncated headers, oversized frames, and
raw TCP connections that send part of an upgrade request and hang up. Half of the sockets sign
in first, so random command payloads reach the command path too.

It passes when the server is still up and serving afterwards, every reply was well formed
(a JSON reply or data frame; a binary frame with the spec's header and a MessagePack map), and
no connection was closed except an oversized frame's (1009, as docs/websocket.md says).

Bounded for CI: `CASHMARKETS_SOCKET_FUZZ_FRAMES` (default 1000) frames, at most
`CASHMARKETS_SOCKET_FUZZ_S` (default 30) seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import struct
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import websockets

from tests.e2e.processes import Proc, free_port, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.fuzz]

FRAMES = int(os.environ.get("CASHMARKETS_SOCKET_FUZZ_FRAMES", "1000"))
BUDGET_S = float(os.environ.get("CASHMARKETS_SOCKET_FUZZ_S", "30"))
SEED = 20261207
FRAME_BYTES_MAX = 64 * 1024  # CASHMARKETS_WS_MESSAGE_BYTES_MAX's default
HEADER = struct.Struct(">BBQI")
SERVER_TYPES = {0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0xFF}
ERROR_CODES = set(range(1, 32))  # ErrorCode's values (stable, small integers)
METHODS = [
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "LIST_SUBSCRIPTIONS",
    "AUTH",
    "OPEN_POSITION",
    "CLOSE_POSITION",
    "GET_BALANCE",
    "subscribe",
    "",
    "DROP_TABLES",
]
TOPICS = ["bookTicker.BTC_USDC_PERP", "account", "depth.BTC_USDC", "candles.btc-30s", "round.btc-30s", "x"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str, Proc]]:
    port, ws_port = free_port(), free_port()
    proc = Proc(
        ["serve", "--data-dir", str(tmp_path / "data"), "--port", str(port)],
        {"CASHMARKETS_WS_PORT": str(ws_port), "CASHMARKETS_CHARTGAME": "1"},
        tmp_path / "serve.log",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base)
        yield base, f"ws://127.0.0.1:{ws_port}/ws", proc
    finally:
        proc.stop()


# ---- generators ---------------------------------------------------------------------------------


def random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 6 or roll < 0.45:
        return rng.choice(
            [
                None,
                True,
                rng.randint(-(2**63), 2**64 - 1),
                rng.randint(-5, 5),
                rng.random() * 10 ** rng.randint(-5, 30),
                "".join(chr(rng.randint(1, 0x2FF)) for _ in range(rng.randint(0, 12))),
                rng.choice(TOPICS),
                "1e999",
                "123456789012345678901234567890",
                "-0.00000001",
            ]
        )
    if roll < 0.75:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["asset", "type", "margin", "leverage", "game", "positionId", "orderId", "token", "topic", "k"]
    return {rng.choice(keys): random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def json_frame(rng: random.Random) -> str | bytes:
    kind = rng.random()
    if kind < 0.5:
        request: dict[str, Any] = {"method": rng.choice(METHODS), "id": random_value(rng, 5)}
        if rng.random() < 0.9:
            request["params"] = (
                [rng.choice(TOPICS)] if rng.random() < 0.3 else [random_value(rng, 1) for _ in range(3)]
            )
        if rng.random() < 0.1:
            request["extra"] = 1
        return json.dumps(request)
    if kind < 0.65:
        text = json.dumps({"method": "SUBSCRIBE", "params": [random_value(rng)], "id": 1})
        return text[: rng.randint(0, len(text))]  # truncated
    if kind < 0.8:
        opener = rng.choice(["[", "{", '{"a":', '{"method":"SUBSCRIBE","id":1,"params":['])
        return opener + rng.choice(["[", '{"k":', "[1,"]) * rng.randint(30, 14_000)
    if kind < 0.9:
        return (
            "".join(chr(rng.randint(1, 0xFFFF)) for _ in range(rng.randint(0, 200)))
            .encode("utf-8", "replace")
            .decode("utf-8", "replace")
        )
    return rng.choice(["null", "[]", "1", '"x"', "{}", '{"method":1}', '{"method":"AUTH","params":[1]}'])


def binary_frame(rng: random.Random) -> bytes:
    kind = rng.random()
    version = 1 if rng.random() < 0.9 else rng.randint(0, 255)
    msg_type = rng.choice([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, rng.randint(0, 255)])
    header = HEADER.pack(version, msg_type, rng.randint(0, 2**64 - 1), rng.randint(0, 2**32 - 1))
    if kind < 0.45:
        value = random_value(rng) if rng.random() < 0.3 else {"topic": rng.choice(TOPICS), **_map(rng)}
        return header + msgspec.msgpack.encode(value)
    if kind < 0.6:
        return header + rng.choice([b"\x91", b"\x81\xa1k", b"\xdc\x00\x01"]) * rng.randint(30, 20_000)
    if kind < 0.7:
        return header[: rng.randint(0, HEADER.size - 1)]  # truncated header
    if kind < 0.85:
        payload = msgspec.msgpack.encode(_map(rng))
        return header + payload[: rng.randint(0, len(payload))]  # truncated payload
    return header + rng.randbytes(rng.randint(0, 300))


def _map(rng: random.Random) -> dict[str, Any]:
    value = random_value(rng, 2)
    return value if isinstance(value, dict) else {"k": value}


# ---- checks --------------------------------------------------------------------------------------


def check_text(message: str) -> None:
    reply = json.loads(message)
    assert isinstance(reply, dict), message[:200]
    if "stream" in reply:
        assert isinstance(reply["stream"], str) and isinstance(reply.get("seq"), int), message[:200]
        assert "data" in reply, message[:200]
        return
    assert "id" in reply and (("result" in reply) != ("error" in reply)), message[:200]
    if "error" in reply:
        error = reply["error"]
        assert error["code"] in ERROR_CODES and isinstance(error["msg"], str), message[:200]


def check_binary(message: bytes) -> None:
    assert len(message) >= HEADER.size, message[:40]
    version, msg_type, _ts, _sequence = HEADER.unpack_from(message)
    assert version == 1 and msg_type in SERVER_TYPES, message[:40]
    payload = msgspec.msgpack.decode(message[HEADER.size :])
    assert isinstance(payload, dict), message[:40]
    if msg_type == 0xFF:
        assert payload["code"] in ERROR_CODES and isinstance(payload["msg"], str), payload


async def reader(ws: Any, counts: Counter[str]) -> None:
    try:
        async for message in ws:
            if isinstance(message, str):
                check_text(message)
                counts["text replies"] += 1
            else:
                check_binary(message)
                counts["binary replies"] += 1
    except websockets.ConnectionClosed:
        pass


async def half_open_upgrades(ws_url: str, rng: random.Random, count: int) -> None:
    """Raw TCP: part of an upgrade request, then hang up."""
    host_port = ws_url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    request = (
        f"GET /ws HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    for _ in range(count):
        _reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request[: rng.randint(0, len(request) - 1)] + rng.randbytes(rng.randint(0, 20)))
        await writer.drain()
        writer.close()


async def fuzz(ws_url: str, token: str) -> Counter[str]:
    rng = random.Random(SEED)
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + BUDGET_S
    sent = 0
    await half_open_upgrades(ws_url, rng, 50)
    while sent < FRAMES and time.monotonic() < deadline:
        binary = rng.random() < 0.5
        async with websockets.connect(
            ws_url + ("?codec=binary" if binary else ""), max_size=2**22, ping_interval=None
        ) as ws:
            task = asyncio.create_task(reader(ws, counts))
            if rng.random() < 0.5:
                auth = (
                    HEADER.pack(1, 0x01, 0, 1) + msgspec.msgpack.encode({"token": token})
                    if binary
                    else json.dumps({"method": "AUTH", "params": [token], "id": "auth"})
                )
                await ws.send(auth)
            oversized = False
            for _ in range(rng.randint(1, 40)):
                if rng.random() < 0.01:
                    frame: str | bytes = b"\x00" * (FRAME_BYTES_MAX + 1 + rng.randint(0, 1000))
                    oversized = True
                else:
                    frame = binary_frame(rng) if binary else json_frame(rng)
                    size = len(frame) if isinstance(frame, bytes) else len(frame.encode())
                    oversized = size > FRAME_BYTES_MAX
                try:
                    await ws.send(frame)
                except websockets.ConnectionClosed:
                    break
                sent += 1
                if oversized:
                    break
            await asyncio.sleep(0.05)  # let replies to the last frames arrive
            if oversized:
                await asyncio.wait_for(task, 10)
                assert ws.close_code == 1009, ws.close_code
                counts["closed for size"] += 1
            else:
                assert ws.close_code is None, f"closed with {ws.close_code} {ws.close_reason}"
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    counts["frames"] = sent
    return counts


def test_socket_fuzz_leaves_the_gateway_up_and_every_answer_well_formed(
    server: tuple[str, str, Proc],
) -> None:
    base, ws_url, proc = server
    signup = httpx.post(
        f"{base}/api/v1/signup",
        json={"email": "fuzz@example.com", "password": "correct horse battery"},
        timeout=30,
    )
    assert signup.status_code == 201, signup.text
    counts = asyncio.run(fuzz(ws_url, signup.json()["token"]))
    assert counts["frames"] >= min(FRAMES, 200), counts
    assert counts["text replies"] > 0 and counts["binary replies"] > 0, counts

    async def still_serving() -> Any:
        async with websockets.connect(ws_url) as ws:
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 9}))
            return json.loads(await asyncio.wait_for(ws.recv(), 10))

    assert asyncio.run(still_serving()) == {"id": 9, "result": []}
    assert proc.alive(), proc.output()
    assert httpx.get(f"{base}/health", timeout=5).status_code == 200
    print(dict(counts))
