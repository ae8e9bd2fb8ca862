"""Dependencies: what a worker process calls out to, each with its breaker and retry budget.

A `Dependency` is a named thing runs call (a model provider, an MCP server, an HTTP API) with
the two pieces of shared state that protect it: a `CircuitBreaker` (stop calling it while it
fails) and a `RetryBudget` (retries to it stay a small fraction of calls). `Dependency.call`
wraps one call with both.

`Dependencies` is the registry of one worker process. It must be shared by every run of the
worker, or the protection is per run and worth little; `dependencies_for(store, clock)` gives the
one registry of a store object (a worker has one store). It publishes each breaker's changes of
state to the store (`corral.reliability.breaker_store`), in the background and in order, and
`publish()` writes every breaker's counts now and then, so `corral breakers` can show them.

Usage from the agents layer (a model call, say):

```python
deps = dependencies_for(corral.store, corral.clock)
openai = deps.get("openai:gpt-4o", breaker=BreakerConfig(open_for=60))

async def call_model(request: ModelRequest) -> ModelResponse:
    return await openai.call(lambda: client.complete(request), timeout=120)

answer = await ctx.step(call_model, request, retry=RetryPolicy(max_attempts=4).bound(openai))
await deps.publish()  # cheap: writes at most every few seconds
```

A worker should `await deps.flush()` before it closes its store, so the last transitions are
written.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import secrets
import socket
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from corral.engine.clock import Clock
from corral.engine.timeouts import TimedOut, within
from corral.errors import CircuitOpen, StepTimeout
from corral.reliability import breaker_store
from corral.reliability.breakers import (
    BreakerConfig,
    BreakerSnapshot,
    CircuitBreaker,
    Transition,
)
from corral.reliability.classify import transient
from corral.reliability.retry_budgets import RetryBudget, RetryBudgetConfig
from corral.store import Store
from corral.store.scripts import ScriptFactory

T = TypeVar("T")

log = logging.getLogger("corral.reliability")

PUBLISH_EVERY = 5.0
"""Seconds between two writes of every breaker's counts by `Dependencies.publish()`."""


class Dependency:
    """A dependency runs call, with the breaker and retry budget every run shares.

    Attributes:
        key: Its name, e.g. `openai:gpt-4o`, `mcp:github`.
        breaker: Stops calls while the dependency fails.
        retry_budget: Bounds the retries of every run to it together (`RetryPolicy.bound`).
    """

    def __init__(
        self, key: str, *, breaker: CircuitBreaker, retry_budget: RetryBudget, clock: Clock
    ) -> None:
        self.key = key
        self.breaker = breaker
        self.retry_budget = retry_budget
        self._clock = clock

    async def call(self, work: Callable[[], Awaitable[T]], *, timeout: float | None = None) -> T:
        """Make one call to the dependency: `await work()`, guarded by its breaker.

        The outcome is counted by the breaker: a transient error (`classify.transient`: a 5xx,
        a timeout, a lost connection) is a failure of the dependency; any other error is the
        caller's problem (bad arguments, a 400) and counts as the dependency answering. A
        cancelled call, or a `CircuitOpen` from another breaker inside `work`, counts as
        neither. The error, if any, is raised as it was.

        Args:
            work: Makes the call; called once.
            timeout: Seconds (on the registry's clock) before the call is abandoned with
                `StepTimeout`, which counts as a failure. A timeout imposed from outside (a
                step's) cancels the call, which the breaker cannot count: give the dependency
                its own timeout, shorter than the step's, so that a hanging dependency opens
                its breaker.

        Raises:
            CircuitOpen: The breaker refuses calls now (`work` is not called).
            StepTimeout: `timeout` passed.
        """
        permit = self.breaker.before_call()
        self.retry_budget.record_call()
        try:
            if timeout is None:
                value = await work()
            else:
                value = await within(self._clock, timeout, work())
        except TimedOut as exc:
            self.breaker.record(permit, failed=True)
            raise StepTimeout(
                f"{self.key} did not answer within {exc.seconds:g}s and the call was abandoned",
                dependency=self.key,
                timeout=exc.seconds,
            ) from None
        except CircuitOpen:
            self.breaker.release(permit)
            raise
        except Exception as exc:
            self.breaker.record(permit, failed=transient(exc) is not None)
            raise
        except BaseException:
            self.breaker.release(permit)
            raise
        self.breaker.record(permit, failed=False)
        return value


@dataclass(frozen=True, slots=True)
class _Write:
    """A pending write to the store: a transition (with the breaker's row), or rows alone."""

    transition: Transition | None
    snapshots: tuple[BreakerSnapshot, ...]
    at: float


