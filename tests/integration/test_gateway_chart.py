"""The chart game live over WebSocket on an embedded server running its scheduler: the round's
announcement and opening on `round.<game>`, candles on `candles.<game>` (JSON, and CANDLE_DATA
0x83 in the binary protocol) in order, every 65 ms."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from websockets.asyncio.client import connect

from cashmarkets.gateway.protocol import MsgType
from tests.integration.api_helpers import embedded, ws_url
from tests.integration.test_gateway import frame, recv_binary


async def test_candles_and_round_events_stream_in_both_codecs(tmp_path: Path) -> None:
    async with embedded(tmp_path, chartgame=True) as client:
        url = ws_url(client)
        async with connect(url) as js, connect(url) as binary:
            await js.send(
                json.dumps({"method": "SUBSCRIBE", "params": ["round.btc-30s", "candles.btc-30s"], "id": 1})
            )
            await binary.send(frame(MsgType.SUBSCRIBE_ROUND, 1, {"topic": "candles.btc-30s"}))
            got: list[dict] = []
            deadline = time.monotonic() + 20
            while (
                time.monotonic() < deadline
                and sum(1 for m in got if m.get("stream") == "candles.btc-30s") < 5
            ):
                message = json.loads(await asyncio.wait_for(js.recv(), 20))
                got.append(message)
            rounds = [m["data"] for m in got if m.get("stream") == "round.btc-30s"]
            candles = [m["data"] for m in got if m.get("stream") == "candles.btc-30s"]
            assert [r["event"] for r in rounds][:2] == ["announced", "open"] or "open" in [
                r["event"] for r in rounds
            ]
            assert len(candles) >= 5
            indices = [c["i"] for c in candles]
            assert indices == list(range(indices[0], indices[0] + len(indices)))
            assert all(float(c["l"]) <= float(c["c"]) <= float(c["h"]) for c in candles)
            kinds = []
            for _ in range(6):
                kind, _, body = await recv_binary(binary)
                kinds.append(kind)
                if kind == MsgType.CANDLE_DATA:
                    assert body["stream"] == "candles.btc-30s"
                    assert body["data"]["game"] == "btc-30s" and {"o", "h", "l", "c", "i"} <= set(
                        body["data"]
                    )
            assert MsgType.CANDLE_DATA in kinds
