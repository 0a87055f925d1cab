"""The development market maker keeps every spot market quoted and trading (embedded server)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cashmarkets.core.products.spot import SpotProduct
from cashmarkets.runtime.marketmaker import MAKER, TAKER
from tests.integration.api_helpers import embedded, services_of


async def test_the_bot_quotes_every_market_and_trades(tmp_path: Path) -> None:
    async with embedded(
        tmp_path, spot_bot=True, spot_bot_interval_s=0.05, price_source="synthetic"
    ) as client:
        runtime = services_of(client).runtime
        spot: SpotProduct = runtime.engine.products["spot"]
        for _ in range(200):
            await asyncio.sleep(0.05)
            traded = all(book.next_trade_id > 3 for book in spot.books.values())
            quoted = all(book.bids.keys and book.asks.keys for book in spot.books.values())
            if traded and quoted:
                break
        assert traded and quoted
        for symbol in spot.books:
            depth = (await client.get("/api/v1/spot/depth", params={"market": symbol, "limit": 5})).json()
            assert len(depth["bids"]) >= 3 and len(depth["asks"]) >= 3  # the taker may have taken one
            assert depth["bids"][0][0] < depth["asks"][0][0]
        # Only the bots' money moved; the books and the ledger agree.
        spot.check_invariants()
        runtime.engine.ledger.check_invariants()
        owners = {o.owner for o in spot.orders.values()}
        assert owners <= {MAKER, TAKER}
