"""`Corral`: the explicit entry point. It owns a store, a clock and the workflows it knows."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Generic, TypeVar, overload

from corral.engine import payloads
from corral.engine.clock import Clock, SystemClock
from corral.engine.context import CANCEL_SIGNAL
from corral.engine.worker import Worker, WorkerStats
from corral.engine.workflows import (
    ProvidesWorkflows,
    Runnable,
    Workflow,
    WorkflowFunction,
    WorkflowRegistry,
    workflow,
)
from corral.errors import RunFailed, RunNotFound, UsageError
from corral.store import (
    DEFAULT_DATABASE_URL,
    NewRun,
    ReconcileOutcome,
    RunRecord,
    RunStatus,
    SignalRecord,
    StepRecord,
    Store,
    open_store,
)
from corral.store.records import DEFAULT_TENANT
from corral.store.scripts import ScriptFactory

I = TypeVar("I")
O = TypeVar("O")


class Corral:
    """Durable workflows on a store.

    ```python
    corral = Corral("sqlite:///.corral/corral.db")

    @corral.workflow
    async def greet(ctx: RunContext, name: str) -> str:
        return await ctx.step(make_greeting, name)

    async with corral:
        handle = await corral.start(greet, "Ada")
        await corral.run_until_idle()
        print(await handle.wait_for_result())
    ```
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        store: Store | None = None,
        clock: Clock | None = None,
        workflows: Iterable[Workflow[Any, Any]] = (),
        lease_ttl: float = 30.0,
        heartbeat_interval: float | None = None,
        poll_interval: float = 0.5,
        tenant: str = DEFAULT_TENANT,
    ) -> None:
        self.store: Store = store or open_store(database_url or DEFAULT_DATABASE_URL)
        self.clock: Clock = clock or SystemClock()
        self.workflows = WorkflowRegistry(workflows)
        self.lease_ttl = lease_ttl
        self.heartbeat_interval = heartbeat_interval
        self.poll_interval = poll_interval
        self.tenant = tenant
        self._wakeup = asyncio.Event()
        self._workers: list[Worker] = []

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        await self.store.open()
        self.store.subscribe(self._wakeup.set)

    async def close(self) -> None:
        for worker in list(self._workers):
            worker.stop()
        await self.store.close()

    async def __aenter__(self) -> Corral:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- workflows -----------------------------------------------------------------------------

    @overload
    def workflow(self, fn: WorkflowFunction[I, O], /) -> Workflow[I, O]: ...
    @overload
    def workflow(
        self, /, *, name: str | None = None, version: str = "1", timeout: float | None = None
    ) -> Callable[[WorkflowFunction[I, O]], Workflow[I, O]]: ...
    def workflow(
        self,
        fn: WorkflowFunction[Any, Any] | None = None,
        /,
        *,
        name: str | None = None,
        version: str = "1",
        timeout: float | None = None,
    ) -> Workflow[Any, Any] | Callable[[WorkflowFunction[Any, Any]], Workflow[Any, Any]]:
        """Decorate an `async def fn(ctx, input)` to make it a workflow of this instance
        (`timeout`: seconds from a run's creation to its deadline)."""

        def decorate(inner: WorkflowFunction[Any, Any]) -> Workflow[Any, Any]:
            wf = workflow(name=name, version=version, timeout=timeout)(inner)
            self.workflows.add(wf)
            return wf

        return decorate(fn) if fn is not None else decorate

    def register(self, *runnables: Runnable) -> None:
        """Make workflows (and agents, with the agents they delegate to) known by name here:
        a worker can only execute runs of workflows it knows."""
        for runnable in runnables:
            self.workflows.add_all(runnable)

    # -- runs ----------------------------------------------------------------------------------

    @overload
    async def start(
        self,
        workflow: Workflow[I, O],
        input: Any = None,
        *,
        idempotency_key: str | None = None,
        started_by: str | None = None,
    ) -> RunHandle[O]: ...
    @overload
    async def start(
        self,
        workflow: str | ProvidesWorkflows,
        input: Any = None,
        *,
        idempotency_key: str | None = None,
        started_by: str | None = None,
    ) -> RunHandle[Any]: ...
    async def start(
        self,
        workflow: str | Workflow[I, O] | ProvidesWorkflows,
        input: Any = None,
        *,
        idempotency_key: str | None = None,
        started_by: str | None = None,
    ) -> RunHandle[Any]:
        """Start a run; with an idempotency key already used, return the run it started.

        `started_by` records who started it (a principal's name): its child runs carry it too,
        and cost reports attribute the run's model calls to it (`corral costs --by user`).
        """
        wf = self.workflows.resolve(workflow)
        new = NewRun(
            run_id=str(uuid.uuid4()),
            workflow=wf.name,
            workflow_version=wf.version,
            input=wf.encode_input(input),
            created_at=self.clock.now(),
            tenant=self.tenant,
            idempotency_key=idempotency_key,
            started_by=started_by,
        )
        record, created = await self.store.create_run(new)
        if created:
            self._wakeup.set()
        return RunHandle(self, record.run_id, wf, created=created)

    def handle(self, run_id: str) -> RunHandle[Any]:
        """A handle on an existing run (its workflow resolved when its result is decoded)."""
        return RunHandle(self, run_id, None, created=False)

    async def get_run(self, run_id: str) -> RunRecord:
        run = await self.store.get_run(run_id)
        if run is None:
            raise RunNotFound(f"no run {run_id!r} in {self.store.url}", run_id=run_id)
        return run

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow: str | None = None,
        parent_run_id: str | None = None,
        limit: int = 100,
    ) -> list[RunRecord]:
        """Runs, newest first, filtered by status, workflow name or parent run."""
        return await self.store.list_runs(
            status=status, workflow=workflow, parent_run_id=parent_run_id, limit=limit
        )

    async def journal(self, run_id: str) -> list[StepRecord]:
        await self.get_run(run_id)
        return await self.store.load_journal(run_id)

    async def signal(
        self,
        run_id: str,
        name: str,
        data: Any = None,
        *,
        guard: ScriptFactory[Any] | None = None,
    ) -> SignalRecord:
        """Send signal `name` with `data` (any JSON value) to a run that has not finished.

        `guard` is a transaction script (`corral.store.scripts`) run in the same transaction
        first; if it raises, no signal is sent and its error is raised.
        """
        payload = payloads.dump(data, None, where=f"signal {name!r}")
        record = await self.store.send_signal(
            run_id, name, payload, now=self.clock.now(), guard=guard
        )
        self._wakeup.set()
        return record

    async def cancel(self, run_id: str) -> RunRecord:
        """Cancel a run and its unfinished child runs. A worker executing it stops at once.

        A run with compensations to make (steps with `compensate=`) is sent a cancel instead:
        it wakes, makes them (newest first, journaled), then ends `cancelled`. A run busy on a
        worker sees it at its next wait; the returned record is then not yet `cancelled`.
        """
        run = await self.get_run(run_id)
        if run.status in ("pending", "running", "waiting") and any(
            record.detail and '"compensate"' in record.detail
            for record in await self.store.load_journal(run_id)
        ):
            await self.store.send_signal(run_id, CANCEL_SIGNAL, "null", now=self.clock.now())
            self._wakeup.set()
            return await self.get_run(run_id)
        record = await self.store.cancel_run(run_id, now=self.clock.now())
        for worker in self._workers:
            worker.drop(run_id)
        self._wakeup.set()
        return record

    async def reconcile(
        self,
        run_id: str,
        *,
        retry: bool = False,
        result: Any = None,
        failed: str | None = None,
    ) -> StepRecord:
        """Settle a run stopped in `needs_reconciliation` and let it resume.

        Its at-most-once step was in flight when a worker died. After checking the external
        system, say what happened: `retry=True` (it did not take effect: run it again, with the
        same idempotency key), `failed="why"` (count it as failed: the workflow sees
        `StepFailed`), or neither (it took effect and returned `result`, any JSON value).
        """
        if retry and failed is not None:
            raise UsageError("reconcile with retry=True or failed=..., not both")
        outcome: ReconcileOutcome = (
            "retry" if retry else "failed" if failed is not None else "succeeded"
        )
        error = (
            None
            if failed is None
            else json.dumps(
                {"code": "reconciled", "type": "Reconciled", "message": failed},
            )
        )
        stored = None if outcome != "succeeded" else payloads.dump(result, None, where="result")
        step = await self.store.reconcile_run(
            run_id, outcome=outcome, result=stored, error=error, now=self.clock.now()
        )
        self._wakeup.set()
        return step

    # -- workers -------------------------------------------------------------------------------

    def worker(
        self,
        *,
        concurrency: int = 16,
        worker_id: str | None = None,
        poll_interval: float | None = None,
    ) -> Worker:
        worker = Worker(
            store=self.store,
            clock=self.clock,
            workflows=self.workflows,
            wakeup=self._wakeup,
            worker_id=worker_id,
            concurrency=concurrency,
            lease_ttl=self.lease_ttl,
            heartbeat_interval=self.heartbeat_interval,
            poll_interval=poll_interval if poll_interval is not None else self.poll_interval,
            on_new_run=self._wakeup.set,
        )
        self._workers.append(worker)
        return worker

    async def run_until_idle(self, *, concurrency: int = 16) -> WorkerStats:
        """Execute runs in this process until none is runnable now (waiting runs stay parked)."""
        worker = self.worker(concurrency=concurrency)
        try:
            return await worker.run(until_idle=True)
        finally:
            self._workers.remove(worker)


