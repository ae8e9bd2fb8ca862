"""Chaos on PostgreSQL: workers killed with SIGKILL and the database itself crashed, twice or more.

DBOS's chaos suite, on real processes (RELIABILITY.md): a throwaway PostgreSQL server of our own
(`pg_server`), four worker processes, runs of random shapes (the soak's: 3-10 operations,
fan-outs, children, timers, signals). Every few seconds one worker gets SIGKILL and a fresh one
takes its place; at least twice PostgreSQL is stopped with `pg_ctl -m immediate` (no shutdown
checkpoint: the next start replays its WAL, as after a crash) and started again on the same port.
While it is down, the workers must say that the database is unreachable, and so must the CLI
(exit code 3); after it is back they must reconnect by themselves and carry on. Once the fleet
has drained, the soak's checker counts lost runs, duplicated effects, effects of no run and
overlapping executions of one run: all must be zero. The effect ledger is a SQLite file, apart
from the database that crashes, as a real tool's would be.

Replay a failure with the printed seed: `CORRAL_CHAOS_SEED=<seed>`. Sizes: `CORRAL_CHAOS_RUNS`
(default 300), `CORRAL_CHAOS_RESTARTS` (default 2); `CORRAL_SOAK=1` makes both larger.

Also here: how long a run held by a SIGKILLed worker takes to resume in another worker.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from corral import Corral
from corral.errors import StoreUnavailable

from . import pg_server
from .conftest import new_database, new_fleet
from .databases import PostgresDatabase
from .durable_shapes import (
    WORKFLOWS,
    Op,
    count_runs,
    durable_shape,
    random_shape,
    root_signals,
    signal_payload,
)
from .harness import Fleet, WorkerProcess, drain, stop_cleanly, wrong_results

T = TypeVar("T")

BIG = bool(os.environ.get("CORRAL_SOAK"))
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(2400 if BIG else 420),
    pytest.mark.skipif(pg_server.available() is not None, reason=str(pg_server.available())),
]
RUNS = int(os.environ.get("CORRAL_CHAOS_RUNS", 1500 if BIG else 300))
RESTARTS = int(os.environ.get("CORRAL_CHAOS_RESTARTS", 6 if BIG else 2))
WORKERS = 4
CONCURRENCY = 8
LEASE_TTL = 2.0
HEARTBEAT = 0.5
TOOL_DELAY = (0.01, 0.1)
KILL_GAP = (1.5, 3.5)
"""Seconds between two SIGKILLs: "every few seconds"."""
CHAOS_SECONDS = 20.0 * (RESTARTS + 1)
DOWN_FOR = 2.0
"""Seconds PostgreSQL stays down at each crash: long enough for every worker to notice."""
WARM_UP = 1.0
DRAIN_TIMEOUT = 120.0 + RUNS * 0.2
STALL = 20.0
CORRAL_CLI = Path(sys.executable).parent / "corral"


def seed_from_env() -> int:
    text = os.environ.get("CORRAL_CHAOS_SEED")
    return int(text) if text else random.SystemRandom().randrange(2**32)


async def retrying(call: Callable[[], Awaitable[T]], *, timeout: float = 60.0) -> T:
    """What a client does while the database restarts: try again until it answers. Only for
    calls that are safe to repeat (a start with an idempotency key, a read)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def log_size(worker: WorkerProcess) -> int:
    worker.log_file.flush()
    return worker.log.stat().st_size


def log_since(worker: WorkerProcess, offset: int) -> str:
    worker.log_file.flush()
    with worker.log.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


