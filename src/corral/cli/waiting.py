"""`corral run --wait`: execute a run with a worker embedded in this process until it settles.

Settled means: the run finished (succeeded, failed, cancelled, needs reconciliation); or it is
parked — waiting on a timer or a signal with nothing else runnable, so this process could only sit
there; or `--timeout` passed; or the user pressed Ctrl-C. With a timeout the worker keeps running
through timers and signals (sent from another shell) until the deadline.

The embedded worker is an ordinary worker: while it waits it may also execute other runnable
runs of the same database. When it stops, runs in flight stop at their next step and are handed
back for any worker to continue.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

from corral import Corral
from corral.cli.session import on_stop_signals
from corral.store import RunRecord

Settled = Literal["finished", "parked", "timeout", "interrupted"]

WATCH_INTERVAL = 0.05
"""How often the run's status is read while the worker executes it (seconds)."""
WORKER_POLL_INTERVAL = 0.25
"""How often the embedded worker looks for work made runnable by other processes (signals)."""


@dataclass(frozen=True, slots=True)
class WaitOutcome:
    run: RunRecord
    settled: Settled


def is_settled_status(run: RunRecord) -> bool:
    return run.finished or run.status == "needs_reconciliation"


async def execute_until_settled(
    corral: Corral, run_id: str, *, timeout: float | None, concurrency: int = 16
) -> WaitOutcome:
    """Run a worker until run `run_id` settles; return how, with the run as it is then."""
    run = await corral.get_run(run_id)
    if is_settled_status(run):  # an earlier run returned for an idempotency key
        return WaitOutcome(run, "finished")
    loop = asyncio.get_running_loop()
    worker = corral.worker(concurrency=concurrency, poll_interval=WORKER_POLL_INTERVAL)
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        worker.stop()

    deadline = None if timeout is None else loop.time() + timeout
    # Without a deadline, the worker itself ends once nothing is runnable: the run is parked.
    task = asyncio.create_task(worker.run(until_idle=deadline is None), name="corral run --wait")
    with on_stop_signals(interrupt):
        try:
            settled = await _watch(corral, run_id, task, deadline)
        except BaseException:
            worker.stop()
            await asyncio.gather(task, return_exceptions=True)
            raise
        worker.stop()
        await task  # a store failure inside the worker is reported, not swallowed
    run = await corral.get_run(run_id)
    if is_settled_status(run):
        settled = "finished"  # it finished while the worker wound down
    elif interrupted:
        settled = "interrupted"
    return WaitOutcome(run, settled)


async def _watch(
    corral: Corral, run_id: str, worker_task: asyncio.Task[Any], deadline: float | None
) -> Settled:
    loop = asyncio.get_running_loop()
    while True:
        run = await corral.get_run(run_id)
        if is_settled_status(run):
            return "finished"
        if worker_task.done():
            return "parked"
        wait = WATCH_INTERVAL
        if deadline is not None:
            left = deadline - loop.time()
            if left <= 0:
                return "timeout"
            wait = min(wait, left)
        await asyncio.wait({worker_task}, timeout=wait)
