"""`cashmarkets bench spot` at a small size: every engine runs the same stream and ends with the
same resting orders, and the reported ratios are the stated arithmetic. (No timing is asserted.)"""

from __future__ import annotations

from cashmarkets.benchmarks import spot


def test_every_engine_ends_with_the_same_book() -> None:
    out = spot.run(commands=3_000, resting=300, seed=5)
    workload = out["workload"]
    assert workload["commands"] == 3_000 == sum(workload["counted"].values())
    assert workload["variant_commands"] == 3_000 + workload["counted"]["move"]  # a move = cancel + new
    assert set(out["engines"]) == spot.AMENDS
    assert set(out["engines_cancel_new"]) == set(spot.ENGINES)
    runs = [*out["engines"].values(), *out["engines_cancel_new"].values()]
    assert all("error" not in r for r in runs), runs
    resting = {r["resting_orders"] for r in runs}
    assert len(resting) == 1 and resting.pop() > 100, runs
    for r in out["engines"].values():
        assert r["commands"] == 3_000 and r["workload_ops_per_s"] > 0
    for r in out["engines_cancel_new"].values():
        assert r["commands"] == workload["variant_commands"]
        # the same 3,000 operations took more commands: fewer operations than commands per second
        assert r["workload_ops_per_s"] < r["commands_per_s"]
    for key in (
        "ratio_to_best_pure_python_peer_same_commands",
        "ratio_to_best_pure_python_peer_same_workload",
        "ratio_to_liquibook",
    ):
        assert out[key] > 0, key
    assert out["commands_per_s"] == out["engines"]["cashmarkets"]["commands_per_s"]


def test_the_ratios_are_the_stated_arithmetic() -> None:
    result = {
        "engines": {
            "cashmarkets": {"commands_per_s": 400, "workload_ops_per_s": 400},
            "liquibook": {"commands_per_s": 1_000, "workload_ops_per_s": 1_000},
        },
        "engines_cancel_new": {
            "cashmarkets": {"commands_per_s": 330, "workload_ops_per_s": 180},
            "lobby": {"commands_per_s": 300, "workload_ops_per_s": 160},
            "pyorderbook": {"commands_per_s": 250, "workload_ops_per_s": 140},
        },
    }
    assert spot.ratios(result) == {
        "ratio_to_best_pure_python_peer_same_commands": 1.1,  # 330 / 300
        "ratio_to_best_pure_python_peer_same_workload": 2.5,  # 400 / 160
        "ratio_to_liquibook": 0.4,
    }
    # A peer that is not installed is left out, not counted as zero.
    result["engines_cancel_new"]["lobby"] = {"error": "not installed: lobby"}
    assert spot.ratios(result)["ratio_to_best_pure_python_peer_same_workload"] == round(400 / 140, 2)
