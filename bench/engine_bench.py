"""Engine benchmarks on SQLite: per-step overhead, group commit, pause and resume, paused runs."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from corral import Corral, RunContext


async def noop() -> None:
    """The step body of every benchmark: all that is measured is the durable machinery."""


STEP_TIMINGS: list[float] = []
"""Seconds per step inside each run: from before its first step to after its last."""


async def twenty_steps(ctx: RunContext, steps: int) -> int:
    started = time.perf_counter()  # not journaled: a measurement, not workflow logic
    for _ in range(steps):
        await ctx.step(noop)
    if steps:
        STEP_TIMINGS.append((time.perf_counter() - started) / steps)
    return steps


async def wait_then_step(ctx: RunContext, _: None) -> None:
    await ctx.wait_for_signal("go")
    await ctx.step(noop)


async def park(ctx: RunContext, _: None) -> None:
    await ctx.wait_for_signal("never")


@dataclass
class Row:
    name: str
    value: float
    unit: str
    note: str = ""


def fresh_url(folder: Path, name: str, synchronous: str) -> str:
    return f"sqlite:///{folder / name}.db?synchronous={synchronous}"


def raw_sqlite_per_step(folder: Path, synchronous: str, steps: int) -> float:
    """Microseconds per journal row with raw sqlite3: one insert and one commit each, WAL."""
    conn = sqlite3.connect(folder / f"raw-{synchronous}.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(
        "CREATE TABLE steps (run_id TEXT, seq INTEGER, kind TEXT, name TEXT, status TEXT,"
        " result TEXT, started_at REAL, finished_at REAL, PRIMARY KEY (run_id, seq))"
    )
    started = time.perf_counter()
    for seq in range(steps):
        now = time.time()
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO steps VALUES (?, ?, 'step', 'noop', 'succeeded', 'null', ?, ?)",
            ("run", seq, now, now),
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed / steps * 1e6


async def durable_per_step(url: str, *, runs: int, steps: int) -> tuple[float, float]:
    """(µs per step, µs per whole run of `steps` steps), runs executed one after another.

    The per-step figure is timed inside the workflow, from before its first step to after its
    last; the per-run figure from `start` to the worker going idle (claim, journal load, steps,
    outcome, and the worker's check that nothing else is runnable).
    """
    corral = Corral(url)
    wf = corral.workflow(twenty_steps)
    whole: list[float] = []
    async with corral:
        await corral.start(wf, steps)  # warm up: imports, caches, the schema
        await corral.run_until_idle(concurrency=1)
        STEP_TIMINGS.clear()
        for _ in range(runs):
            started = time.perf_counter()
            await corral.start(wf, steps)
            await corral.run_until_idle(concurrency=1)
            whole.append(time.perf_counter() - started)
    per_step = _median(STEP_TIMINGS)
    STEP_TIMINGS.clear()
    return per_step * 1e6, _median(whole) * 1e6


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


async def _wait_finished(corral: Corral, run_id: str) -> None:
    # Poll the store directly and tightly: the benchmark measures the engine, not the poller.
    while True:
        run = await corral.store.get_run(run_id)
        if run is not None and run.finished:
            return
        await asyncio.sleep(0)


async def concurrent_steps_per_second(url: str, *, runs: int, steps: int) -> tuple[float, float]:
    """(steps per second, runs' steps per commit) with `runs` runs executing at once."""
    corral = Corral(url)
    wf = corral.workflow(twenty_steps)
    async with corral:
        handles = [await corral.start(wf, steps) for _ in range(runs)]
        before = corral.store.group_commit_stats  # type: ignore[attr-defined]
        started = time.perf_counter()
        await corral.run_until_idle(concurrency=runs)
        elapsed = time.perf_counter() - started
        after = corral.store.group_commit_stats  # type: ignore[attr-defined]
        for handle in handles:
            assert await handle.status() == "succeeded"
    batches = after[0] - before[0]
    operations = after[1] - before[1]
    return runs * steps / elapsed, operations / max(batches, 1)


async def pause_resume_latency(url: str, *, samples: int) -> float:
    """Median ms from `signal()` to the woken run's next step being committed (one process)."""
    corral = Corral(url, poll_interval=0.5)
    wf = corral.workflow(wait_then_step)
    latencies: list[float] = []
    async with corral:
        worker = corral.worker(concurrency=4)
        task = asyncio.create_task(worker.run())
        for _ in range(samples):
            handle = await corral.start(wf, None)
            while (await handle.status()) != "waiting":  # noqa: ASYNC110 - polling is measured
                await asyncio.sleep(0.001)
            started = time.perf_counter()
            await corral.signal(handle.run_id, "go", None)
            await _wait_finished(corral, handle.run_id)
            latencies.append(time.perf_counter() - started)
        worker.stop()
        await task
    latencies.sort()
    return latencies[len(latencies) // 2] * 1e3


async def park_runs(url: str, count: int) -> float:
    """Create `count` runs and execute each until it waits on a signal; seconds taken."""
    corral = Corral(url)
    wf = corral.workflow(park)
    started = time.perf_counter()
    async with corral:
        batch = 1000
        for offset in range(0, count, batch):
            await asyncio.gather(
                *(corral.start(wf, None) for _ in range(min(batch, count - offset)))
            )
        await corral.run_until_idle(concurrency=64)
        counts = await corral.store.count_runs()
        assert counts["waiting"] == count, counts
    return time.perf_counter() - started


WORKER_RSS = """
import asyncio, resource, sys
from corral import Corral
async def main():
    corral = Corral(sys.argv[1], poll_interval=0.01)
    async with corral:
        worker = corral.worker(concurrency=16)
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(2.0)  # about 200 polls of the store
        worker.stop()
        await task
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
asyncio.run(main())
"""


def worker_peak_rss_kib(url: str) -> int:
    """Peak RSS of a worker process polling `url` for two seconds."""
    out = subprocess.run(
        [sys.executable, "-c", WORKER_RSS, url], check=True, capture_output=True, text=True
    )
    return int(out.stdout.strip().splitlines()[-1])


def database_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def run_all(*, quick: bool) -> list[Row]:
    rows: list[Row] = []
    steps = 20
    paused = 10_000 if quick else 100_000
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        folder = Path(tmp)
        for sync in ("NORMAL", "FULL"):
            raw = raw_sqlite_per_step(folder, sync, 2000 if quick else 5000)
            per_step, per_run = await durable_per_step(
                fresh_url(folder, f"seq-{sync}", sync), runs=20 if quick else 60, steps=steps
            )
            rows.append(Row(f"raw sqlite3 insert+commit ({sync})", raw, "µs/step"))
            rows.append(
                Row(
                    f"durable step, 1 run of {steps} ({sync})",
                    per_step,
                    "µs/step",
                    f"{per_step / raw:.2f}× raw; a whole {steps}-step run: {per_run:.0f} µs",
                )
            )
            rate, per_commit = await concurrent_steps_per_second(
                fresh_url(folder, f"conc-{sync}", sync), runs=32, steps=50 if quick else 200
            )
            rows.append(
                Row(
                    f"32 concurrent runs ({sync})",
                    rate,
                    "steps/s",
                    f"{rate / (1e6 / raw):.2f}× raw; {per_commit:.1f} writes per commit",
                )
            )
        latency = await pause_resume_latency(fresh_url(folder, "latency", "NORMAL"), samples=50)
        rows.append(Row("pause → signal → resumed step", latency, "ms", "median, one process"))
        parked_path = folder / "parked.db"
        seconds = await park_runs(fresh_url(folder, "parked", "NORMAL"), paused)
        rows.append(Row(f"park {paused:,} runs (start + run to a wait)", seconds, "s"))
        rows.append(
            Row(
                f"{paused:,} paused runs on disk",
                database_bytes(parked_path) / paused,
                "bytes/run",
                f"{database_bytes(parked_path) / 2**20:.1f} MiB in all",
            )
        )
        # A worker's memory does not depend on how many runs are parked.
        empty_url = fresh_url(folder, "empty", "NORMAL")
        async with Corral(empty_url):
            pass  # creates the schema
        idle = worker_peak_rss_kib(empty_url)
        loaded = worker_peak_rss_kib(fresh_url(folder, "parked", "NORMAL"))
        rows.append(Row("worker peak RSS, 0 paused runs", idle / 1024, "MiB"))
        rows.append(
            Row(
                f"worker peak RSS, {paused:,} paused runs",
                loaded / 1024,
                "MiB",
                f"{(loaded - idle) / 1024:+.1f} MiB",
            )
        )
    return rows
