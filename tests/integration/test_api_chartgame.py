"""`/api/v1/chartgame` on an embedded server: positions over HTTP during a live round, balances
settle exactly, rounds and candles from the store, and a settled round's verification document
passes the standalone verifier."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient

from cashmarkets.beacons.sources import LocalSource
from cashmarkets.core.commands import Command
from cashmarkets.core.money import parse_amount
from cashmarkets.core.products.chartgame import (
    ChartAnnounceRound,
    ChartBeginRound,
    ChartCommitChain,
    ChartTick,
    payout_of,
)
from cashmarkets.core.results import Accepted
from cashmarkets.fairness.chain import SeedChain
from cashmarkets.runtime.chart_setup import local_beacon_secret
from tests.integration.api_helpers import bearer, embedded, on_app_loop, services_of, signup, wait_committed
from tests.integration.chart_helpers import run_tool

CG = "/api/v1/chartgame"
GAME = "btc-30s"
_n = [0]


async def submit(client: AsyncTestClient[Any], cmd: Command) -> Any:
    _n[0] += 1
    cmd.command_id = f"t{_n[0]}"
    runtime = services_of(client).runtime
    result = await on_app_loop(client, runtime.submit(cmd))
    assert isinstance(result, Accepted), result
    return result.data


async def balance(client: AsyncTestClient[Any], h: dict[str, str]) -> str:
    body = (await client.get("/api/v1/balance", headers=h)).json()
    return next(b["balance"] for b in body["balances"] if b["asset"] == "USDC")


async def test_a_round_over_http_settles_exactly_and_verifies(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        h = bearer((await signup(client, "player@example.com"))["token"])
        early = await client.post(
            f"{CG}/positions", json={"game": GAME, "side": "long", "stake": "10", "leverage": 5}, headers=h
        )
        assert early.status_code == 409 and early.json()["code"] == "round_not_open"
        chain = SeedChain(bytes(range(32)), 3)
        await submit(
            client,
            ChartCommitChain(command_id="", game=GAME, chain_id=1, commitment=chain.commitment, length=3),
        )
        view = await submit(
            client, ChartAnnounceRound(command_id="", game=GAME, round_no=1, start_ms=1_800_000_000_000)
        )
        beacon = LocalSource(local_beacon_secret(services_of(client).settings))
        signature = (await beacon.fetch(view.beacon_round)).signature
        await submit(
            client,
            ChartBeginRound(
                command_id="", game=GAME, round_no=1, seed=chain.seed(1), beacon_signature=signature
            ),
        )
        for _ in range(3):
            await submit(client, ChartTick(command_id="", game=GAME, round_no=1))

        games = (await client.get(f"{CG}/games")).json()
        assert games[0]["game"] == GAME and games[0]["feeBps"] == 5 and games[0]["model"]["subTicks"] == 8
        rtp = games[0]["rtpPercentByLeverage"]
        assert set(rtp) == {"1", "2", "5", "10", "25"}  # up to the game's 25x
        errors = games[0]["rtpStandardErrorByLeverage"]
        assert set(errors) == set(rtp)
        # 1x to 5x carry no bust noise: the RTP is the fee's alone, 1 / (1 + fee x leverage).
        assert rtp["1"] == "99.9500" and errors["1"] == "0.0000"
        assert 0 < float(errors["25"]) < 3 and all(90 < float(v) < 110 for v in rtp.values())
        assert games[0]["rtpSimulatedPositions"] == 8_000
        for body, status, code in [
            ({"game": GAME, "side": "long", "stake": "0", "leverage": 5}, 400, "invalid_amount"),
            ({"game": GAME, "side": "up", "stake": "1", "leverage": 5}, 400, "validation_failed"),
            ({"game": GAME, "side": "long", "stake": "1", "leverage": 500}, 422, "bad_leverage"),
            ({"game": "nope", "side": "long", "stake": "1", "leverage": 5}, 404, "unknown_game"),
            (
                {"game": GAME, "side": "long", "stake": "100000", "leverage": 5},
                422,
                "bad_stake",
            ),  # over 1,000
        ]:
            r = await client.post(f"{CG}/positions", json=body, headers=h)
            assert r.status_code == status and r.json()["code"] == code, (body, r.text)
        assert await balance(client, h) == "5000.000000"  # nothing moved

        opened = await client.post(
            f"{CG}/positions", json={"game": GAME, "side": "long", "stake": "100", "leverage": 10}, headers=h
        )
        assert opened.status_code == 200, opened.text
        pos = opened.json()
        assert (pos["stake"], pos["fee"], pos["status"]) == (
            "100.000000",
            "0.500000",
            "open",
        )  # 5 bps of 1,000
        kept = await client.post(
            f"{CG}/positions", json={"game": GAME, "side": "short", "stake": "50", "leverage": 1}, headers=h
        )
        for _ in range(5):
            await submit(client, ChartTick(command_id="", game=GAME, round_no=1))
        closed = await client.post(f"{CG}/positions/{pos['positionId']}/close", headers=h)
        assert closed.status_code == 200 and closed.json()["status"] == "closed"
        twice = await client.post(f"{CG}/positions/{pos['positionId']}/close", headers=h)
        assert twice.status_code == 404
        for _ in range(461 - 8):
            await submit(client, ChartTick(command_id="", game=GAME, round_no=1))
        await wait_committed(client)

        round_ = (await client.get(f"{CG}/rounds/{GAME}/1")).json()
        assert (
            round_["status"] == "settled"
            and round_["candles"] == 461
            and round_["seed"] == chain.seed(1).hex()
        )
        listed = (await client.get(f"{CG}/games/{GAME}/rounds", params={"status": "settled"})).json()[
            "rounds"
        ]
        assert [r["round"] for r in listed] == [1]
        pages, cursor = [], None
        while True:
            params: dict[str, Any] = {"limit": 200}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get(f"{CG}/rounds/{GAME}/1/candles", params=params)).json()
            pages += page["candles"]
            cursor = page.get("nextCursor")
            if not cursor:
                break
        assert [c["i"] for c in pages] == list(range(461))

        mine = {
            p["positionId"]: p for p in (await client.get(f"{CG}/positions", headers=h)).json()["positions"]
        }
        short = mine[kept.json()["positionId"]]
        assert short["status"] in ("settled", "busted")
        close_price = pages[-1]["c"]
        if short["status"] == "settled":
            assert short["exitPrice"] == close_price
        # The balance, to the unit: the signup's 5,000, less stakes and fees, plus payouts.
        long_payout = parse_amount(closed.json()["payout"], 6, allow_zero=True)
        short_payout = parse_amount(short["payout"], 6, allow_zero=True)
        expected = 5_000_000_000 - 150_000_000 - 525_000 + long_payout + short_payout  # fees 0.5 + 0.025
        assert parse_amount(await balance(client, h), 6) == expected
        entry = parse_amount(pos["entryPrice"], 2)
        exit_ = parse_amount(closed.json()["exitPrice"], 2)
        assert long_payout == payout_of("long", 100_000_000, 10, entry, exit_)

        board = (await client.get(f"{CG}/rounds/{GAME}/1/leaderboard")).json()
        assert len(board) == 1 and board[0]["positions"] == 2
        doc = (await client.get(f"{CG}/rounds/{GAME}/1/verify")).json()
        path = tmp_path / "round.json"
        path.write_text(json.dumps(doc))
        assert run_tool(path) == 0
        data = str(tmp_path / "data")
        cli = subprocess.run(
            [sys.executable, "-m", "cashmarkets.cli", "verify", "round", GAME, "1", "--data-dir", data],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 0 and json.loads(cli.stdout)["fair"] is True, cli.stdout + cli.stderr
        missing = subprocess.run(
            [sys.executable, "-m", "cashmarkets.cli", "verify", "round", GAME, "9", "--data-dir", data],
            capture_output=True,
            timeout=60,
        )
        assert missing.returncode == 1
        assert (await client.get(f"{CG}/rounds/{GAME}/2/verify")).status_code == 404


async def test_positions_over_the_binary_websocket(tmp_path: Path) -> None:
    from websockets.asyncio.client import connect

    from cashmarkets.gateway.protocol import MsgType
    from tests.integration.api_helpers import ws_url
    from tests.support.ws_client import frame, recv_binary

    async with embedded(tmp_path) as client:
        token = (await signup(client, "ws@example.com"))["token"]
        chain = SeedChain(bytes(range(32)), 3)
        await submit(
            client,
            ChartCommitChain(command_id="", game=GAME, chain_id=1, commitment=chain.commitment, length=3),
        )
        view = await submit(
            client, ChartAnnounceRound(command_id="", game=GAME, round_no=1, start_ms=1_800_000_000_000)
        )
        await submit(
            client,
            ChartBeginRound(
                command_id="", game=GAME, round_no=1, seed=chain.seed(1), beacon_signature=b"\x02" * 48
            ),
        )
        await submit(client, ChartTick(command_id="", game=GAME, round_no=1))
        assert view.round_no == 1
        async with connect(ws_url(client)) as ws:
            await ws.send(frame(MsgType.AUTH, 1, {"token": token}))
            assert (await recv_binary(ws))[0] == MsgType.AUTH_SUCCESS
            order = {"game": GAME, "side": "short", "stake": "20", "leverage": 3, "idempotencyKey": "c-1"}
            await ws.send(frame(MsgType.OPEN_POSITION, 2, order))
            kind, seq, body = await recv_binary(ws)
            assert (kind, seq) == (MsgType.POSITION_UPDATE, 2)
            opened = body["data"]
            assert (opened["event"], opened["side"], opened["stake"], opened["status"]) == (
                "chart",
                "short",
                "20.000000",
                "open",
            )
            await ws.send(frame(MsgType.OPEN_POSITION, 3, order))  # the same key: the same position
            assert (await recv_binary(ws))[2]["data"]["positionId"] == opened["positionId"]
            await submit(client, ChartTick(command_id="", game=GAME, round_no=1))
            await ws.send(frame(MsgType.CLOSE_POSITION, 4, {"positionId": opened["positionId"]}))
            kind, seq, body = await recv_binary(ws)
            assert (kind, seq, body["data"]["status"]) == (MsgType.POSITION_UPDATE, 4, "closed")
            await ws.send(frame(MsgType.CLOSE_POSITION, 5, {"positionId": opened["positionId"]}))
            kind, seq, body = await recv_binary(ws)
            assert kind == MsgType.ERROR and body["reason"] == "position_not_found"
