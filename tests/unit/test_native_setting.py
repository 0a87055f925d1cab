"""CASHMARKETS_NATIVE: the C hot paths can be turned off, and then every engine runs the Python
paths (`make pytest-pure` runs the spot and engine suites that way)."""

from __future__ import annotations

from cashmarkets.bootstrap import build_engine
from cashmarkets.core import native
from cashmarkets.core.engine import Engine
from cashmarkets.core.products.spot import SpotProduct
from cashmarkets.ops.settings import Settings, native_from_env


def test_the_setting_is_on_by_default_and_0_or_false_turns_it_off() -> None:
    assert Settings.from_env({}).native is True
    assert Settings.from_env({"CASHMARKETS_NATIVE": "0"}).native is False
    assert Settings.from_env({"CASHMARKETS_NATIVE": "false"}).native is False
    assert Settings.from_env({"CASHMARKETS_NATIVE": "1"}).native is True
    # Read alone, an unrelated bad variable does not get in the way.
    assert native_from_env({"CASHMARKETS_NATIVE": "0", "CASHMARKETS_COOKIE_SAMESITE": "bad"}) is False
    assert native_from_env({"CASHMARKETS_COOKIE_SAMESITE": "bad"}) is True


def test_the_processes_engine_follows_the_flag() -> None:
    off = build_engine(native=False)
    assert off.native is False
    assert off.products["spot"].fast is None
    on = build_engine(native=True)
    assert on.native is native.available()


def test_this_run_honours_CASHMARKETS_NATIVE() -> None:
    """Under CASHMARKETS_NATIVE=0 (tests/conftest.py), an engine built with the default config, as
    most tests build theirs, runs the Python apply and spot handlers; otherwise the C ones."""
    wanted = native_from_env()
    engine = Engine(products=[SpotProduct.factory()])
    assert engine.native is (wanted and native.available())
    assert build_engine().native is engine.native
    if not wanted:
        assert not native.available()
        assert engine.products["spot"].fast is None
        assert engine.apply.__func__ is Engine.apply  # type: ignore[attr-defined]
