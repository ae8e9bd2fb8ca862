"""`corral.reliability`'s public names are a promise: changing them is a decision, made here."""

import corral.reliability

EXPECTED = {
    "NO_RETRY",
    "BreakerConfig",
    "BreakerSnapshot",
    "BreakerState",
    "CircuitBreaker",
    "Dependencies",
    "Dependency",
    "Permit",
    "RetryBudget",
    "RetryBudgetConfig",
    "RetryPolicy",
    "Transient",
    "Transition",
    "dependencies_for",
    "transient",
}


def test_reliability_all_is_pinned() -> None:
    assert set(corral.reliability.__all__) == EXPECTED
    assert all(hasattr(corral.reliability, name) for name in EXPECTED)
