"""Deeply nested client input is refused cleanly by every decoder of the real server (issue 15,
item 1: a 40 KB body of `[` used to overflow the C stack and kill `serve` with everything in it).

The server is `cashmarkets serve` as a user starts it, so it has made every import `serve` makes
(py_ecc among them, which raises the recursion limit at import)."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from tests.e2e.processes import Proc, free_port, wait_ready

pytestmark = pytest.mark.fuzz

DEPTH = 40_000


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str, Proc]]:
    port, ws_port = free_port(), free_port()
    proc = Proc(
        ["serve", "--data-dir", str(tmp_path / "data"), "--port", str(port)],
        {"CASHMARKETS_WS_PORT": str(ws_port)},
        tmp_path / "serve.log",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base)
        yield base, f"ws://127.0.0.1:{ws_port}/ws", proc
    finally:
        proc.stop()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_every_decoder_refuses_deep_nesting_and_the_server_stays_up(
    server: tuple[str, str, Proc],
) -> None:
    base, ws_url, proc = server
    with httpx.Client(base_url=base, timeout=10) as http:
        # HTTP JSON bodies: bare, inside an object, and after brackets in a string.
        bodies = (b"[" * DEPTH, b'{"email":' + b"[" * DEPTH, b'{"a":"' + b"[" * 100 + b'",' + b"{" * DEPTH)
        for body in bodies:
            answer = http.post("/api/v1/signup", content=body, headers={"content-type": "application/json"})
            assert answer.status_code == 400, answer.text
            assert answer.json()["code"] == "bad_request"
        # A token whose header and payload are deeply nested JSON: refused as a bad token.
        deep_jwt = f"{_b64(b'[' * 1500)}.{_b64(b'{' * 1500)}.{_b64(b'x' * 32)}"
        answer = http.get("/api/v1/balance", headers={"authorization": f"Bearer {deep_jwt}"})
        assert answer.status_code == 401, answer.text
        answer = http.get("/api/v1/balance", headers={"authorization": "Bearer " + "a" * 40_000})
        assert answer.status_code == 401, answer.text

    async def sockets() -> None:
        # Socket JSON: the SUBSCRIBE of the report, then 40,000 `[`.
        async with websockets.connect(ws_url, max_size=2**20) as ws:
            await ws.send('{"method":"SUBSCRIBE","id":1,"params":[' + "[" * DEPTH)
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert reply["error"]["code"] == 1, reply  # BAD_MESSAGE
            await ws.send(json.dumps({"method": "AUTH", "id": 2, "params": [deep_jwt]}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert reply["error"]["code"] == 6, reply  # AUTH_FAILED
        # Socket MessagePack: a valid header (version 1, SUBSCRIBE_ROUND, ts, sequence 7), then
        # 40,000 one-element arrays.
        async with websockets.connect(ws_url + "?codec=binary", max_size=2**20) as ws:
            await ws.send(struct.pack(">BBQI", 1, 0x02, 0, 7) + b"\x91" * DEPTH)
            reply = await asyncio.wait_for(ws.recv(), 10)
            assert isinstance(reply, bytes)
            version, msg_type, _ts, sequence = struct.unpack_from(">BBQI", reply)
            assert (version, msg_type, sequence) == (1, 0xFF, 7)  # ERROR, echoing the sequence
            # The connection still serves a well-formed request afterwards.
            await ws.send(struct.pack(">BBQI", 1, 0x07, 0, 8) + b"\x80")
            reply = await asyncio.wait_for(ws.recv(), 10)
            _version, msg_type, _ts, sequence = struct.unpack_from(">BBQI", reply)
            assert (msg_type, sequence) == (0x88, 8)  # RESULT

    asyncio.run(sockets())
    assert proc.alive(), proc.output()
    assert httpx.get(f"{base}/health", timeout=5).status_code == 200
