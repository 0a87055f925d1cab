"""Configuration from CASHMARKETS_* variables: types converted, overrides win, bad values refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from cashmarkets.ops.settings import Settings
from cashmarkets.runtime.chart_setup import chain_adapter


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


def test_session_cookie_and_origin_defaults_follow_the_public_url() -> None:
    s = Settings.from_env({})
    assert (s.cookie_secure, s.secure_cookies, s.cookie_samesite) == (None, False, "lax")
    assert s.origins == frozenset({"http://127.0.0.1:8000"})
    https = Settings.from_env({"CASHMARKETS_PUBLIC_URL": "https://Cash.Example.com:443/app/"})
    assert https.secure_cookies is True
    assert https.origins == frozenset({"https://cash.example.com"})
    assert (
        Settings.from_env(
            {"CASHMARKETS_PUBLIC_URL": "https://c.example", "CASHMARKETS_COOKIE_SECURE": "false"}
        ).secure_cookies
        is False
    )
    assert Settings.from_env({"CASHMARKETS_COOKIE_SECURE": "true"}).secure_cookies is True
    assert Settings.from_env({"CASHMARKETS_COOKIE_SAMESITE": "Strict"}).cookie_samesite == "strict"


def test_allowed_origins_are_normalized_and_replace_the_default() -> None:
    s = Settings.from_env(
        {
            "CASHMARKETS_PUBLIC_URL": "https://cash.example.com",
            "CASHMARKETS_ALLOWED_ORIGINS": "HTTPS://App.Example.com:443/, http://localhost:3000,,http://[::1]:80",
        }
    )
    assert s.origins == frozenset({"https://app.example.com", "http://localhost:3000", "http://[::1]"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CASHMARKETS_COOKIE_SAMESITE": "none"}, "CASHMARKETS_COOKIE_SAMESITE must be lax or strict"),
        ({"CASHMARKETS_ALLOWED_ORIGINS": "https://a.example/app"}, "CASHMARKETS_ALLOWED_ORIGINS"),
        ({"CASHMARKETS_ALLOWED_ORIGINS": "*"}, "CASHMARKETS_ALLOWED_ORIGINS"),
        ({"CASHMARKETS_ALLOWED_ORIGINS": "ftp://a.example"}, "CASHMARKETS_ALLOWED_ORIGINS"),
        ({"CASHMARKETS_ALLOWED_ORIGINS": "https://a.example?x=1"}, "CASHMARKETS_ALLOWED_ORIGINS"),
        ({"CASHMARKETS_ALLOWED_ORIGINS": " , "}, "no origin given"),
        ({"CASHMARKETS_PUBLIC_URL": "cash.example.com"}, "CASHMARKETS_PUBLIC_URL"),
    ],
)
def test_bad_cookie_and_origin_settings_stop_at_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        Settings.from_env(env)
