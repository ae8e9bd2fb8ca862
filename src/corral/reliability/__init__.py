"""Reliability: retry policies, retry budgets and circuit breakers for the calls runs make.

The engine carries retries out durably (`corral.engine.retries`); this package decides them:

- `transient(error)` says which failures are passing (`classify`);
- `RetryPolicy` retries those with capped exponential backoff and jitter, within bounds per
  step and per run (`retry_policy`);
- `Dependencies` / `Dependency` give each thing runs call a `CircuitBreaker` (`breakers`) and a
  `RetryBudget` (`retry_budgets`) shared by every run of a worker, published to the store for
  `corral breakers` (`breaker_store`).
"""

from corral.reliability.breakers import (
    BreakerConfig,
    BreakerSnapshot,
    BreakerState,
    CircuitBreaker,
    Permit,
    Transition,
)
from corral.reliability.classify import Transient, transient
from corral.reliability.dependencies import Dependencies, Dependency, dependencies_for
from corral.reliability.retry_budgets import RetryBudget, RetryBudgetConfig
from corral.reliability.retry_policy import NO_RETRY, RetryPolicy

__all__ = [
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
]
