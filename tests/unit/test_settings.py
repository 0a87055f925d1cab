"""Configuration from CASHMARKETS_* variables: types converted, overrides win, bad values refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from cashmarkets.api.app import chain_adapter
from cashmarkets.ops.settings import Settings


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.data_dir == Path("./data") and s.port == 8000 and s.redis_url is None
    assert s.faucet_enabled is True and s.distributed is False


def test_environment_values_are_converted() -> None:
    s = Settings.from_env(
        {
            "CASHMARKETS_DATA_DIR": "/tmp/x",
            "CASHMARKETS_PORT": "9001",
            "CASHMARKETS_SNAPSHOT_INTERVAL_S": "2.5",
            "CASHMARKETS_TRIM_LOG": "true",
            "CASHMARKETS_FAUCET": "false",
        }
    )
    assert s.data_dir == Path("/tmp/x") and s.port == 9001 and s.snapshot_interval_s == 2.5
    assert s.trim_log is True and s.faucet_enabled is False
    assert s.journal_path == Path("/tmp/x/journal.db")


def test_overrides_win_and_none_keeps_the_environment() -> None:
    env = {"CASHMARKETS_PORT": "9001", "CASHMARKETS_HOST": "0.0.0.0"}
    s = Settings.from_env(env, port=7000, host=None, data_dir="/srv/cm")
    assert (s.port, s.host, s.data_dir) == (7000, "0.0.0.0", Path("/srv/cm"))


def test_distributed_mode_turns_the_faucet_off_unless_asked() -> None:
    env = {"CASHMARKETS_DATABASE_URL": "postgresql://db/x", "CASHMARKETS_REDIS_URL": "redis://r"}
    assert Settings.from_env(env).faucet_enabled is False
    assert Settings.from_env({**env, "CASHMARKETS_FAUCET": "true"}).faucet_enabled is True


@pytest.mark.parametrize(
    ("name", "value"), [("CASHMARKETS_PORT", "eighty"), ("CASHMARKETS_TRIM_LOG", "maybe")]
)
def test_bad_values_stop_with_a_clear_message(name: str, value: str) -> None:
    with pytest.raises(SystemExit, match="bad configuration"):
        Settings.from_env({name: value})


def test_the_chain_adapter_is_none_by_default_and_refuses_a_bad_aptos_setup() -> None:
    assert chain_adapter(Settings.from_env({})) is None
    with pytest.raises(SystemExit, match="none or aptos"):
        chain_adapter(Settings.from_env({"CASHMARKETS_CHAIN_ADAPTER": "solana"}))
    with pytest.raises(SystemExit, match="needs CASHMARKETS_APTOS_NODE_URL"):
        chain_adapter(Settings.from_env({"CASHMARKETS_CHAIN_ADAPTER": "aptos"}))
    bad_key = {
        "CASHMARKETS_CHAIN_ADAPTER": "aptos",
        "CASHMARKETS_APTOS_NODE_URL": "http://127.0.0.1:1/v1",
        "CASHMARKETS_APTOS_PRIVATE_KEY": "0x1234",
    }
    with pytest.raises(SystemExit, match="must be an Ed25519 key"):
        chain_adapter(Settings.from_env(bad_key))