class RunHandle(Generic[O]):
    """A started run. `created` is False when an idempotency key returned an earlier run."""

    def __init__(
        self, corral: Corral, run_id: str, workflow: Workflow[Any, O] | None, *, created: bool
    ) -> None:
        self.corral = corral
        self.run_id = run_id
        self.workflow = workflow
        self.created = created

    def __repr__(self) -> str:
        return f"RunHandle(run_id={self.run_id!r})"

    async def get(self) -> RunRecord:
        return await self.corral.get_run(self.run_id)

    async def status(self) -> RunStatus:
        return (await self.get()).status

    async def wait_for_result(self, *, timeout: float | None = None, poll: float = 0.05) -> O:
        """Wait until the run finishes; its output, or RunFailed if it did not succeed."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            run = await self.get()
            if run.finished or run.status == "needs_reconciliation":
                break
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(f"run {self.run_id} is still {run.status} after {timeout}s")
            await asyncio.sleep(poll)
        if run.status == "succeeded":
            wf = self.workflow or self.corral.workflows.resolve(run.workflow)
            return wf.decode_output(run.result)
        error = json.loads(run.error or "{}")
        raise RunFailed(
            f"run {self.run_id} {run.status}: {error.get('type')}: {error.get('message')}",
            run_id=self.run_id,
            status=run.status,
            error_code=error.get("code"),
        )
