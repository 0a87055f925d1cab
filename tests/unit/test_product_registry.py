"""The registration line: which products a deployment runs, and what each declares."""

from __future__ import annotations

import pytest

from cashmarkets.bootstrap import build_engine
from cashmarkets.products import registry


def test_the_built_in_list_is_the_default() -> None:
    assert registry.module_paths(None) == registry.PRODUCTS
    assert registry.module_paths(" ") == registry.PRODUCTS


def test_a_plus_adds_to_the_built_in_list_and_a_list_replaces_it() -> None:
    assert registry.module_paths("+tests.support.coinflip") == (*registry.PRODUCTS, "tests.support.coinflip")
    assert registry.module_paths("cashmarkets.products.spot") == ("cashmarkets.products.spot",)


def test_a_module_without_a_product_module_is_refused() -> None:
    with pytest.raises(SystemExit, match="no MODULE"):
        registry.load(("cashmarkets.products.module",))
    with pytest.raises(SystemExit, match="listed twice"):
        registry.load(("cashmarkets.products.spot", "cashmarkets.products.spot"))


def test_the_engine_runs_every_registered_product(monkeypatch: pytest.MonkeyPatch) -> None:
    assert list(build_engine().products) == ["ledger", "leverage", "spot", "chartgame"]
    monkeypatch.setenv(registry.ENV, "+tests.support.coinflip")
    assert list(build_engine().products) == ["ledger", "leverage", "spot", "chartgame", "coinflip"]


def test_every_product_declares_distinct_socket_commands_and_known_statuses() -> None:
    names = [name for module in registry.products() for name in module.socket_commands()]
    assert len(names) == len(set(names)) and "leverage.open" in names
    for module in registry.products():
        assert set(module.http_statuses.values()) <= {400, 404, 409}, module.name