class Dependencies:
    """The dependencies of one worker process, by key (see `dependencies_for`).

    Args:
        clock: The clock breakers and budgets run on.
        store: Where breakers are published; None keeps them in memory only. Held weakly: a
            registry never keeps a store alive.
        worker: This process's id in the published rows (default: `host:pid:random`).
        publish_every: Seconds between two writes of `publish()` (transitions are always
            written).
    """

    def __init__(
        self,
        *,
        clock: Clock,
        store: Store | None = None,
        worker: str | None = None,
        publish_every: float = PUBLISH_EVERY,
    ) -> None:
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.publish_every = publish_every
        self._clock = clock
        self._store = weakref.ref(store) if store is not None else None
        self._dependencies: dict[str, Dependency] = {}
        self._pending: collections.deque[_Write] = collections.deque()
        # Fire-and-forget writers: kept here so they are not garbage-collected mid-write.
        self._tasks: set[asyncio.Task[None]] = set()
        self._drainer: asyncio.Task[None] | None = None
        self._published_at: float | None = None

    def get(
        self,
        key: str,
        *,
        breaker: BreakerConfig | None = None,
        retry_budget: RetryBudgetConfig | None = None,
    ) -> Dependency:
        """The dependency `key`, made on first use with these configs (later ones are ignored:
        the first caller's configuration wins for the life of the process)."""
        found = self._dependencies.get(key)
        if found is not None:
            return found
        made = Dependency(
            key,
            breaker=CircuitBreaker(
                key, breaker, clock=self._clock, on_transition=self._on_transition
            ),
            retry_budget=RetryBudget(retry_budget, clock=self._clock),
            clock=self._clock,
        )
        self._dependencies[key] = made
        return made

    def snapshots(self) -> list[BreakerSnapshot]:
        """Every breaker as it is now, by key."""
        return [self._dependencies[key].breaker.snapshot() for key in sorted(self._dependencies)]

    async def publish(self, *, force: bool = False) -> bool:
        """Write every breaker's state and counts, unless that was done less than
        `publish_every` seconds ago (`force` writes anyway). Returns whether it wrote.

        Cheap to call often (after every call to a dependency, say): it writes rarely.
        """
        now = self._clock.now()
        if self._store is None:
            return False
        recent = self._published_at is not None and now - self._published_at < self.publish_every
        if recent and not force:
            return False
        self._published_at = now
        self._pending.append(_Write(None, tuple(self.snapshots()), now))
        self._kick()
        await self.flush()
        return True

    async def flush(self) -> None:
        """Wait until every write queued so far has been made (or has failed and been logged)."""
        self._kick()
        while self._tasks:
            await asyncio.gather(*self._tasks)

    # -- writing ---------------------------------------------------------------------------------

    def _on_transition(self, transition: Transition) -> None:
        if self._store is None:
            return
        snapshot = self._dependencies[transition.dependency].breaker.snapshot()
        self._pending.append(_Write(transition, (snapshot,), transition.at))
        self._kick()

    def _kick(self) -> None:
        """Start the writer, unless it runs already (one writer keeps the writes in order)."""
        if not self._pending or (self._drainer is not None and not self._drainer.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a snapshot taken from sync code): the next flush writes it
        task = loop.create_task(self._drain())
        self._drainer = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        while self._pending:
            write = self._pending.popleft()
            store = self._store() if self._store is not None else None
            if store is None:
                self._pending.clear()  # the store is gone, and so are its readers
                return
            try:
                await store.run_script(self._factory(write))
            except Exception:
                # Publishing is for people looking on: a failed write must not fail a run.
                log.warning(
                    "could not publish the breaker state of worker %s", self.worker, exc_info=True
                )

    def _factory(self, write: _Write) -> ScriptFactory[None]:
        """The script making `write` (a factory: the store may run it again on a retry)."""
        worker, transition = self.worker, write.transition
        if transition is not None:
            return lambda dialect: breaker_store.record_transition(
                worker, transition, write.snapshots[0], now=write.at
            )
        return lambda dialect: breaker_store.save_breakers(worker, write.snapshots, now=write.at)


_REGISTRIES: weakref.WeakKeyDictionary[Store, Dependencies] = weakref.WeakKeyDictionary()


def dependencies_for(store: Store, clock: Clock) -> Dependencies:
    """The registry of dependencies of `store`: one per store object, so every run of a worker
    (which has one store) shares its breakers and retry budgets. The first call makes it, with
    `clock`; later calls return it whatever clock they pass."""
    found = _REGISTRIES.get(store)
    if found is None:
        found = Dependencies(clock=clock, store=store)
        _REGISTRIES[store] = found
    return found


__all__ = ["PUBLISH_EVERY", "Dependencies", "Dependency", "dependencies_for"]
