"""The projection's lag: the time since the engine was first seen at a seq the projection has not
reached; 0 when caught up."""

from __future__ import annotations

from cashmarkets.runtime.projection_health import SAMPLES_MAX, LagTracker

S = 1_000_000_000  # ns


def test_caught_up_is_zero_and_lag_counts_from_the_first_unreached_sample() -> None:
    lag = LagTracker()
    assert lag.observe(10, 10, 0) == 0
    assert lag.observe(15, 10, 1 * S) == 0  # first seen at 1 s
    assert lag.observe(20, 12, 3 * S) == 2000  # 15 (seen at 1 s) still not reached
    assert lag.observe(25, 15, 4 * S) == 1000  # 15 reached: 20 was first seen at 3 s
    assert lag.observe(25, 25, 5 * S) == 0


def test_an_engine_not_seen_keeps_the_known_samples_and_the_lag_grows() -> None:
    lag = LagTracker()
    assert lag.observe(5, 0, 0) == 0
    assert lag.observe(None, 0, 7 * S) == 7000
    assert lag.engine_seq == 5
    assert lag.observe(None, 5, 8 * S) == 0


def test_samples_are_bounded_and_the_oldest_still_counts() -> None:
    lag = LagTracker()
    for i in range(SAMPLES_MAX + 50):
        lag.observe(i + 1, 0, i * S)
    assert lag.observe(None, 0, (SAMPLES_MAX + 50) * S) == (SAMPLES_MAX + 50) * 1000
