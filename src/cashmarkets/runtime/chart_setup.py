"""What the chart game's round schedulers run with, from the settings: the beacon source, the
chain adapter and the seed-chain store (used by `serve`, `chartgame` and the API's round
verification documents)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from cashmarkets.onchain.adapter import ChainAdapter
from cashmarkets.ops.local_secrets import local_secret
from cashmarkets.ops.settings import Settings


def chart_schedulers(settings: Settings, runtime: Any, fence: Any = None) -> list[Any]:
    """One round scheduler per chart game, with the configured beacon source (and the lease term
    they act under, `fence`)."""
    from cashmarkets.runtime.chart_scheduler import ChainStore, ChartScheduler

    source = beacon_source(settings)
    chains = ChainStore(Path(settings.data_dir) / "chains")
    games = runtime.engine.products["chartgame"].config.games
    adapter = chain_adapter(settings)
    return [ChartScheduler(runtime, g, source, chains, adapter=adapter, fence=fence) for g in games]


def beacon_source(settings: Settings) -> Any:
    """The configured beacon source: drand's quicknet over HTTP, or a local beacon."""
    from cashmarkets.beacons.sources import DrandHttp, LocalSource

    if settings.beacon_source == "drand":
        return DrandHttp([u.strip() for u in settings.drand_relays.split(",") if u.strip()])
    if settings.beacon_source == "local":
        return LocalSource(local_beacon_secret(settings))
    raise SystemExit("CASHMARKETS_BEACON_SOURCE is local or drand")


def beacon_public_key(settings: Settings) -> bytes:
    """The key the configured beacons verify with (quicknet's, or the local beacon's)."""
    from cashmarkets.beacons.sources import LocalSource
    from cashmarkets.fairness import drand

    if settings.beacon_source == "local":
        return LocalSource(local_beacon_secret(settings)).public_key
    return bytes.fromhex(drand.QUICKNET_PUBLIC_KEY)


def chain_adapter(settings: Settings) -> ChainAdapter | None:
    """The configured chain adapter of the chart game: None for "none"."""
    if settings.chain_adapter == "none":
        return None
    if settings.chain_adapter != "aptos":
        raise SystemExit("CASHMARKETS_CHAIN_ADAPTER is none or aptos")
    if not settings.aptos_node_url or not settings.aptos_private_key:
        raise SystemExit(
            "the aptos adapter needs CASHMARKETS_APTOS_NODE_URL and CASHMARKETS_APTOS_PRIVATE_KEY"
        )
    from cashmarkets.onchain.aptos import AptosAdapter

    try:
        return AptosAdapter(
            settings.aptos_node_url, settings.aptos_private_key, settings.aptos_module_address
        )
    except ValueError as exc:
        raise SystemExit(
            "CASHMARKETS_APTOS_PRIVATE_KEY must be an Ed25519 key (64 hex digits or AIP-80) and "
            f"CASHMARKETS_APTOS_MODULE_ADDRESS an account address: {exc}"
        ) from None


def local_beacon_secret(settings: Settings) -> bytes:
    """The local beacon's key, generated once into the data directory."""
    text = local_secret(
        settings, settings.beacon_key, "beacon.key", "CASHMARKETS_BEACON_KEY", lambda: secrets.token_hex(32)
    )
    return bytes.fromhex(text)
