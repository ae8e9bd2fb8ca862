"""A late lease-renewal answer for an old epoch must not drop the run's new execution.

Found by the soak (runs stuck in `running` for ever under a live worker): a worker's heartbeat
snapshots its leases `(run_id, epoch)`, and while the renewal is in flight the run suspends (its
lease is released) and the same worker claims it again with a new epoch. The renewal then reports
the *old* lease lost, and `Worker._heartbeat` drops the run by id alone: it cancels the new
execution. That task has not started yet, so `Worker._execute` never runs its `finally` and the
run's entry stays in `Worker._active` for ever; the heartbeat renews that lease every interval,
so no other worker can take the run over either. The run is lost while the worker lives.

The race is made deterministic here by holding the renewal's answer (the real SQLite store,
subclassed only to delay one answer) until the worker has claimed the run again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

from corral import Corral, RunContext, workflow
from corral.store import RunRecord, SQLiteStore
from corral.testing import FakeClock

from .harness import sqlite_url


class Gates:
    """Made afresh by each test, in its own event loop."""

    entered: asyncio.Event
    release: asyncio.Event


async def blocked() -> int:
    Gates.entered.set()
    await Gates.release.wait()
    return 1


async def one() -> int:
    return 1


@workflow
async def parent(ctx: RunContext, _: None) -> int:
    first: int = await ctx.step(blocked)
    await ctx.wait_for_signal("go")
    second: int = await ctx.step(one)
    return first + second


class HeldRenewal(SQLiteStore):
    """The real store, with one lease renewal answered only after the run is claimed again."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.hold = False
        self.renewing = asyncio.Event()
        self.suspended = asyncio.Event()
        self.reclaimed = asyncio.Event()
        self.finished = asyncio.Event()

    async def renew_leases(
        self, leases: Sequence[tuple[str, int]], *, now: float, lease_ttl: float
    ) -> list[str]:
        if not self.hold or not leases:
            return await super().renew_leases(leases, now=now, lease_ttl=lease_ttl)
        self.hold = False
        self.renewing.set()
        await self.suspended.wait()
        lost = await super().renew_leases(leases, now=now, lease_ttl=lease_ttl)
        await self.reclaimed.wait()
        return lost

    async def claim_runs(
        self, *, worker_id: str, limit: int, now: float, lease_ttl: float
    ) -> list[RunRecord]:
        runs = await super().claim_runs(
            worker_id=worker_id, limit=limit, now=now, lease_ttl=lease_ttl
        )
        if runs and self.suspended.is_set():
            self.reclaimed.set()
        return runs

    async def suspend_run(
        self, run_id: str, epoch: int, *, wake_at: float | None, seen_wake_seq: int, now: float
    ) -> None:
        await super().suspend_run(
            run_id, epoch, wake_at=wake_at, seen_wake_seq=seen_wake_seq, now=now
        )
        self.suspended.set()

    async def finish_run(self, run_id: str, epoch: int, **kwargs: object) -> None:
        await super().finish_run(run_id, epoch, **kwargs)  # type: ignore[arg-type]
        self.finished.set()


async def test_a_stale_renewal_does_not_strand_the_run_it_claimed_again(tmp_path: Path) -> None:
    Gates.entered, Gates.release = asyncio.Event(), asyncio.Event()
    clock = FakeClock()
    store = HeldRenewal(sqlite_url(tmp_path / "corral.db"))
    corral = Corral(
        store=store, clock=clock, workflows=[parent], lease_ttl=3.0, heartbeat_interval=1.0
    )
    async with corral:
        handle = await corral.start(parent, None)
        worker = corral.worker(concurrency=4)
        working = asyncio.create_task(worker.run())
        try:
            async with asyncio.timeout(10):
                await Gates.entered.wait()
                store.hold = True
                clock.advance(1.0)  # the heartbeat snapshots (run, epoch 1) and asks to renew
                await store.renewing.wait()
                Gates.release.set()  # the step ends; the run waits for its signal: suspended
                await store.suspended.wait()
                await corral.signal(handle.run_id, "go")  # claimed again, with epoch 2
                await store.reclaimed.wait()
            # However the engine handles the stale answer, the run must finish: a lease that is
            # not renewed expires within 3 s of virtual time.
            for _ in range(20):
                if store.finished.is_set():
                    break
                clock.advance(1.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(store.finished.wait(), 0.05)
            run = await corral.get_run(handle.run_id)
            executing = [t for t in asyncio.all_tasks() if t.get_name() == f"run {run.run_id}"]
            assert run.status == "succeeded", (
                f"run is {run.status} after 20 s of virtual time; the worker holds "
                f"{worker.active_runs} and renews their leases, but executes {executing}"
            )
        finally:
            worker.stop()
            await asyncio.wait_for(working, 10)
