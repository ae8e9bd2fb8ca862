"""Retry budgets: retries stay a fraction of calls over a sliding window (virtual time)."""

from __future__ import annotations

from typing import Any

import pytest

from corral.errors import UsageError
from corral.reliability import RetryBudget, RetryBudgetConfig
from corral.reliability.retry_budgets import SlidingWindow
from corral.testing import FakeClock


def spend_all(budget: RetryBudget) -> int:
    """Retries the budget allows right now (it is spent afterwards)."""
    spent = 0
    while budget.try_spend():
        spent += 1
        assert spent < 10_000, "the budget never ran out"
    return spent


def test_a_quiet_dependency_still_gets_min_retries(clock: FakeClock) -> None:
    budget = RetryBudget(clock=clock)  # 10 s window, ratio 0.2, at least 10 retries
    assert spend_all(budget) == 10
    assert not budget.try_spend()
    assert budget.retries == 10


def test_retries_are_a_fraction_of_calls(clock: FakeClock) -> None:
    budget = RetryBudget(RetryBudgetConfig(ratio=0.2, min_retries=0), clock=clock)
    for _ in range(100):
        budget.record_call()
    assert budget.allowance() == 20
    assert spend_all(budget) == 20
    for _ in range(5):
        budget.record_call()  # five more calls: one more retry
    assert spend_all(budget) == 1


def test_an_outage_adds_at_most_the_ratio_to_the_load(clock: FakeClock) -> None:
    """1,000 runs each fail and want to retry up to 3 times: without a budget that is 3,000
    extra calls; with one, retries stay near 20% of the calls made."""
    budget = RetryBudget(RetryBudgetConfig(ratio=0.2, min_retries=10), clock=clock)
    calls = retries = 0
    for _run in range(1000):
        budget.record_call()
        calls += 1
        for _retry in range(3):
            if not budget.try_spend():
                break
            budget.record_call()  # the retry is a call too
            calls += 1
            retries += 1
    assert retries <= 0.2 * calls + 1
    assert retries >= 0.2 * calls - 10  # and the budget is used, not starved


def test_the_window_slides(clock: FakeClock) -> None:
    budget = RetryBudget(RetryBudgetConfig(window=10, ratio=0.5, min_retries=1), clock=clock)
    for _ in range(10):
        budget.record_call()
    assert spend_all(budget) == 5
    clock.advance(9.9)
    assert not budget.try_spend()  # still within the window
    clock.advance(0.1)
    assert (budget.calls, budget.retries) == (0, 0)  # everything 10 s old has left
    assert spend_all(budget) == 1  # back to the floor: no calls in the window


def test_a_sliding_window_merges_events_into_buckets_and_expires_them() -> None:
    window = SlidingWindow(10.0)  # buckets of 0.01 s
    window.add(100.0, first=1)
    window.add(100.005, first=1, second=1)  # same bucket
    window.add(105.0, first=2)
    assert window.totals(105.0) == (4, 1)
    assert window.totals(109.99) == (4, 1)
    assert window.totals(110.0) == (2, 0)  # the first bucket is 10 s old
    assert window.totals(115.0) == (0, 0)
    window.add(115.0, second=3)
    window.clear()
    assert window.totals(115.0) == (0, 0)


def test_a_busy_window_keeps_a_bounded_number_of_buckets() -> None:
    window = SlidingWindow(1.0)
    for n in range(100_000):
        window.add(n * 0.0001, first=1)  # 10 s of calls, 10,000 a second
    assert window.totals(9.9999)[0] == pytest.approx(10_000, abs=20)
    assert len(window._buckets) <= 1001


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"window": 0}, "window"),
        ({"window": float("inf")}, "window"),
        ({"ratio": -0.1}, "ratio"),
        ({"ratio": float("nan")}, "ratio"),
        ({"min_retries": -1}, "min_retries"),
        ({"min_retries": 1.5}, "min_retries"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(UsageError, match=rf"RetryBudgetConfig\.{field} must be"):
        RetryBudgetConfig(**options)
