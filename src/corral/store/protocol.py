"""The one store protocol every backend implements and the contract suite checks.

Rules every implementation keeps:

- Every write on behalf of a running run carries the lease `epoch` it was claimed with. A write
  whose epoch is not the run's current one is refused with `LeaseLost` and changes nothing.
- Journal writes from concurrent runs are group-committed: one transaction for many appends, each
  caller awaiting the commit of the batch holding its write.
- Time is passed in (`now`), never read by the store, so tests can drive it with a fake clock.
- Payloads (`input`, `result`, `error`, `detail`) are JSON text the store keeps as it is given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from corral.store.migrations import Migration, SchemaStatus
from corral.store.records import (
    NewRun,
    ReconcileOutcome,
    RunRecord,
    RunStatus,
    SignalRecord,
    StepRecord,
    StepWrite,
)
from corral.store.scripts import ScriptFactory

T = TypeVar("T")


class Store(Protocol):
    url: str

    async def open(self) -> None:
        """Connect, create the schema of an empty database, refuse an unknown or newer one."""

    async def close(self) -> None: ...

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call `callback` when another process may have made a run runnable (best effort:
        workers poll as well)."""

    async def schema_status(self) -> SchemaStatus:
        """The database's schema version against this Corral's; works on any version."""

    async def migrate(self) -> list[Migration]:
        """Apply the pending migrations; return them. Refuses a database newer than Corral."""

    # -- runs ----------------------------------------------------------------------------------

    async def create_run(self, new: NewRun) -> tuple[RunRecord, bool]:
        """Create a pending run; with an idempotency key already used, return that run and False."""

    async def get_run(self, run_id: str) -> RunRecord | None: ...

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow: str | None = None,
        parent_run_id: str | None = None,
        limit: int = 100,
        tenant: str | None = None,
    ) -> list[RunRecord]:
        """Runs, newest first (of one tenant when `tenant` is given, else of every tenant)."""

    async def load_journal(self, run_id: str) -> list[StepRecord]:
        """The run's journal in step order."""

    async def list_signals(self, run_id: str) -> list[SignalRecord]: ...

    async def count_runs(self) -> dict[RunStatus, int]: ...

    # -- workers -------------------------------------------------------------------------------

    async def claim_runs(
        self, *, worker_id: str, limit: int, now: float, lease_ttl: float
    ) -> list[RunRecord]:
        """Take up to `limit` runnable runs, each with a new lease epoch.

        Runnable: pending; waiting with `wake_at <= now`; running with an expired lease.
        """

    async def renew_leases(
        self, leases: Sequence[tuple[str, int]], *, now: float, lease_ttl: float
    ) -> list[str]:
        """Extend the leases `(run_id, epoch)`; return the run ids whose lease is no longer ours."""

    async def has_runnable(self, *, now: float) -> bool: ...

    async def next_wake_at(self) -> float | None:
        """The earliest future time at which a waiting run or an expiring lease becomes runnable."""

    # -- journal (fenced by the lease epoch) ---------------------------------------------------

    def submit_step(self, write: StepWrite) -> asyncio.Future[None]:
        """Queue a journal write for the next group commit; the future resolves at its commit."""

    async def write_step(self, write: StepWrite) -> None:
        """Journal a step and wait until it is committed."""

    async def start_child(self, write: StepWrite, child: NewRun) -> None:
        """Create the child run and journal the parent's step in one transaction (idempotent)."""

    async def take_signal(self, write: StepWrite, *, signal_name: str) -> SignalRecord | None:
        """Consume the oldest unconsumed signal `signal_name` and journal `write` with its payload.

        Returns None, writing nothing, when no such signal is waiting.
        """

    async def suspend_run(
        self, run_id: str, epoch: int, *, wake_at: float | None, seen_wake_seq: int, now: float
    ) -> None:
        """Park the run as waiting until `wake_at` (None: until an event) and drop its lease.

        An event that arrived since the run was claimed (its `wake_seq` moved past
        `seen_wake_seq`) makes it runnable at once, so no signal is missed.
        """

    async def finish_run(
        self,
        run_id: str,
        epoch: int,
        *,
        status: RunStatus,
        result: str | None,
        error: str | None,
        now: float,
    ) -> None:
        """Record the outcome once and wake the parent run, if any."""

    async def release_run(self, run_id: str, epoch: int, *, wake_at: float, now: float) -> None:
        """Give a claimed run back untouched, to be claimed again from `wake_at`."""

    # -- from outside a run --------------------------------------------------------------------

    async def send_signal(
        self,
        run_id: str,
        name: str,
        payload: str,
        *,
        now: float,
        guard: ScriptFactory[Any] | None = None,
    ) -> SignalRecord:
        """Queue a signal for a run that has not finished and wake it if it waits.

        With `guard`, the script runs first in the same transaction: if it raises, nothing is
        written and the error is raised (an approval decided once, with the signal that
        resumes its run, or not at all)."""

    async def reconcile_run(
        self,
        run_id: str,
        *,
        outcome: ReconcileOutcome,
        result: str | None,
        error: str | None,
        now: float,
    ) -> StepRecord:
        """Settle the in-flight at-most-once step of a run in `needs_reconciliation` and make the
        run pending again. `retry` forgets the attempt (the step runs again, same key);
        `succeeded` records `result`; `failed` records `error`. Returns the settled step."""

    async def cancel_run(self, run_id: str, *, now: float) -> RunRecord:
        """Cancel a run and its unfinished descendants; fence off any worker executing them."""

    # -- transaction scripts -------------------------------------------------------------------

    async def run_script(self, factory: ScriptFactory[T]) -> T:
        """Run a transaction script (`corral.store.scripts`) in the writer's transaction, under a
        savepoint: all of its statements commit together, or none if it raises."""

    async def read_script(self, factory: ScriptFactory[T]) -> T:
        """Run a script that only reads, on a reader connection (a consistent snapshot)."""
