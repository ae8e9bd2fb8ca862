"""Workers: claim runnable runs under a lease, execute them, keep the leases alive.

A worker holds only the runs it is executing. A run that waits is suspended in the store and
dropped from memory, so paused runs cost a worker nothing. A lease that stops being renewed (the
worker died or froze) expires, and any worker claims the run with a new epoch and resumes it by
replay; the old worker's writes carry the old epoch and are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from corral.engine.clock import Clock
from corral.engine.context import RunContext
from corral.engine.execution import Execution, execute_run
from corral.engine.workflows import WorkflowRegistry
from corral.errors import CorralError, StoreUnavailable
from corral.store import RunRecord, Store

log = logging.getLogger("corral.worker")

MAX_BACKOFF = 5.0
"""The longest a worker waits between attempts to reach a database that is away."""


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(slots=True)
class WorkerStats:
    claimed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, execution: Execution) -> None:
        self.outcomes[execution.outcome] = self.outcomes.get(execution.outcome, 0) + 1


@dataclass(slots=True)
class _Active:
    task: asyncio.Task[None]
    epoch: int
    context: RunContext | None = None


class Worker:
    """Executes runs from a store. Create it with `Corral.worker(...)`; `await worker.run()`."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        workflows: WorkflowRegistry,
        wakeup: asyncio.Event,
        worker_id: str | None = None,
        concurrency: int = 16,
        lease_ttl: float = 30.0,
        heartbeat_interval: float | None = None,
        poll_interval: float = 0.5,
        on_new_run: Callable[[], None] = lambda: None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.worker_id = worker_id or new_worker_id()
        self.concurrency = concurrency
        self.lease_ttl = lease_ttl
        self.heartbeat_interval = heartbeat_interval or lease_ttl / 3
        self.poll_interval = poll_interval
        self.stats = WorkerStats()
        self._store = store
        self._clock = clock
        self._workflows = workflows
        self._wakeup = wakeup
        self._on_new_run = on_new_run
        self._active: dict[str, _Active] = {}
        self._stopping = False
        self._next_local_wake: float | None = None
        self._unreachable_since: float | None = None
        self._backoff = 0.0

    @property
    def active_runs(self) -> list[str]:
        return list(self._active)

    def stop(self) -> None:
        """Stop claiming; runs in flight stop at their next step and are handed back."""
        self._stopping = True
        for active in self._active.values():
            if active.context is not None:
                active.context.request_unload(self._clock.now())
        self._wakeup.set()

    def drop(self, run_id: str) -> None:
        """Stop executing `run_id` at once (it was cancelled or its lease is gone)."""
        active = self._active.get(run_id)
        if active is not None:
            active.task.cancel()

    async def run(self, *, until_idle: bool = False, grace: float = 30.0) -> WorkerStats:
        """Claim and execute runs until `stop()`, or (`until_idle`) until nothing is runnable."""
        heartbeat = asyncio.create_task(self._heartbeat(), name=f"heartbeat {self.worker_id}")
        try:
            while not self._stopping:
                # Cleared before each claim: whatever sets it later (a new run, a signal, a
                # finished run freeing a slot) wakes the wait below.
                self._wakeup.clear()
                free = self.concurrency - len(self._active)
                claimed: list[RunRecord] = []
                if free > 0:
                    try:
                        claimed = await self._store.claim_runs(
                            worker_id=self.worker_id,
                            limit=free,
                            now=self._clock.now(),
                            lease_ttl=self.lease_ttl,
                        )
                        self._reachable()
                    except StoreUnavailable as exc:
                        self._unreachable(exc)
                    for run in claimed:
                        self._launch(run)
                if len(claimed) == free and free > 0:
                    continue  # there may be more: claim again at once
                if until_idle and not self._active:
                    try:
                        if not await self._store.has_runnable(now=self._clock.now()):
                            break
                        continue
                    except StoreUnavailable as exc:
                        # The database is away (a restart): wait for it like any other worker.
                        self._unreachable(exc)
                await self._clock.wait(self._wakeup, self._poll_timeout())
        finally:
            self._stopping = True
            await self._wind_down(grace)
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
        return self.stats

    def _unreachable(self, exc: StoreUnavailable) -> None:
        """Say once that the database is away, and poll it less and less often (up to 5 s)."""
        if self._unreachable_since is None:
            self._unreachable_since = self._clock.now()
            log.warning("worker %s: %s; retrying until it is back", self.worker_id, exc)
        self._backoff = min(max(self._backoff * 2, self.poll_interval), MAX_BACKOFF)

    def _reachable(self) -> None:
        if self._unreachable_since is not None:
            away = self._clock.now() - self._unreachable_since
            log.warning("worker %s: the database is back after %.1fs", self.worker_id, away)
            self._unreachable_since = None
            self._backoff = 0.0

    def _poll_timeout(self) -> float:
        if self._unreachable_since is not None:
            return self._backoff
        timeout = self.poll_interval
        if self._next_local_wake is not None:
            timeout = min(timeout, max(self._next_local_wake - self._clock.now(), 0.0))
            self._next_local_wake = None
        return timeout

    def _launch(self, run: RunRecord) -> None:
        self.stats.claimed += 1
        superseded = self._active.get(run.run_id)
        if superseded is not None:
            # This worker claimed again a run whose lease it had let expire: the older
            # execution is fenced off already; stop it rather than let two run side by side.
            superseded.task.cancel()
        task = asyncio.create_task(self._execute(run), name=f"run {run.run_id}")
        active = _Active(task, run.lease_epoch)
        self._active[run.run_id] = active
        # A done-callback also runs for a task cancelled before it started. Only this claim's
        # own entry is removed: a later claim of the same run has an entry of its own.
        # Guarded by tests/durability/test_heartbeat_race.py.
        task.add_done_callback(lambda _: self._untrack(run.run_id, active))

    def _untrack(self, run_id: str, active: _Active) -> None:
        if self._active.get(run_id) is active:
            del self._active[run_id]
        self._wakeup.set()

    def _register_context(self, run_id: str, ctx: RunContext) -> None:
        active = self._active.get(run_id)
        if active is not None:
            active.context = ctx
            if self._stopping:
                ctx.request_unload(self._clock.now())

    async def _execute(self, run: RunRecord) -> None:
        try:
            execution = await execute_run(
                run,
                store=self._store,
                clock=self._clock,
                workflows=self._workflows,
                on_new_run=self._on_new_run,
                on_context=lambda ctx: self._register_context(run.run_id, ctx),
            )
            self.stats.count(execution)
            if execution.wake_at is not None:
                wake = execution.wake_at
                if self._next_local_wake is None or wake < self._next_local_wake:
                    self._next_local_wake = wake
        except asyncio.CancelledError:
            log.info("worker %s dropped run %s", self.worker_id, run.run_id)
        except CorralError as exc:
            # The store failed under the run: hand it back (if the store lets us) so that it is
            # resumed soon; otherwise its lease expires and it is resumed then.
            log.warning("worker %s: run %s stopped: %s", self.worker_id, run.run_id, exc)
            with contextlib.suppress(CorralError):
                now = self._clock.now()
                await self._store.release_run(
                    run.run_id, run.lease_epoch, wake_at=now + 1.0, now=now
                )
        except Exception:
            log.exception("worker %s: run %s crashed the executor", self.worker_id, run.run_id)

    async def _heartbeat(self) -> None:
        while True:
            await self._clock.sleep(self.heartbeat_interval)
            leases = [(run_id, active.epoch) for run_id, active in self._active.items()]
            if not leases:
                continue
            try:
                lost = await self._store.renew_leases(
                    leases, now=self._clock.now(), lease_ttl=self.lease_ttl
                )
            except CorralError as exc:
                log.warning("worker %s cannot renew leases: %s", self.worker_id, exc)
                continue
            asked = dict(leases)
            for run_id in lost:
                active = self._active.get(run_id)
                if active is None or active.epoch != asked[run_id]:
                    continue  # the run was claimed again meanwhile; that newer lease is not lost
                log.info("worker %s lost the lease on run %s", self.worker_id, run_id)
                self.drop(run_id)

    async def _wind_down(self, grace: float) -> None:
        if not self._active:
            return
        for active in self._active.values():
            if active.context is not None:
                active.context.request_unload(self._clock.now())
        tasks = [active.task for active in self._active.values()]
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
