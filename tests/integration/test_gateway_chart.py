"""The chart game live over WebSocket on an embedded server running its scheduler: the round's
announcement and opening on `round.<game>`, candles on `candles.<game>` (JSON, and CANDLE_DATA
0x83 in the binary protocol) in order, every 65 ms."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path

from websockets.asyncio.client import connect

from cashmarkets.gateway.protocol import MsgType
from tests.integration.api_helpers import embedded, ws_url
from tests.support.spec_client import (
    SPEC_CANDLE_DATA,
    CandlePayload,
    SpecHeader,
    decode_candle,
    decode_header,
    float64_fields,
    subscribe_frame,
)
from tests.support.ws_client import frame, recv_binary


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


async def test_a_client_written_from_the_spec_decodes_candle_frames(tmp_path: Path) -> None:
    """tests/support/spec_client.py knows only the spec's BinaryMessage and CandlePayload: it
    reads our CANDLE_DATA frames, and they say what the JSON codec says about the same candles."""
    async with embedded(tmp_path, chartgame=True) as client:
        url = ws_url(client)
        async with connect(url) as js, connect(url) as binary:
            await js.send(json.dumps({"method": "SUBSCRIBE", "params": ["candles.btc-30s"], "id": 1}))
            await binary.send(subscribe_frame("candles.btc-30s", 1))
            frames: list[tuple[SpecHeader, CandlePayload, bytes]] = []
            while len(frames) < 5:
                message = await asyncio.wait_for(binary.recv(), 20)
                assert isinstance(message, bytes)
                header, payload = decode_header(message)
                if header.type == SPEC_CANDLE_DATA:
                    frames.append((header, decode_candle(payload), payload))
            exact: dict[tuple[int, int], dict] = {}
            while not all(key in exact for key in _keys(frames)):
                message = json.loads(await asyncio.wait_for(js.recv(), 20))
                if message.get("stream") == "candles.btc-30s":
                    data = message["data"]
                    exact[(data["round"], data["i"])] = data
    for header, candle, payload in frames:
        assert header.version == 1
        assert candle.timestamp == header.timestamp > 1_700_000_000_000  # engine ms of the tick
        assert all(float64_fields(payload).values()), float64_fields(payload)
        game, _, round_no = candle.roundId.partition(":")
        assert game == "btc-30s"
        same = exact[(int(round_no), candle.index)]  # the JSON codec's message for the candle
        assert (candle.open, candle.high, candle.low, candle.close) == tuple(
            float(same[k]) for k in ("o", "h", "l", "c")
        )
        assert candle.volume == float(same["v"])
        assert candle.low <= min(candle.open, candle.close) <= max(candle.open, candle.close) <= candle.high
    # In order, one after another (a round change restarts the index at 0).
    sequences = [h.sequence for h, _, _ in frames]
    assert sequences == list(range(sequences[0], sequences[0] + len(frames)))
    for (_, a, _), (_, b, _) in itertools.pairwise(frames):
        assert b.index == a.index + 1 or (b.index == 0 and b.roundId != a.roundId)


def _keys(frames: list[tuple[SpecHeader, CandlePayload, bytes]]) -> list[tuple[int, int]]:
    return [(int(c.roundId.partition(":")[2]), c.index) for _, c, _ in frames]
