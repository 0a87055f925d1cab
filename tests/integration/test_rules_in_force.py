"""The API validates against the rules in force (decision 023), never its own defaults: in
embedded mode the engine's state, in distributed API processes what the engine process publishes
to Redis from its state."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio
import typer

from cashmarkets.bootstrap import build_engine
from cashmarkets.core.commands import SetRules
from cashmarkets.core.products.chartgame import ChartgameConfig, GameConfig
from cashmarkets.core.products.leverage import DEFAULT_MARKETS, LeverageConfig
from cashmarkets.core.products.spot import SpotConfig
from cashmarkets.core.results import Accepted
from cashmarkets.ops.dependencies import DependencyUnavailable
from cashmarkets.runtime.distributed import SqlBalances, publish_rules, rules_key
from tests.integration.api_helpers import bearer, embedded, services_of, signup

REDIS_URL = "redis://127.0.0.1:6379/0"
BTC_ONLY = LeverageConfig(markets=DEFAULT_MARKETS[:1])


async def test_embedded_routes_follow_the_engines_leverage_rules(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        assets = (await client.get("/api/v1/supportedAssets")).json()["assets"]
        assert [a["symbol"] for a in assets] == ["BTC", "ETH", "SOL"]
        # Pin other rules while the product is as built (the genesis pinned version 1 already).
        runtime = services_of(client).runtime
        cmd = SetRules(
            command_id="rules-btc-only", product="leverage", version=1, config=runtime.codec.encode(BTC_ONLY)
        )
        app_loop = runtime._writer.get_loop()
        result = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(runtime.submit(cmd), app_loop))
        assert isinstance(result, Accepted), result
        assets = (await client.get("/api/v1/supportedAssets")).json()["assets"]
        assert [a["symbol"] for a in assets] == ["BTC"]
        token = (await signup(client, "r@example.com"))["token"]
        eth = {"asset": "ETH", "type": "long", "margin": 1_000, "leverage": 5}
        r = await client.post("/api/v1/trade/create", json=eth, headers=bearer(token))
        assert r.status_code == 400 and r.json()["code"] == "validation_failed"
        assert r.json()["errors"] == [{"field": "asset", "message": "Invalid enum value 'ETH'"}]


@pytest.mark.redis
async def test_distributed_api_reads_the_rules_the_engine_publishes() -> None:
    stream = f"cashmarkets:test:rules:{uuid.uuid4().hex}"
    client: Any = redis.asyncio.Redis.from_url(REDIS_URL)
    balances = SqlBalances(None, client, stream)
    try:
        with pytest.raises(DependencyUnavailable):
            await balances.rules("leverage", LeverageConfig)  # nothing published: no guessing
        engine = build_engine()
        genesis = engine.genesis_commands()
        for seq, cmd in enumerate(genesis, start=1):
            if cmd.product == "leverage":
                cmd.config = msgspec.msgpack.encode(BTC_ONLY)
            cmd.seq = seq
            assert isinstance(engine.apply(cmd)[0], Accepted)
        await publish_rules(client, stream, engine)
        assert await balances.rules("leverage", LeverageConfig) == BTC_ONLY
        assert sorted(await client.hkeys(rules_key(stream))) == [b"chartgame", b"leverage", b"spot"]
    finally:
        await client.delete(rules_key(stream))
        await client.aclose()


async def test_embedded_chartgame_routes_follow_the_engines_rules(tmp_path: Path) -> None:
    async with embedded(tmp_path) as client:
        assert [g["game"] for g in (await client.get("/api/v1/chartgame/games")).json()] == ["btc-30s"]
        runtime = services_of(client).runtime
        renamed = ChartgameConfig(games=(GameConfig(game="eth-30s", name="Chart 30 s (ETH)"),))
        cmd = SetRules(
            command_id="rules-eth", product="chartgame", version=1, config=runtime.codec.encode(renamed)
        )
        app_loop = runtime._writer.get_loop()
        result = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(runtime.submit(cmd), app_loop))
        assert isinstance(result, Accepted), result
        assert [g["game"] for g in (await client.get("/api/v1/chartgame/games")).json()] == ["eth-30s"]
        gone = await client.get("/api/v1/chartgame/games/btc-30s/rounds")
        assert gone.status_code == 404 and gone.json()["code"] == "unknown_game"


async def test_embedded_spot_routes_follow_the_engines_rules(tmp_path: Path) -> None:
    """Pinned spot rules with one market (other fees): the platform's, Binance's and the admin
    routes list and accept that market only; the others get today's unknown-market errors."""
    async with embedded(tmp_path) as client:
        info = (await client.get("/api/v1/spot/exchangeInfo")).json()["markets"]
        assert [m["symbol"] for m in info] == ["BTC_USDC", "ETH_USDC", "SOL_USDC"]
        runtime = services_of(client).runtime
        btc = msgspec.structs.replace(SpotConfig().markets[0], maker_fee_bps=1, taker_fee_bps=2)
        cmd = SetRules(
            command_id="rules-spot-btc",
            product="spot",
            version=1,
            config=runtime.codec.encode(SpotConfig(markets=(btc,))),
        )
        app_loop = runtime._writer.get_loop()
        result = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(runtime.submit(cmd), app_loop))
        assert isinstance(result, Accepted), result
        info = (await client.get("/api/v1/spot/exchangeInfo")).json()["markets"]
        assert [(m["symbol"], m["makerFeeBps"], m["takerFeeBps"]) for m in info] == [("BTC_USDC", 1, 2)]
        gone = await client.get("/api/v1/spot/depth", params={"market": "ETH_USDC"})
        assert gone.status_code == 400
        assert gone.json()["code"] == "unknown_market"
        assert gone.json()["errors"] == [{"field": "market", "message": "unknown"}]
        assert (await client.get("/api/v1/spot/depth", params={"market": "BTC_USDC"})).status_code == 200
        tickers = (await client.get("/api/v1/spot/ticker/24hr")).json()
        assert [t["market"] for t in tickers] == ["BTC_USDC"]
        symbols = (await client.get("/api/v3/exchangeInfo")).json()["symbols"]
        assert [s["symbol"] for s in symbols] == ["BTCUSDC"]
        eth = await client.get("/api/v3/depth", params={"symbol": "ETHUSDC"})
        assert eth.status_code == 400 and eth.json() == {"code": -1121, "msg": "Invalid symbol."}
        assert (await client.get("/api/v3/depth", params={"symbol": "BTCUSDC"})).status_code == 200


@pytest.mark.redis
async def test_verify_round_looks_games_up_in_the_published_rules(tmp_path: Path) -> None:
    from cashmarkets.cli import chart_rules
    from cashmarkets.ops.settings import Settings

    stream = f"cashmarkets:test:rules:{uuid.uuid4().hex}"
    settings = Settings.from_env(data_dir=tmp_path, redis_url=REDIS_URL, redis_stream=stream)
    client: Any = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        with pytest.raises(typer.Exit) as nothing:
            await chart_rules(settings)  # nothing published: no guessing
        assert nothing.value.exit_code == 2
        renamed = ChartgameConfig(games=(GameConfig(game="eth-30s", name="Chart 30 s (ETH)"),))
        await client.hset(rules_key(stream), "chartgame", msgspec.msgpack.encode(renamed))
        assert [g.game for g in (await chart_rules(settings)).games] == ["eth-30s"]
    finally:
        await client.delete(rules_key(stream))
        await client.aclose()
