"""How the tool loop calls its dependencies: through a circuit breaker, within a timeout, with
retries charged to the dependency's shared budget.

A dependency is a model endpoint (`openai:gpt-4o@https://…`) or a tool (`tool:refund`). Its
breaker and retry budget live in the worker (`corral.reliability.dependencies_for`), shared by
every run it executes, so an outage seen by one run protects all the others. What happened to
each call is in the journal: an attempt's error and cause, a retry's time, the models passed
over before one answered, a breaker refusing a call (`CircuitOpen`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from corral.engine import AttemptFailure, RetryDecision, RetryRule
from corral.engine.timeouts import TimedOut, within
from corral.errors import CircuitOpen, ModelCallFailed, StepTimeout
from corral.reliability import BreakerConfig, Dependencies, RetryPolicy, dependencies_for
from corral.store import Store

if TYPE_CHECKING:
    from corral.engine import Clock

T = TypeVar("T")


def tool_dependency(tool: str) -> str:
    return f"tool:{tool}"


@dataclass(frozen=True)
class CallGuard:
    """The reliability settings of one agent, bound to the worker's dependencies."""

    dependencies: Dependencies
    clock: Clock
    breaker: BreakerConfig | None

    @classmethod
    def of(cls, store: Store, clock: Clock, breaker: BreakerConfig | None) -> CallGuard:
        return cls(dependencies_for(store, clock), clock, breaker)

    async def call(
        self, key: str, timeout: float | None, what: str, work: Callable[[], Awaitable[T]]
    ) -> T:
        """`work()` through `key`'s breaker, abandoned after `timeout` seconds."""
        dependency = self.dependencies.get(key, breaker=self.breaker)

        async def bounded() -> T:
            if timeout is None:
                return await work()
            try:
                return await within(self.clock, timeout, work())
            except TimedOut:
                raise StepTimeout(
                    f"{what} did not answer within {timeout:g}s and was abandoned",
                    dependency=key,
                    timeout=timeout,
                ) from None

        try:
            result = await dependency.call(bounded)
        except Exception:
            await self.dependencies.publish()  # for `corral breakers`: rate-limited, cheap
            raise
        await self.dependencies.publish()
        return result


@dataclass(frozen=True)
class DependencyRetries:
    """A retry rule that charges each retry to the shared budget of the dependency that failed
    (read from the error for a model step, whose fallbacks are several dependencies)."""

    policy: RetryPolicy
    dependencies: Dependencies
    key: str | None = None

    def decide(self, failure: AttemptFailure) -> RetryDecision:
        key = self.key or dependency_of(failure.error)
        if key is None:
            return self.policy.decide(failure)
        return self.policy.bound(self.dependencies.get(key)).decide(failure)


def dependency_of(error: BaseException) -> str | None:
    """The dependency a failure came from, as the errors of guarded calls name it."""
    if isinstance(error, ModelCallFailed):
        model, url = error.ids.get("model"), error.ids.get("url")
        return f"{model}@{url}" if url else str(model)
    if isinstance(error, CircuitOpen | StepTimeout):
        dependency = error.ids.get("dependency")
        return str(dependency) if dependency else None
    return None


def retry_rule(
    policy: RetryPolicy | None, store: Store, clock: Clock, key: str | None = None
) -> RetryRule | None:
    if policy is None:
        return None
    return DependencyRetries(policy, dependencies_for(store, clock), key)


def with_fallback_notes(response: Any, notes: list[str]) -> Any:
    return response.model_copy(update={"fallbacks": notes}) if notes else response


__all__ = ["CallGuard", "DependencyRetries", "dependency_of", "retry_rule", "tool_dependency"]
