"""The log budget: a burst, then one record per interval, drops counted."""

from __future__ import annotations

import pytest

from common.logbudget import LogBudget


def test_burst_then_one_per_interval_and_drops_are_reported() -> None:
    budget = LogBudget(burst=3, interval_s=60.0)
    assert [budget.allow(0.0) for _ in range(5)] == [0, 0, 0, None, None]
    assert budget.allow(30.0) is None  # half a token
    assert budget.allow(60.0) == 3  # one token back; three were dropped
    assert budget.allow(61.0) is None
    assert budget.allow(10_000.0) == 1
    # refills to the burst, no further
    assert [budget.allow(10_000.0) for _ in range(3)] == [0, 0, None]


def test_ten_thousand_records_in_a_minute_let_through_a_handful() -> None:
    budget = LogBudget(burst=5, interval_s=60.0)
    allowed = [budget.allow(i * 0.006) for i in range(10_000)]
    assert sum(a is not None for a in allowed) == 5
    assert budget.suppressed == 9_995


def test_time_going_backwards_gives_nothing_back() -> None:
    budget = LogBudget(burst=1, interval_s=10.0)
    assert budget.allow(100.0) == 0
    assert budget.allow(50.0) is None
    assert budget.allow(105.0) is None
    assert budget.allow(110.0) == 2


@pytest.mark.parametrize(("burst", "interval_s"), [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_bad_settings(burst: int, interval_s: float) -> None:
    with pytest.raises(ValueError):
        LogBudget(burst, interval_s)