class Chaos:
    """Keeps `WORKERS` processes up, kills and replaces them, and crashes PostgreSQL."""

    def __init__(self, fleet: Fleet, server: pg_server.PgServer, rng: random.Random) -> None:
        self.fleet = fleet
        self.server = server
        self.rng = rng
        self.workers: list[WorkerProcess] = [fleet.spawn() for _ in range(WORKERS)]
        self.kills = 0
        self.outages: list[Outage] = []

    def check_alive(self) -> None:
        """No worker may die by itself: not of a kill, not of the database going away."""
        for worker in self.workers:
            code = worker.proc.poll()
            assert code is None, (
                f"worker {worker.pid} exited with {code} on its own; its log:\n{worker.tail()}"
            )

    async def kill_one(self) -> None:
        self.check_alive()
        warm = [w for w in self.workers if await w.serving_for() >= WARM_UP]
        if warm:
            victim = self.rng.choice(warm)
            self.fleet.kill(victim)
            self.workers[self.workers.index(victim)] = self.fleet.spawn()
            self.kills += 1

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """A worker still starting would find no database and exit: crash only a ready fleet."""
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            while not await worker.ready():
                self.check_alive()
                assert time.monotonic() < deadline, f"worker not ready:\n{worker.tail()}"
                await asyncio.sleep(0.05)

    async def crash_database(self) -> Outage:
        """Stop PostgreSQL at once; while it is down, ask the CLI; start it again."""
        await self.wait_ready()
        self.check_alive()
        outage = Outage({w.pid: (w, log_size(w)) for w in self.workers})
        self.server.stop("immediate")
        outage.down_at = time.monotonic()
        outage.cli = await asyncio.to_thread(
            subprocess.run,
            [str(CORRAL_CLI), "--database-url", self.fleet.url, "runs", "list"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        await asyncio.sleep(max(0.0, outage.down_at + DOWN_FOR - time.monotonic()))
        # What every worker said while the database was away (read before it comes back).
        outage.said = {pid: log_since(w, offset) for pid, (w, offset) in outage.workers.items()}
        self.server.start()
        outage.up_at = time.monotonic()
        outage.up_wall = time.time()
        self.server.restarts += 1
        self.outages.append(outage)
        return outage


class Outage:
    """One crash of PostgreSQL, and what the workers and the CLI said during it."""

    def __init__(self, workers: dict[int, tuple[WorkerProcess, int]]) -> None:
        self.workers = workers
        self.down_at = 0.0
        self.up_at = 0.0
        self.up_wall = 0.0
        self.cli: subprocess.CompletedProcess[str] | None = None
        self.said: dict[int, str] = {}


@pytest.fixture
def chaos_server() -> Any:
    reason = pg_server.available()
    if reason is not None:
        pytest.skip(reason)
    with pg_server.throwaway_server() as server:
        yield server


async def test_chaos_on_postgresql_loses_and_duplicates_nothing(
    tmp_path: Path, chaos_server: pg_server.PgServer
) -> None:
    seed = seed_from_env()
    print(
        f"chaos: CORRAL_CHAOS_SEED={seed} CORRAL_CHAOS_RUNS={RUNS} CORRAL_CHAOS_RESTARTS={RESTARTS}"
    )
    server = chaos_server
    rng = random.Random(seed)
    shapes = [random_shape(rng) for _ in range(RUNS)]
    total_runs = sum(count_runs(ops) for ops in shapes)
    database = new_database("postgresql", tmp_path, server_url=server.url)
    fleet = new_fleet(
        tmp_path / "fleet",
        database=database,
        concurrency=CONCURRENCY,
        lease_ttl=LEASE_TTL,
        heartbeat=HEARTBEAT,
        poll=0.05,
        tool_delay=TOOL_DELAY,
        max_seconds=CHAOS_SECONDS + DRAIN_TIMEOUT + 600,
    )
    started: dict[str, list[Op]] = {}
    queue = list(enumerate(shapes))
    try:
        async with Corral(fleet.url, workflows=WORKFLOWS) as corral:

            async def submit(count: int) -> None:
                for _ in range(min(count, len(queue))):
                    index, ops = queue[0]
                    handle = await retrying(
                        functools.partial(
                            corral.start,
                            durable_shape,
                            {"ops": ops},
                            idempotency_key=f"chaos-{seed}-{index}",
                        )
                    )
                    queue.pop(0)
                    started[handle.run_id] = ops
                    for name in root_signals(ops):
                        # Not idempotent, but a repeated signal is never taken: harmless.
                        await retrying(
                            functools.partial(
                                corral.signal, handle.run_id, name, signal_payload(name)
                            )
                        )

            async def settled() -> bool:
                counts = await retrying(corral.store.count_runs)
                return counts["pending"] + counts["running"] + counts["waiting"] == 0

            chaos = Chaos(fleet, server, rng)
            began = time.monotonic()
            crash_at = [began + CHAOS_SECONDS * (k + 1) / (RESTARTS + 1) for k in range(RESTARTS)]
            await submit(RUNS // 5)
            while time.monotonic() - began < CHAOS_SECONDS:
                await asyncio.sleep(rng.uniform(*KILL_GAP))
                await submit(max(1, RUNS * 3 // 4 // int(CHAOS_SECONDS / 2.5)))
                if crash_at and time.monotonic() >= crash_at[0]:
                    crash_at.pop(0)
                    await chaos.crash_database()
                else:
                    await chaos.kill_one()
            while crash_at:  # the schedule is a floor: always at least RESTARTS crashes
                crash_at.pop(0)
                await chaos.crash_database()
            await submit(len(queue))
            chaos_seconds = time.monotonic() - began

            await drain(
                fleet,
                database,
                settled=settled,
                check_alive=chaos.check_alive,
                timeout=DRAIN_TIMEOUT,
                stall=STALL,
                seed=seed,
                detail=lambda: f"; server log:\n{server.log_tail()}",
            )
            drain_seconds = time.monotonic() - began - chaos_seconds
            await stop_cleanly(fleet, chaos.workers)
            wrong = await wrong_results(corral, started)

        report = fleet.check()
        resumed = resumed_after_outages(fleet, chaos.outages)
        summary = (
            f"seed={seed} roots={len(started)} kills={chaos.kills} "
            f"restarts={server.restarts} chaos={chaos_seconds:.1f}s drain={drain_seconds:.1f}s "
            f"wrong_results={len(wrong)} steps_after_each_restart={resumed}\n{report.summary()}"
        )
        print(summary)

        # While PostgreSQL was down, every worker and the CLI said so.
        for number, outage in enumerate(chaos.outages, 1):
            assert outage.cli is not None
            said = outage.cli.stdout + outage.cli.stderr
            message = f"restart {number}: `corral runs list` exited {outage.cli.returncode}: {said}"
            assert outage.cli.returncode == 3, message
            assert "unreachable" in said, message
            for pid, text in outage.said.items():
                assert "unreachable" in text, (
                    f"restart {number}: worker {pid} said nothing of the database being "
                    f"unreachable while it was down; it said:\n{text[-2000:]}"
                )
        log = server.log_text()
        assert server.restarts >= RESTARTS
        assert log.count("database system was not properly shut down") >= RESTARTS, (
            "PostgreSQL did not recover from a crash"
        )
        assert "deadlock detected" not in log, server.log_tail(60)
        # After each restart the workers that lived through it reconnected and went on working.
        for number, steps in enumerate(resumed, 1):
            assert steps > 0, f"no worker that lived through restart {number} worked after it"

        assert report.runs == total_runs, summary
        assert not wrong, f"{summary}\nwrong results: {wrong[:3]}"
        assert report.ok, summary
        assert report.interrupted_executions > 0, summary
        assert report.takeovers > 0, summary
    finally:
        fleet.close()


def resumed_after_outages(fleet: Fleet, outages: list[Outage]) -> list[int]:
    """For each outage, how many step bodies the workers that lived through it started after
    the database came back."""
    counts: list[int] = []
    conn = sqlite3.connect(fleet.ledger, timeout=30.0)
    try:
        for outage in outages:
            pids = list(outage.workers)
            marks = ", ".join("?" for _ in pids)
            counts.append(
                conn.execute(
                    f"SELECT count(*) FROM executions WHERE pid IN ({marks}) AND started_at >= ?",
                    (*pids, outage.up_wall),
                ).fetchone()[0]
            )
    finally:
        conn.close()
    return counts


# -- lease recovery time -----------------------------------------------------------------------

RECOVERY_TTL = 2.0
RECOVERY_HEARTBEAT = 0.5
RECOVERY_SAMPLES = 3
RECOVERY_SHAPE = [{"op": "step", "v": v} for v in range(12)]


async def test_lease_recovery_time_after_a_sigkill_on_postgresql(tmp_path: Path) -> None:
    """From a worker's SIGKILL to its run's next step body starting in another worker, with
    lease_ttl=2 s and a heartbeat every 0.5 s: reported, not asserted (the bound is the lease
    plus two heartbeats, 3 s)."""
    database = new_database("postgresql", tmp_path)
    assert isinstance(database, PostgresDatabase)
    fleet = new_fleet(
        tmp_path / "fleet",
        database=database,
        concurrency=4,
        lease_ttl=RECOVERY_TTL,
        heartbeat=RECOVERY_HEARTBEAT,
        poll=0.05,
        tool_delay=(0.2, 0.2),
        max_seconds=120,
    )

    def executors(run_id: str) -> list[tuple[int, float]]:
        conn = sqlite3.connect(fleet.ledger, timeout=30.0)
        try:
            rows = conn.execute(
                "SELECT pid, started_at FROM executions WHERE run_id = ? ORDER BY started_at",
                (run_id,),
            ).fetchall()
        finally:
            conn.close()
        return [(int(pid), float(at)) for pid, at in rows]

    samples: list[float] = []
    try:
        async with Corral(fleet.url, workflows=WORKFLOWS) as corral:
            workers = [fleet.spawn(), fleet.spawn()]
            for _ in range(RECOVERY_SAMPLES):
                for worker in workers:
                    while not await worker.ready():
                        assert worker.proc.poll() is None, worker.tail()
                        await asyncio.sleep(0.05)
                run_id = (await corral.start(durable_shape, {"ops": RECOVERY_SHAPE})).run_id
                deadline = time.monotonic() + 30
                while len(executors(run_id)) < 2:  # well into its steps, mid-heartbeat
                    assert time.monotonic() < deadline, "the run never started"
                    await asyncio.sleep(0.01)
                await asyncio.sleep(random.uniform(0.0, RECOVERY_HEARTBEAT))
                holder_pid = executors(run_id)[-1][0]
                holder = next(w for w in workers if w.pid == holder_pid)
                fleet.kill(holder)
                assert holder.died_at is not None
                workers[workers.index(holder)] = fleet.spawn()
                while not [at for pid, at in executors(run_id) if pid != holder_pid]:
                    assert time.monotonic() < deadline + 30, "the run was never resumed"
                    await asyncio.sleep(0.01)
                resumed_at = min(at for pid, at in executors(run_id) if pid != holder_pid)
                samples.append(resumed_at - holder.died_at)
                run = await corral.get_run(run_id)
                while run.status != "succeeded":
                    assert time.monotonic() < deadline + 60, run
                    await asyncio.sleep(0.05)
                    run = await corral.get_run(run_id)
            for worker in workers:
                assert await fleet.terminate(worker) == 0, worker.tail()
    finally:
        fleet.close()
        database.drop()
    bound = RECOVERY_TTL + 2 * RECOVERY_HEARTBEAT
    print(
        f"lease recovery on PostgreSQL (ttl {RECOVERY_TTL}s, heartbeat {RECOVERY_HEARTBEAT}s): "
        f"min {min(samples):.2f}s median {statistics.median(samples):.2f}s "
        f"max {max(samples):.2f}s (bound {bound:.1f}s) samples {[round(s, 2) for s in samples]}"
    )
